// Dead-letter webhook deliveries (GET /v1/deliveries/dead) and sending one again (admin).

import { seg } from './api.js';
import { fill, h, table } from './dom.js';
import { formatShortTime } from './format.js';
import { can, whyNot } from './roles.js';

export function createDeliveriesPanel(app, root) {
  const listEl = h('div', { id: 'dead-list' });
  const note = h('p', { class: 'muted' });
  fill(
    root,
    h('div', { class: 'panel-head' }, h('h3', {}, 'Dead-letter deliveries'), h('button', { type: 'button', onclick: () => refresh() }, 'Refresh')),
    note,
    listEl,
  );

  async function redeliver(id) {
    try {
      await app.api.post(`/v1/deliveries/${seg(id)}:redeliver`);
      app.toast(`delivery ${id} sent again`);
      refresh();
    } catch (err) {
      app.toast(`redeliver ${id} failed: ${err.message}`, true);
    }
  }

  async function refresh() {
    const allowed = can(app.session.role, 'redeliver');
    note.textContent = allowed ? 'Deliveries that gave up after their retries; send one again once its endpoint is fixed.' : `Redelivery ${whyNot(app.session.role, 'redeliver')}.`;
    try {
      const doc = await app.api.get('/v1/deliveries/dead?limit=200');
      fill(
        listEl,
        doc.items.length === 0
          ? h('p', { class: 'muted', text: 'no dead deliveries' })
          : table(
              ['id', 'webhook', 'alert', 'attempts', 'last error', 'since', ''],
              doc.items.map((d) => [
                String(d.delivery_id),
                d.hook_id,
                h('a', { href: '#', onclick: (e) => { e.preventDefault(); app.openAlert(d.alert_id); } }, d.alert_type),
                String(d.attempts),
                [d.last_status ? `HTTP ${d.last_status} ` : '', d.last_error ?? ''].join(''),
                formatShortTime(d.created_at),
                h('button', { class: 'redeliver', type: 'button', dataset: { deliveryId: d.delivery_id }, disabled: !allowed, title: whyNot(app.session.role, 'redeliver') || null, onclick: () => redeliver(d.delivery_id) }, 'Redeliver'),
              ]),
              { id: 'dead-table' },
            ),
      );
    } catch (err) {
      fill(listEl, h('p', { class: 'error', text: `dead deliveries: ${err.message}` }));
    }
  }

  return { refresh };
}
