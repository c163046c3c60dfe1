// The alert queue and the case of the chosen alert: filters, the list (live alerts join
// it as they come), and the case workflow (acknowledge, assign, note, resolve, reopen)
// with its notes history, who and when.

import { ApiError, seg } from './api.js';
import { facts, fill, h, select } from './dom.js';
import { formatTime, shortJson } from './format.js';
import { ALERT_TYPES, DEFAULT_FILTERS, SEVERITIES, STATES, alertQueries, caseState, mergeAlerts } from './queue.js';
import { can, whyNot } from './roles.js';

const REFRESH_MS = 15_000; // cases changed by other operators show up within this

export function createAlertsPanel(app, root) {
  let filters = { ...DEFAULT_FILTERS };
  let list = [];
  let chosen = null; // the chosen alert, with its case notes
  let loading = null;
  const listEl = h('ol', { id: 'alert-list', class: 'alert-list' });
  const countEl = h('span', { id: 'alert-count', class: 'muted' });
  const caseEl = h('section', { id: 'case', class: 'case' });
  const errorEl = h('p', { class: 'error', role: 'alert' });

  const field = (name, control) => h('label', {}, name, control);
  const typeSel = select({ id: 'filter-type' }, [['', 'any type'], ...ALERT_TYPES], '');
  const sevSel = select({ id: 'filter-severity' }, [['', 'any severity'], ...SEVERITIES], '');
  const stateSel = select({ id: 'filter-state' }, STATES, filters.state);
  const sortSel = select({ id: 'filter-sort' }, [['severity', 'most severe first'], ['ts', 'newest first']], filters.sort);
  const loanIn = h('input', { id: 'filter-loan', placeholder: 'loan id', size: 10 });
  const fenceIn = h('input', { id: 'filter-fence', placeholder: 'fence id', size: 10 });
  const apply = () => {
    filters = {
      type: typeSel.value,
      severity: sevSel.value,
      state: stateSel.value,
      sort: sortSel.value,
      loan_id: loanIn.value.trim(),
      fence_id: fenceIn.value.trim(),
    };
    refresh();
  };
  for (const el of [typeSel, sevSel, stateSel, sortSel]) el.addEventListener('change', apply);
  for (const el of [loanIn, fenceIn]) el.addEventListener('change', apply);
  const form = h(
    'form',
    { class: 'filters', onsubmit: (e) => { e.preventDefault(); apply(); } },
    field('type', typeSel),
    field('severity', sevSel),
    field('state', stateSel),
    field('order', sortSel),
    field('loan', loanIn),
    field('fence', fenceIn),
  );
  fill(root, form, h('div', { class: 'queue-head' }, countEl, errorEl), listEl, caseEl);

  async function refresh() {
    const asked = { ...filters };
    const run = Promise.all(alertQueries(asked).map((q) => app.api.get(`/v1/alerts?${q}`)));
    loading = run;
    try {
      const pages = await run;
      if (loading !== run) return; // a newer query won
      list = mergeAlerts([], pages.flatMap((p) => p.items), asked);
      fill(errorEl);
      renderList();
    } catch (err) {
      fill(errorEl, `alerts: ${err.message}`);
    }
  }

  function renderList() {
    countEl.textContent = `${list.length} alert${list.length === 1 ? '' : 's'}`;
    fill(
      listEl,
      list.map((a) => {
        const state = caseState(a);
        const assignee = a.case?.assignee;
        return h(
          'li',
          {
            class: `alert-row sev-${a.severity} is-${state}${chosen?.id === a.id ? ' chosen' : ''}`,
            dataset: { alertId: a.id, state, type: a.type },
            tabindex: 0,
            onclick: () => choose(a.id),
            onkeydown: (e) => e.key === 'Enter' && choose(a.id),
          },
          h('span', { class: `badge sev-${a.severity}`, text: a.severity }),
          h('span', { class: 'type', text: a.type }),
          h('span', { class: 'who', text: [a.loan_id, a.device_id].filter(Boolean).join(' · ') }),
          h('span', { class: 'when', text: formatTime(a.ts) }),
          h('span', { class: `state state-${state}`, text: assignee ? `${state} → ${assignee}` : state }),
        );
      }),
    );
  }

  async function choose(id) {
    try {
      chosen = await app.api.get(`/v1/alerts/${seg(id)}`);
      renderList();
      renderCase();
      if (Number.isFinite(chosen.lat) && Number.isFinite(chosen.lon)) app.map.show(chosen.lat, chosen.lon, 14);
    } catch (err) {
      fill(caseEl, h('p', { class: 'error', text: `alert ${id}: ${err.message}` }));
    }
  }

  async function act(action, body) {
    const id = chosen.id;
    try {
      const updated = await app.api.post(`/v1/alerts/${seg(id)}/${action}`, body);
      chosen = updated;
      list = mergeAlerts(list, [updated], filters);
      renderList();
      renderCase();
      app.toast(`${action === 'notes' ? 'note added' : `${action} done`}: ${updated.type}`);
    } catch (err) {
      const why = err instanceof ApiError && err.status === 403 ? 'refused (403)' : 'failed';
      renderCase(`${action} ${why}: ${err.message}`);
    }
  }

  function renderCase(error = '') {
    if (chosen === null) {
      fill(caseEl);
      return;
    }
    const a = chosen;
    const c = a.case ?? {};
    const state = caseState(a);
    const allowed = can(app.session.role, 'case');
    const why = whyNot(app.session.role, 'case');
    const noteText = h('textarea', { id: 'case-note-text', rows: 2, placeholder: 'note (kept with who and when)', maxlength: 4000, disabled: !allowed });
    const takeNote = () => {
      const text = noteText.value.trim();
      noteText.value = '';
      return text ? { note: text } : undefined;
    };
    const button = (id, label, onclick, enabled = true) =>
      h('button', { id, type: 'button', disabled: !allowed || !enabled, title: why || null, onclick }, label);
    const assigneeIn = h('input', {
      id: 'case-assignee',
      list: 'operator-names',
      placeholder: 'operator name',
      value: c.assignee ?? '',
      size: 12,
      disabled: !allowed,
    });
    const link = (text, onclick) => h('a', { href: '#', onclick: (e) => { e.preventDefault(); onclick(); } }, text);
    fill(
      caseEl,
      h('h3', {}, h('span', { class: `badge sev-${a.severity}`, text: a.severity }), ' ', a.type),
      facts([
        ['alert', h('code', { text: a.id })],
        ['event time', formatTime(a.ts)],
        ['detected', formatTime(a.detected_at)],
        ['car', a.device_id ? link(a.device_id, () => app.openCar(a.device_id)) : '—'],
        ['loan', a.loan_id ? link(a.loan_id, () => app.openLoan(a.loan_id)) : '—'],
        ['fence', a.fence_id ?? '—'],
        ['details', a.details && Object.keys(a.details).length ? shortJson(a.details, 300) : '—'],
      ]),
      h('h4', {}, 'Case'),
      facts([
        ['state', h('span', { id: 'case-state', class: `state state-${state}`, text: state })],
        ['assignee', h('span', { id: 'case-assignee-shown', text: c.assignee ?? '—' })],
        ['acknowledged', h('span', { id: 'case-acked', text: c.acknowledged_by ? `${c.acknowledged_by}, ${formatTime(c.acknowledged_at)}` : '—' })],
        ['resolved', h('span', { id: 'case-resolved', text: c.resolved_by ? `${c.resolved_by}, ${formatTime(c.resolved_at)}` : '—' })],
      ]),
      h(
        'div',
        { class: 'actions' },
        button('case-ack', 'Acknowledge', () => act('ack', takeNote()), state === 'open'),
        button('case-resolve', 'Resolve', () => act('resolve', takeNote()), state !== 'resolved'),
        button('case-reopen', 'Reopen', () => act('reopen', takeNote()), state !== 'open'),
      ),
      h(
        'div',
        { class: 'actions' },
        assigneeIn,
        button('case-assign', 'Assign', () => act('assign', { assignee: assigneeIn.value.trim() || null })),
        button('case-assign-me', 'Assign to me', () => act('assign', { assignee: app.session.name }), app.session.kind === 'operator'),
      ),
      h('div', { class: 'actions' }, noteText, button('case-add-note', 'Add note', () => {
        const text = noteText.value.trim();
        if (text) act('notes', { text }).then(() => { noteText.value = ''; });
      })),
      error ? h('p', { id: 'case-error', class: 'error', role: 'alert', text: error }) : null,
      h('h4', {}, 'Notes'),
      h(
        'ul',
        { id: 'case-notes', class: 'notes' },
        (c.notes ?? []).length === 0
          ? h('li', { class: 'muted', text: 'no notes' })
          : c.notes.map((n) => h('li', {}, h('span', { class: 'muted', text: `${n.by}, ${formatTime(n.at)}: ` }), n.text)),
      ),
    );
  }

  setInterval(() => {
    if (root.offsetParent !== null) refresh();
  }, REFRESH_MS);

  return {
    refresh,
    /** A live alert from the stream joins the queue if the filters keep it. */
    add(alert) {
      const before = list.length;
      list = mergeAlerts(list, [alert], filters);
      if (list.length !== before || list.some((a) => a.id === alert.id)) renderList();
    },
    choose,
    /** The queue as shown (copies), for tests. */
    items: () => list.map((a) => ({ ...a })),
  };
}
