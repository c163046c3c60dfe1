// The live cars, as the `/v1/live` stream tells them: a `snapshot` replaces them all, a
// `cars` event upserts the cars that changed. Pure: no DOM, no clock (times come in).
//
// A car is {device_id, lat, lon, ts_ms, speed_kmh, loan_id} in WGS84. A delta never moves a
// car back in time: a report older than the one held is ignored, as the engine keeps a
// late reading out of a device's state.

export function createLiveState() {
  return {
    cars: new Map(),
    nowMs: null, // the server's clock at its last event
    snapshots: 0,
    carEvents: 0,
    carUpdates: 0, // car positions applied, snapshots excluded
    rejected: 0, // malformed or stale entries ignored
  };
}

export function validCar(car) {
  return (
    car !== null &&
    typeof car === 'object' &&
    typeof car.device_id === 'string' &&
    Number.isFinite(car.lat) &&
    Number.isFinite(car.lon) &&
    car.lat >= -90 &&
    car.lat <= 90 &&
    car.lon >= -180 &&
    car.lon <= 180 &&
    Number.isFinite(car.ts_ms)
  );
}

function normalised(car) {
  return {
    device_id: car.device_id,
    lat: car.lat,
    lon: car.lon,
    ts_ms: car.ts_ms,
    speed_kmh: Number.isFinite(car.speed_kmh) ? car.speed_kmh : null,
    loan_id: typeof car.loan_id === 'string' ? car.loan_id : null,
  };
}

/** Replace every car with the snapshot's; the ids of all cars before and after. */
export function applySnapshot(state, msg) {
  const changed = new Set(state.cars.keys());
  state.cars.clear();
  for (const car of msg.cars ?? []) {
    if (!validCar(car)) {
      state.rejected += 1;
      continue;
    }
    state.cars.set(car.device_id, normalised(car));
    changed.add(car.device_id);
  }
  state.nowMs = Number.isFinite(msg.now_ms) ? msg.now_ms : state.nowMs;
  state.snapshots += 1;
  return changed;
}

/** Upsert the cars of a `cars` event; the ids that moved or changed. */
export function applyCars(state, msg) {
  const changed = new Set();
  for (const car of msg.cars ?? []) {
    if (!validCar(car)) {
      state.rejected += 1;
      continue;
    }
    const held = state.cars.get(car.device_id);
    if (held !== undefined && car.ts_ms < held.ts_ms) {
      state.rejected += 1;
      continue;
    }
    state.cars.set(car.device_id, normalised(car));
    state.carUpdates += 1;
    changed.add(car.device_id);
  }
  state.nowMs = Number.isFinite(msg.now_ms) ? msg.now_ms : state.nowMs;
  state.carEvents += 1;
  return changed;
}

/** A sliding-window rate: `add(n, atMs)` counts, `perSecond(atMs)` is the count of the
 * last `windowMs` per second (of less time until the first count is that old). */
export function createRate(windowMs = 10_000) {
  const marks = []; // [atMs, n], oldest first
  let total = 0;
  let startedMs = null;
  const expire = (atMs) => {
    while (marks.length > 0 && marks[0][0] <= atMs - windowMs) total -= marks.shift()[1];
  };
  return {
    add(n, atMs) {
      if (startedMs === null) startedMs = atMs;
      marks.push([atMs, n]);
      total += n;
      expire(atMs);
    },
    perSecond(atMs) {
      if (startedMs === null) return 0;
      expire(atMs);
      const span = Math.min(windowMs, Math.max(1000, atMs - startedMs));
      return (total * 1000) / span;
    },
  };
}
