import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
  DEFAULT_FILTERS,
  alertQueries,
  caseState,
  comparator,
  matches,
  mergeAlerts,
} from '../src/queue.js';

const at = (minute) => new Date(Date.UTC(2026, 10, 29, 8, minute)).toISOString();
const alert = (id, type, severity, minute, extra = {}) => ({
  id,
  type,
  severity,
  ts: at(minute),
  loan_id: 'L-1',
  device_id: 'trk-1',
  fence_id: null,
  ack: null,
  ...extra,
});
const ids = (list) => list.map((a) => a.id);

const A = alert('a', 'shock', 'warning', 1);
const B = alert('b', 'zone.left', 'critical', 2, { fence_id: 'home' });
const C = alert('c', 'geofence.exit', 'info', 3, { fence_id: 'home' });
const D = alert('d', 'tamper', 'critical', 0, { loan_id: 'L-2', case: { state: 'resolved' } });
const E = alert('e', 'zone.left', 'critical', 2, { ack: { at: at(3), by: 'ann' } });

test('severity order: most severe first, then newest, then id', () => {
  const sorted = [A, B, C, D, E].sort(comparator('severity'));
  assert.deepEqual(ids(sorted), ['e', 'b', 'd', 'a', 'c']);
});

test('time order: newest first', () => {
  assert.deepEqual(ids([A, B, C, D, E].sort(comparator('ts'))), ['c', 'e', 'b', 'a', 'd']);
});

test('case state comes from the case, else from the acknowledgement', () => {
  assert.equal(caseState(A), 'open');
  assert.equal(caseState(D), 'resolved');
  assert.equal(caseState(E), 'acknowledged');
  assert.equal(caseState({ ...E, case: { state: 'open' } }), 'open'); // reopened
});

test('filters by type, severity, loan, fence and state', () => {
  const all = [A, B, C, D, E];
  const keep = (f) => ids(all.filter((x) => matches(x, { ...DEFAULT_FILTERS, ...f })));
  assert.deepEqual(keep({}), ['a', 'b', 'c', 'e']); // unresolved by default
  assert.deepEqual(keep({ state: 'all' }), ['a', 'b', 'c', 'd', 'e']);
  assert.deepEqual(keep({ state: 'resolved' }), ['d']);
  assert.deepEqual(keep({ state: 'acknowledged' }), ['e']);
  assert.deepEqual(keep({ state: 'open', type: 'zone.left' }), ['b']);
  assert.deepEqual(keep({ severity: 'critical', state: 'all' }), ['b', 'd', 'e']);
  assert.deepEqual(keep({ loan_id: 'L-2', state: 'all' }), ['d']);
  assert.deepEqual(keep({ fence_id: 'home' }), ['b', 'c']);
});

test('merging: a live alert joins in order, a changed case replaces, a filtered one leaves', () => {
  const filters = { ...DEFAULT_FILTERS, state: 'open' };
  let queue = mergeAlerts([], [A, C], filters);
  assert.deepEqual(ids(queue), ['a', 'c']);
  queue = mergeAlerts(queue, [B], filters);
  assert.deepEqual(ids(queue), ['b', 'a', 'c']);
  const acked = { ...B, case: { state: 'acknowledged', acknowledged_by: 'ann' } };
  const after = mergeAlerts(queue, [acked], filters);
  assert.deepEqual(ids(after), ['a', 'c']);
  assert.deepEqual(ids(queue), ['b', 'a', 'c']); // the input list is left alone
  const everything = mergeAlerts(queue, [acked], { ...filters, state: 'all' });
  assert.equal(everything[0].case.acknowledged_by, 'ann');
  assert.equal(everything.length, 3);
  assert.equal(mergeAlerts(queue, [D, E], { ...filters, state: 'all' }, 2).length, 2);
});

test('the server queries of a filter', () => {
  const [one] = alertQueries({ ...DEFAULT_FILTERS, state: 'open', type: 'shock', loan_id: 'L 1' }, 50);
  assert.equal(one, 'type=shock&loan_id=L+1&sort=severity&limit=50&state=open');
  const two = alertQueries(DEFAULT_FILTERS);
  assert.deepEqual(
    two.map((q) => new URLSearchParams(q).get('state')),
    ['open', 'acknowledged'],
  );
  const [all] = alertQueries({ ...DEFAULT_FILTERS, state: 'all', sort: 'ts' });
  assert.equal(new URLSearchParams(all).has('state'), false);
  assert.equal(new URLSearchParams(all).get('sort'), 'ts');
});
