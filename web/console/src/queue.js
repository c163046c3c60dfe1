// The alert queue: which alerts a filter keeps, in what order, and how a live alert or a
// changed case joins the list. Pure: no DOM, no fetch.
//
// An alert is an item of GET /v1/alerts (DESIGN §4 plus `ack` and `case`). The order is
// the server's: `severity` puts the most severe first, then the newest (event time);
// `ts` the newest first. Ties go by id, descending, so the order is total.

export const ALERT_TYPES = [
  'zone.left',
  'pledge.risk_site_dwell',
  'pledge.vin_conflict',
  'pledge.tracker_separation',
  'tow.suspected',
  'tamper',
  'power.disconnected',
  'gps.impossible_travel',
  'shock',
  'device.offline',
  'device.online',
  'device.clock_skew',
  'zone.returned',
  'geofence.enter',
  'geofence.exit',
  'risk.tier_changed',
];
export const SEVERITIES = ['critical', 'warning', 'info'];
export const SEVERITY_RANK = { info: 0, warning: 1, critical: 2 };
// `unresolved` is the console's own: open and acknowledged together (two server queries).
export const STATES = ['unresolved', 'open', 'acknowledged', 'resolved', 'all'];
export const SORTS = ['severity', 'ts'];
export const DEFAULT_FILTERS = Object.freeze({
  type: '',
  severity: '',
  loan_id: '',
  fence_id: '',
  state: 'unresolved',
  sort: 'severity',
});

/** The case state of an alert: its case's, or what its acknowledgement says. */
export function caseState(alert) {
  if (alert.case && typeof alert.case.state === 'string') return alert.case.state;
  return alert.ack ? 'acknowledged' : 'open';
}

export function severityRank(alert) {
  return SEVERITY_RANK[alert.severity] ?? 0;
}

function tsMs(alert) {
  const ms = Date.parse(alert.ts);
  return Number.isNaN(ms) ? 0 : ms;
}

/** Whether `alert` passes `filters` (empty fields filter nothing). */
export function matches(alert, filters) {
  if (filters.type && alert.type !== filters.type) return false;
  if (filters.severity && alert.severity !== filters.severity) return false;
  if (filters.loan_id && alert.loan_id !== filters.loan_id) return false;
  if (filters.fence_id && alert.fence_id !== filters.fence_id) return false;
  const state = caseState(alert);
  if (filters.state === 'unresolved') return state !== 'resolved';
  if (filters.state && filters.state !== 'all' && state !== filters.state) return false;
  return true;
}

/** A comparator of alerts for `sort` (`severity` or `ts`). */
export function comparator(sort) {
  const byTime = (a, b) => tsMs(b) - tsMs(a) || (a.id < b.id ? 1 : a.id > b.id ? -1 : 0);
  if (sort === 'ts') return byTime;
  return (a, b) => severityRank(b) - severityRank(a) || byTime(a, b);
}

/** The queue after `incoming` alerts (new, or changed: the same id replaces) join `list`:
 * filtered, ordered, at most `limit`. `list` is not changed. */
export function mergeAlerts(list, incoming, filters, limit = 500) {
  const byId = new Map(list.map((a) => [a.id, a]));
  for (const alert of incoming) byId.set(alert.id, alert);
  return [...byId.values()]
    .filter((a) => matches(a, filters))
    .sort(comparator(filters.sort))
    .slice(0, limit);
}

/** The GET /v1/alerts query strings for `filters`: one, or two for `unresolved`. */
export function alertQueries(filters, limit = 200) {
  const base = new URLSearchParams();
  for (const key of ['type', 'severity', 'loan_id', 'fence_id']) {
    if (filters[key]) base.set(key, filters[key]);
  }
  base.set('sort', filters.sort === 'ts' ? 'ts' : 'severity');
  base.set('limit', String(limit));
  const states =
    filters.state === 'unresolved'
      ? ['open', 'acknowledged']
      : filters.state && filters.state !== 'all'
        ? [filters.state]
        : [null];
  return states.map((state) => {
    const q = new URLSearchParams(base);
    if (state) q.set('state', state);
    return q.toString();
  });
}
