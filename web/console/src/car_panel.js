// The car and loan page: what the engine knows of a tracker now, its track over a chosen
// period (drawn on the map), the fences it crossed, its alerts, the loan's trackers and
// their last status, and the loan's risk, reasons, learned places and price when the
// lending consumers run ("lending off" otherwise).

import { ApiError, seg } from './api.js';
import { facts, fill, h, select, table } from './dom.js';
import { PERIODS, crossings, formatAgo, formatNumber, formatPercent, formatShortTime, formatTime, fromLocalInput, periodFor, toLocalInput, trackSummary } from './format.js';

const iso = (ms) => new Date(ms).toISOString();

export function createCarPanel(app, root) {
  let deviceId = null;
  let loanId = null;
  const head = h('div', { id: 'car-head' });
  const trackEl = h('div', { id: 'car-track' });
  const alertsEl = h('div', { id: 'car-alerts' });
  const loanEl = h('div', { id: 'car-loan' });
  const periodSel = select({ id: 'track-period' }, [...Object.keys(PERIODS).map((k) => [k, `last ${k}`]), ['custom', 'custom']], '24h');
  const sinceIn = h('input', { id: 'track-since', type: 'datetime-local' });
  const untilIn = h('input', { id: 'track-until', type: 'datetime-local' });
  const setPeriodInputs = () => {
    if (periodSel.value === 'custom') return;
    const { sinceMs, untilMs } = periodFor(periodSel.value, Date.now());
    sinceIn.value = toLocalInput(sinceMs);
    untilIn.value = toLocalInput(untilMs + 60_000); // the input keeps minutes: round up
  };
  periodSel.addEventListener('change', setPeriodInputs);
  for (const el of [sinceIn, untilIn]) el.addEventListener('change', () => { periodSel.value = 'custom'; });
  const controls = h(
    'form',
    { class: 'track-controls', onsubmit: (e) => { e.preventDefault(); showTrack(); } },
    periodSel,
    h('label', {}, 'from', sinceIn),
    h('label', {}, 'to', untilIn),
    h('button', { id: 'track-show', type: 'submit' }, 'Show track'),
    h('button', { id: 'track-clear', type: 'button', onclick: () => { app.map.clearTrack(); fill(trackEl); } }, 'Clear'),
  );
  const body = h('div', { id: 'car-body', class: 'hidden' }, head, h('h4', {}, 'Track'), controls, trackEl, h('h4', {}, 'Alerts'), alertsEl, loanEl);
  fill(root, h('p', { id: 'car-empty', class: 'muted', text: 'Click a car on the map, or find a device or loan above.' }), body);

  const fail = (el, what, err) => fill(el, h('p', { class: 'error', text: `${what}: ${err.message}` }));

  async function open(id) {
    deviceId = id;
    root.querySelector('#car-empty')?.remove();
    body.classList.remove('hidden');
    fill(trackEl);
    app.map.clearTrack();
    setPeriodInputs();
    let device = null;
    try {
      device = await app.api.get(`/v1/devices/${seg(id)}`);
    } catch (err) {
      if (!(err instanceof ApiError && err.status === 404)) return fail(head, `device ${id}`, err);
    }
    const live = app.live.cars.get(id);
    if (device === null && live === undefined) {
      fill(head, h('p', { class: 'error', text: `There is no device or loan named ${id}.` }));
      fill(alertsEl);
      fill(loanEl);
      return undefined;
    }
    loanId = device?.loan_id ?? live?.loan_id ?? null;
    renderHead(id, device, live);
    loadAlerts();
    loadLoan();
    return undefined;
  }

  function renderHead(id, device, live) {
    const fix = device?.last_fix;
    const status = device?.last_status;
    fill(
      head,
      h('h3', {}, h('span', { id: 'car-device', text: id }), device ? h('span', { class: device.online ? 'pill ok' : 'pill bad', text: device.online ? 'online' : 'offline' }) : null),
      facts([
        ['loan', loanId ?? 'none'],
        ['VIN', device?.vin ?? '—'],
        ['last fix', fix ? `${formatTime(fix.ts)} (${formatAgo(fix.ts, Date.now())}) at ${fix.lat.toFixed(5)}, ${fix.lon.toFixed(5)}` : '—'],
        ['speed', live && live.speed_kmh !== null ? `${formatNumber(live.speed_kmh)} km/h` : '—'],
        ['last report', formatTime(device?.last_seen_at)],
        ['last status', status ? `${formatTime(status.ts)}: external power ${status.ext_power === false ? 'OFF' : status.ext_power ? 'on' : '?'}, tamper ${status.tamper ? 'YES' : 'no'}` : '—'],
        ['inside', device?.inside?.length ? device.inside.join(', ') : 'no fence'],
      ]),
      fix ? h('button', { type: 'button', onclick: () => app.map.show(fix.lat, fix.lon, 16) }, 'Show on map') : null,
    );
    app.map.select(id);
  }

  async function showTrack() {
    const id = deviceId;
    const sinceMs = fromLocalInput(sinceIn.value);
    const untilMs = fromLocalInput(untilIn.value);
    if (sinceMs === null || untilMs === null) return fill(trackEl, h('p', { class: 'error', text: 'choose a period' }));
    try {
      const q = new URLSearchParams({ since: iso(sinceMs), until: iso(untilMs), max_points: '2000' });
      const [track, alerts] = await Promise.all([
        app.api.get(`/v1/devices/${seg(id)}/track?${q}`),
        app.api.all(`/v1/alerts?device_id=${seg(id)}&since=${seg(iso(sinceMs))}&sort=ts&limit=1000`, 5),
      ]);
      if (id !== deviceId) return undefined;
      const summary = trackSummary(track.items);
      app.map.showTrack(track.items);
      const crossed = crossings(alerts.filter((a) => Date.parse(a.ts) < untilMs));
      fill(
        trackEl,
        facts([
          ['fixes stored', formatNumber(track.fixes)],
          ['points drawn', `${summary.points}${track.thinned ? ' (thinned, turning points kept)' : ''}`],
          ['length', `${formatNumber(summary.lengthM / 1000, 1)} km`],
          ['top speed', summary.topKmh === null ? '—' : `${formatNumber(summary.topKmh)} km/h`],
          ['from', formatTime(summary.first)],
          ['to', formatTime(summary.last)],
        ]),
        h('h5', {}, 'Fences crossed'),
        crossed.length === 0
          ? h('p', { class: 'muted', text: 'none in this period' })
          : table(['time', 'fence', ''], crossed.map((c) => [formatShortTime(c.ts), c.fence_id, c.type === 'geofence.enter' ? 'entered' : 'left']), { id: 'car-crossings' }),
      );
    } catch (err) {
      fail(trackEl, 'track', err);
    }
    return undefined;
  }

  async function loadAlerts() {
    const id = deviceId;
    try {
      const doc = await app.api.get(`/v1/alerts?device_id=${seg(id)}&sort=ts&limit=50`);
      if (id !== deviceId) return;
      fill(
        alertsEl,
        doc.items.length === 0
          ? h('p', { class: 'muted', text: 'no alerts' })
          : table(
              ['time', 'type', 'state'],
              doc.items.map((a) => [
                formatShortTime(a.ts),
                h('a', { href: '#', onclick: (e) => { e.preventDefault(); app.openAlert(a.id); } }, a.type),
                a.case?.state ?? (a.ack ? 'acknowledged' : 'open'),
              ]),
              { id: 'car-alert-table' },
            ),
      );
    } catch (err) {
      fail(alertsEl, 'alerts', err);
    }
  }

  async function loadLoan() {
    const id = loanId;
    if (id === null) return fill(loanEl, h('h4', {}, 'Loan'), h('p', { class: 'muted', text: 'this tracker is on no loan' }));
    try {
      const loan = await app.api.get(`/v1/loans/${seg(id)}`);
      const [trackers, places] = await Promise.all([
        Promise.all(loan.device_ids.map((d) => app.api.get(`/v1/devices/${seg(d)}`).catch(() => ({ device_id: d })))),
        app.api.get(`/v1/loans/${seg(id)}/places`).catch((err) => err),
      ]);
      if (id !== loanId) return undefined;
      fill(loanEl, h('h4', {}, `Loan ${id}`), loanFacts(loan), trackerTable(trackers), lendingView(loan, places));
    } catch (err) {
      fail(loanEl, `loan ${id}`, err);
    }
    return undefined;
  }

  const loanFacts = (loan) =>
    facts([
      ['status', loan.status],
      ['VIN', loan.vin],
      ['zones', (loan.zone_ids ?? []).join(', ') || '—'],
      ['vehicle', loan.vehicle ? [loan.vehicle.make, loan.vehicle.model, loan.vehicle.year].filter(Boolean).join(' ') : '—'],
      ['principal', loan.principal ?? '—'],
    ]);

  const trackerTable = (trackers) =>
    table(
      ['tracker', 'online', 'last fix', 'power', 'tamper'],
      trackers.map((t) => [
        h('a', { href: '#', onclick: (e) => { e.preventDefault(); open(t.device_id); } }, t.device_id),
        t.online === undefined ? '?' : t.online ? 'yes' : 'NO',
        formatShortTime(t.last_fix?.ts),
        t.last_status ? (t.last_status.ext_power === false ? 'OFF' : 'on') : '—',
        t.last_status ? (t.last_status.tamper ? 'YES' : 'no') : '—',
      ]),
      { id: 'loan-trackers' },
    );

  function lendingView(loan, places) {
    const off = places instanceof ApiError && (places.status === 503 || places.kind === 'lending-off');
    if (loan.risk === null || loan.risk === undefined || off) {
      return h('p', { id: 'lending', class: 'muted', text: 'Risk, places and price: lending off (the engine runs without the lending consumers).' });
    }
    const risk = loan.risk;
    return h(
      'div',
      { id: 'lending' },
      h('h5', {}, 'Risk'),
      facts([
        ['score', h('span', { class: `tier tier-${risk.tier}`, text: `${risk.score} (${risk.tier})` })],
        ['as of', formatTime(risk.as_of)],
        ['collateral', Number.isFinite(loan.collateral?.value) ? `${formatNumber(loan.collateral.value)} ${loan.collateral.currency ?? ''}, LTV ${formatPercent(loan.collateral.ltv)}` : '— (no vehicle value on the loan)'],
        ['price', loan.price ? `APR ${formatPercent(loan.price.apr)}, up to ${formatNumber(loan.price.max_principal)}` : '—'],
      ]),
      risk.reasons?.length
        ? table(['reason', 'points', 'evidence'], risk.reasons.map((r) => [r.code, formatNumber(r.points, 0), JSON.stringify(r.evidence ?? {})]), { id: 'risk-reasons' })
        : h('p', { class: 'muted', text: 'no reasons' }),
      h('h5', {}, 'Learned places'),
      places instanceof Error
        ? h('p', { class: 'error', text: places.message })
        : places.items.length === 0
          ? h('p', { class: 'muted', text: 'none learned yet' })
          : table(
              ['kind', 'where', 'nights/visits', 'last seen'],
              places.items.map((p) => [
                h('a', { href: '#', onclick: (e) => { e.preventDefault(); app.map.show(p.lat, p.lon, 15); } }, p.kind),
                `${p.lat.toFixed(4)}, ${p.lon.toFixed(4)} ±${formatNumber(p.radius_m)} m`,
                String(p.nights ?? p.visits ?? '—'),
                formatTime(p.last_seen),
              ]),
            ),
    );
  }

  return {
    open,
    async openLoan(id) {
      try {
        const loan = await app.api.get(`/v1/loans/${seg(id)}`);
        await open(loan.device_ids[0]);
        return true;
      } catch (err) {
        if (err instanceof ApiError && err.status === 404) return false;
        throw err;
      }
    },
  };
}
