// Formatting and small arithmetic of the console's panels. Pure: no DOM; the clock and the
// time zone come in as arguments where they matter.

const pad = (n, w = 2) => String(n).padStart(w, '0');

/** An ISO-8601 time or epoch ms as `YYYY-MM-DD HH:MM:SS` in the browser's zone ('—' if none). */
export function formatTime(value) {
  if (value === null || value === undefined || value === '') return '—';
  const ms = typeof value === 'number' ? value : Date.parse(value);
  if (Number.isNaN(ms)) return String(value);
  const d = new Date(ms);
  return (
    `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`
  );
}

/** A time as `MM-DD HH:MM:SS` (for tables) in the browser's zone ('—' if none). */
export function formatShortTime(value) {
  const full = formatTime(value);
  return /^\d{4}-/.test(full) ? full.slice(5) : full;
}

/** A duration in seconds, short: `45 s`, `12 min`, `3.5 h`, `2.0 d` ('—' if none). */
export function formatDuration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return '—';
  const s = Math.abs(seconds);
  if (s < 90) return `${Math.round(seconds)} s`;
  if (s < 90 * 60) return `${Math.round(seconds / 60)} min`;
  if (s < 36 * 3600) return `${(seconds / 3600).toFixed(1)} h`;
  return `${(seconds / 86400).toFixed(1)} d`;
}

/** How long before `nowMs` the time `value` was, e.g. `3 min ago`. */
export function formatAgo(value, nowMs) {
  const ms = typeof value === 'number' ? value : Date.parse(value);
  if (value === null || value === undefined || Number.isNaN(ms)) return '—';
  return `${formatDuration((nowMs - ms) / 1000)} ago`;
}

export function formatNumber(value, digits = 0) {
  if (value === null || value === undefined || !Number.isFinite(value)) return '—';
  return value.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits });
}

export function formatPercent(ratio) {
  if (ratio === null || ratio === undefined || !Number.isFinite(ratio)) return '—';
  return `${(ratio * 100).toFixed(1)} %`;
}

export const PERIODS = { '1h': 3600_000, '6h': 6 * 3600_000, '24h': 86_400_000, '7d': 7 * 86_400_000 };

/** `[since, until)` in epoch ms of a named period ending at `nowMs`. */
export function periodFor(name, nowMs) {
  const length = PERIODS[name] ?? PERIODS['24h'];
  return { sinceMs: nowMs - length, untilMs: nowMs };
}

/** Epoch ms as the value of an `<input type=datetime-local>` (the browser's zone). */
export function toLocalInput(ms) {
  const d = new Date(ms);
  return (
    `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}`
  );
}

/** The value of an `<input type=datetime-local>` as epoch ms, or null. */
export function fromLocalInput(text) {
  if (!text) return null;
  const ms = new Date(text).getTime();
  return Number.isNaN(ms) ? null : ms;
}

const EARTH_RADIUS_M = 6_371_008.8;

/** Great-circle distance in metres (haversine, mean Earth radius). */
export function haversineM(lat1, lon1, lat2, lon2) {
  const rad = Math.PI / 180;
  const dLat = (lat2 - lat1) * rad;
  const dLon = (lon2 - lon1) * rad;
  const a =
    Math.sin(dLat / 2) ** 2 + Math.cos(lat1 * rad) * Math.cos(lat2 * rad) * Math.sin(dLon / 2) ** 2;
  return 2 * EARTH_RADIUS_M * Math.asin(Math.min(1, Math.sqrt(a)));
}

/** A track's summary: points, length in metres, top speed in km/h, first and last time. */
export function trackSummary(items) {
  let lengthM = 0;
  let topKmh = null;
  for (let i = 0; i < items.length; i += 1) {
    const p = items[i];
    if (i > 0) lengthM += haversineM(items[i - 1].lat, items[i - 1].lon, p.lat, p.lon);
    if (Number.isFinite(p.speed_kmh)) topKmh = topKmh === null ? p.speed_kmh : Math.max(topKmh, p.speed_kmh);
  }
  return {
    points: items.length,
    lengthM,
    topKmh,
    first: items.length ? items[0].ts : null,
    last: items.length ? items[items.length - 1].ts : null,
  };
}

/** The fences a car crossed, from its geofence.enter/exit alerts, oldest first:
 * [{fence_id, type, ts}]. */
export function crossings(alerts) {
  return alerts
    .filter((a) => a.type === 'geofence.enter' || a.type === 'geofence.exit')
    .map((a) => ({ fence_id: a.fence_id, type: a.type, ts: a.ts }))
    .sort((a, b) => Date.parse(a.ts) - Date.parse(b.ts));
}

/** A short text of a JSON value, at most `max` characters. */
export function shortJson(value, max = 160) {
  const text = JSON.stringify(value) ?? '';
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}
