// The audit log (GET /v1/audit, operator or admin): who did what to which target, newest
// first, filtered by actor and target, a page at a time.

import { fill, h, table } from './dom.js';
import { formatShortTime, shortJson } from './format.js';
import { can, whyNot } from './roles.js';

export function createAuditPanel(app, root) {
  const actorIn = h('input', { id: 'audit-actor', placeholder: 'actor', size: 10 });
  const targetIn = h('input', { id: 'audit-target', placeholder: 'target, e.g. alert:…', size: 18 });
  const out = h('div', { id: 'audit' });
  const more = h('button', { id: 'audit-more', type: 'button', class: 'hidden', onclick: () => load(true) }, 'More');
  let rows = [];
  let next = null;
  fill(
    root,
    h('form', { class: 'filters', onsubmit: (e) => { e.preventDefault(); load(false); } }, h('h3', {}, 'Audit log'), actorIn, targetIn, h('button', { type: 'submit' }, 'Search')),
    out,
    more,
  );

  async function load(append) {
    if (!can(app.session.role, 'audit')) {
      fill(out, h('p', { class: 'muted', text: `The audit log ${whyNot(app.session.role, 'audit')}.` }));
      return;
    }
    const q = new URLSearchParams({ limit: '100' });
    if (actorIn.value.trim()) q.set('actor', actorIn.value.trim());
    if (targetIn.value.trim()) q.set('target', targetIn.value.trim());
    if (append && next) q.set('cursor', next);
    try {
      const doc = await app.api.get(`/v1/audit?${q}`);
      rows = append ? [...rows, ...doc.items] : doc.items;
      next = doc.next;
      more.classList.toggle('hidden', !next);
      fill(
        out,
        table(
          ['when', 'who', 'action', 'target', 'detail'],
          rows.map((e) => [formatShortTime(e.at), `${e.actor}${e.actor_kind === 'operator' || e.actor_kind === e.actor ? '' : ` (${e.actor_kind})`}`, e.action, e.target, shortJson(e.detail, 120)]),
          { id: 'audit-table' },
        ),
      );
    } catch (err) {
      fill(out, h('p', { class: 'error', text: `audit: ${err.message}` }));
    }
  }

  return { refresh: () => load(false) };
}
