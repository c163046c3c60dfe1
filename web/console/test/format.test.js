import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
  crossings,
  formatAgo,
  formatDuration,
  formatPercent,
  formatShortTime,
  fromLocalInput,
  haversineM,
  periodFor,
  shortJson,
  toLocalInput,
  trackSummary,
} from '../src/format.js';

test('durations', () => {
  assert.equal(formatDuration(null), '—');
  assert.equal(formatDuration(45.4), '45 s');
  assert.equal(formatDuration(720), '12 min');
  assert.equal(formatDuration(3.5 * 3600), '3.5 h');
  assert.equal(formatDuration(2 * 86400), '2.0 d');
  assert.equal(formatAgo(1000, 61_000), '60 s ago');
  assert.equal(formatPercent(0.9876), '98.8 %');
  assert.equal(formatPercent(null), '—');
});

test('periods end now', () => {
  assert.deepEqual(periodFor('6h', 100_000_000), { sinceMs: 100_000_000 - 6 * 3600_000, untilMs: 100_000_000 });
  assert.equal(periodFor('nonsense', 86_400_000).sinceMs, 0); // a day by default
});

test('datetime-local inputs round trip to the minute', () => {
  const ms = Date.UTC(2026, 2, 2, 9, 40);
  assert.equal(fromLocalInput(toLocalInput(ms)), ms);
  assert.equal(fromLocalInput(''), null);
  assert.equal(fromLocalInput('garbage'), null);
});

test('haversine: a degree of latitude is ~111.2 km', () => {
  assert.ok(Math.abs(haversineM(0, 0, 1, 0) - 111_195) < 1);
  assert.equal(haversineM(31.2, 121.4, 31.2, 121.4), 0);
});

test('a track summary', () => {
  const items = [
    { ts: '2026-03-02T09:00:00Z', lat: 31.0, lon: 121.0, speed_kmh: 10 },
    { ts: '2026-03-02T09:01:00Z', lat: 31.01, lon: 121.0, speed_kmh: null },
    { ts: '2026-03-02T09:02:00Z', lat: 31.02, lon: 121.0, speed_kmh: 42 },
  ];
  const s = trackSummary(items);
  assert.equal(s.points, 3);
  assert.ok(Math.abs(s.lengthM - 2 * 1111.95) < 1);
  assert.equal(s.topKmh, 42);
  assert.equal(s.first, items[0].ts);
  assert.equal(s.last, items[2].ts);
  assert.deepEqual(trackSummary([]), { points: 0, lengthM: 0, topKmh: null, first: null, last: null });
});

test('crossings: enter and exit alerts, oldest first', () => {
  const alerts = [
    { type: 'geofence.enter', fence_id: 'b', ts: '2026-03-02T10:00:00Z' },
    { type: 'zone.left', fence_id: 'home', ts: '2026-03-02T09:30:00Z' },
    { type: 'geofence.exit', fence_id: 'home', ts: '2026-03-02T09:00:00Z' },
  ];
  assert.deepEqual(
    crossings(alerts).map((c) => `${c.type}:${c.fence_id}`),
    ['geofence.exit:home', 'geofence.enter:b'],
  );
});

test('short JSON', () => {
  assert.equal(shortJson({ a: 1 }), '{"a":1}');
  assert.equal(shortJson({ a: 'x'.repeat(50) }, 10).length, 10);
});

test('short times drop the year', () => {
  const ms = new Date(2026, 2, 2, 9, 40, 5).getTime();
  assert.equal(formatShortTime(ms), '03-02 09:40:05');
  assert.equal(formatShortTime(null), '—');
});
