import assert from 'node:assert/strict';
import { test } from 'node:test';

import { applyCars, applySnapshot, createLiveState, createRate, validCar } from '../src/live_state.js';

const car = (id, lat, lon, ts, extra = {}) => ({
  device_id: id,
  lat,
  lon,
  ts_ms: ts,
  speed_kmh: null,
  loan_id: null,
  ...extra,
});

test('a snapshot replaces every car and reports who changed', () => {
  const state = createLiveState();
  applySnapshot(state, { now_ms: 10, cars: [car('a', 1, 2, 5), car('b', 3, 4, 5)] });
  const changed = applySnapshot(state, { now_ms: 20, cars: [car('b', 3.5, 4, 6), car('c', 0, 0, 6)] });
  assert.deepEqual([...state.cars.keys()].sort(), ['b', 'c']);
  assert.deepEqual([...changed].sort(), ['a', 'b', 'c']); // 'a' is gone: redraw it too
  assert.equal(state.nowMs, 20);
  assert.equal(state.snapshots, 2);
  assert.equal(state.carUpdates, 0);
});

test('deltas upsert, count, and never move a car back in time', () => {
  const state = createLiveState();
  applySnapshot(state, { now_ms: 0, cars: [car('a', 1, 2, 100)] });
  let changed = applyCars(state, { now_ms: 1, cars: [car('a', 1.1, 2, 200), car('n', 5, 5, 150, { loan_id: 'L-1' })] });
  assert.deepEqual([...changed].sort(), ['a', 'n']);
  assert.equal(state.cars.get('a').lat, 1.1);
  assert.equal(state.cars.get('n').loan_id, 'L-1');
  changed = applyCars(state, { now_ms: 2, cars: [car('a', 9, 9, 150)] }); // late
  assert.equal(changed.size, 0);
  assert.equal(state.cars.get('a').lat, 1.1);
  assert.equal(state.rejected, 1);
  changed = applyCars(state, { now_ms: 3, cars: [car('a', 1.2, 2, 200, { speed_kmh: 30 })] }); // same ts: newer news
  assert.equal(state.cars.get('a').speed_kmh, 30);
  assert.equal(state.carUpdates, 3);
  assert.equal(state.carEvents, 3);
});

test('malformed cars are counted and skipped, their siblings kept', () => {
  const state = createLiveState();
  const bad = [
    null,
    { device_id: 'x', lat: 'a', lon: 1, ts_ms: 1 },
    car('y', 91, 0, 1),
    car('z', 0, 181, 1),
    car('w', NaN, 0, 1),
    { lat: 1, lon: 1, ts_ms: 1 },
    car('t', 1, 1, undefined),
  ];
  applyCars(state, { cars: [...bad, car('ok', 1, 1, 1)] });
  assert.deepEqual([...state.cars.keys()], ['ok']);
  assert.equal(state.rejected, bad.length);
  assert.equal(validCar(car('ok', -90, -180, 0)), true);
});

test('the update rate is per second over the window', () => {
  const rate = createRate(10_000);
  assert.equal(rate.perSecond(0), 0);
  for (let t = 0; t < 20_000; t += 1000) rate.add(1000, t);
  assert.equal(rate.perSecond(19_000), 1000); // ten marks in the last 10 s
  assert.equal(rate.perSecond(25_000), 400); // the marks of 16 to 19 s are left
  assert.equal(rate.perSecond(40_000), 0);
  const early = createRate(10_000);
  early.add(300, 0);
  early.add(300, 2000);
  assert.equal(early.perSecond(3000), 200); // 600 over the 3 s since the first
});
