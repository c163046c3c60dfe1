// Key numbers (GET /v1/kpis): alerts per hour by type, times to acknowledge and resolve,
// devices online, delivery success, rejected input by reason, loans per risk tier.

import { facts, fill, h, select, table } from './dom.js';
import { formatDuration, formatNumber, formatPercent, formatTime, periodFor } from './format.js';

export function createKpisPanel(app, root) {
  const periodSel = select({ id: 'kpi-period' }, [['24h', 'last 24 h'], ['7d', 'last 7 days']], '24h');
  const out = h('div', { id: 'kpis' });
  periodSel.addEventListener('change', () => refresh());
  fill(root, h('div', { class: 'panel-head' }, h('h3', {}, 'KPIs'), periodSel, h('button', { type: 'button', onclick: () => refresh() }, 'Refresh')), out);

  function hourBars(hours) {
    if (hours.length === 0) return h('p', { class: 'muted', text: 'no alerts in this period' });
    const top = Math.max(...hours.map((x) => x.total));
    return h(
      'div',
      { class: 'bars', id: 'kpi-bars' },
      hours.map((x) => {
        const bar = h('div', {
          class: 'bar',
          title: `${formatTime(x.hour)}: ${x.total} (${Object.entries(x.by_type).map(([t, n]) => `${t} ${n}`).join(', ')})`,
        });
        bar.style.height = `${Math.max(2, Math.round((60 * x.total) / top))}px`; // CSSOM, not an inline attribute
        return bar;
      }),
    );
  }

  async function refresh() {
    const { sinceMs, untilMs } = periodFor(periodSel.value, Date.now());
    try {
      const k = await app.api.get(`/v1/kpis?since=${sinceMs}&until=${untilMs}`);
      const byType = {};
      for (const x of k.alerts_per_hour) for (const [t, n] of Object.entries(x.by_type)) byType[t] = (byType[t] ?? 0) + n;
      const total = Object.values(byType).reduce((s, n) => s + n, 0);
      const times = (t) => `p50 ${formatDuration(t.p50)}, p90 ${formatDuration(t.p90)} (${t.count} cases)`;
      fill(
        out,
        h('h4', {}, `Alerts per hour (${total})`),
        hourBars(k.alerts_per_hour),
        table(['type', 'alerts'], Object.entries(byType).sort((a, b) => b[1] - a[1]).map(([t, n]) => [t, String(n)]), { id: 'kpi-types' }),
        h('h4', {}, 'Cases'),
        facts([
          ['open / acknowledged / resolved', `${k.cases.open} / ${k.cases.acknowledged} / ${k.cases.resolved}`],
          ['time to acknowledge', times(k.time_to_acknowledge_s)],
          ['time to resolve', times(k.time_to_resolve_s)],
        ]),
        h('h4', {}, 'Devices and delivery'),
        facts([
          ['devices online', `${formatNumber(k.devices.online)} of ${formatNumber(k.devices.known)}`],
          ['deliveries', `${k.deliveries.delivered} delivered, ${k.deliveries.pending} pending, ${k.deliveries.dead} dead`],
          ['delivery success', formatPercent(k.deliveries.success_rate)],
        ]),
        h('h4', {}, 'Rejected input'),
        Object.keys(k.rejected).length === 0
          ? h('p', { class: 'muted', text: 'none' })
          : table(['reason', 'count'], Object.entries(k.rejected).map(([r, n]) => [r, String(n)])),
        h('h4', {}, 'Loans per risk tier'),
        k.loans_per_tier === null
          ? h('p', { class: 'muted', text: 'lending off' })
          : table(['tier', 'loans'], Object.entries(k.loans_per_tier).map(([t, n]) => [t, String(n)]), { id: 'kpi-tiers' }),
      );
    } catch (err) {
      fill(out, h('p', { class: 'error', text: `KPIs: ${err.message}` }));
    }
  }

  return { refresh };
}
