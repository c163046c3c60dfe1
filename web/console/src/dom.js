// A tiny element builder: no innerHTML anywhere (the page's CSP allows no inline script or
// style, and text from the server is always set as text).

/** An element: `h('button', {class: 'x', onclick: f, disabled: true}, 'text', child)`.
 * Attributes: `class`, `text`, `on<event>` (listeners), `dataset` (object), booleans set
 * as properties, anything else as attributes; null and undefined are skipped. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === 'class') el.className = value;
    else if (key === 'text') el.textContent = String(value);
    else if (key === 'dataset') Object.assign(el.dataset, value);
    else if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), value);
    else if (value === true) el[key] = true;
    else if (key === 'value') el.value = value;
    else el.setAttribute(key, String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replace an element's children. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** A `<select>` of `options` (values, or [value, label] pairs) with `value` chosen. */
export function select(attrs, options, value) {
  const el = h(
    'select',
    attrs,
    options.map((o) => {
      const [v, label] = Array.isArray(o) ? o : [o, o];
      return h('option', { value: v, text: label });
    }),
  );
  el.value = value;
  return el;
}

/** A definition list of [label, value] rows (values may be nodes). */
export function facts(rows) {
  return h(
    'dl',
    { class: 'facts' },
    rows.filter(Boolean).map(([label, value]) => [h('dt', { text: label }), h('dd', {}, value ?? '—')]),
  );
}

/** A small table: `columns` are header labels, `rows` arrays of cells (text or nodes). */
export function table(columns, rows, attrs = {}) {
  return h(
    'table',
    { class: 'grid', ...attrs },
    h('thead', {}, h('tr', {}, columns.map((c) => h('th', { text: c })))),
    h('tbody', {}, rows.map((r) => h('tr', {}, r.map((cell) => h('td', {}, cell ?? '—'))))),
  );
}
