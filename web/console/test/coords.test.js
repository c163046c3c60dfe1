// The port of geofence/coords.py against the reference pairs of tests/test_coords.py.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { convertGeometry, drawer, gcj02ToWgs84, inChina, wgs84ToGcj02 } from '../src/coords.js';

const offBy = (got, want) => Math.max(Math.abs(got[0] - want[0]), Math.abs(got[1] - want[1]));

// googollee/eviltransform test suites: [wgs_lat, wgs_lon, gcj_lat, gcj_lon].
const EVILTRANSFORM = [
  [31.1774276, 121.5272106, 31.17530398364597, 121.531541859215], // Shanghai
  [22.543847, 113.912316, 22.540796131694766, 113.9171764808363], // Shenzhen
  [39.911954, 116.377817, 39.91334545536069, 116.38404722455657], // Beijing
];
// wandergis/coordtransform README, near Tiananmen.
const TIANANMEN = [39.915, 116.404];
const CT_WGS84_TO_GCJ02 = [39.91640428150164, 116.41024449916938];
// AMap Web Service coordinate/convert documentation example (AMap's own server).
const AMAP_GPS_TO_GCJ02 = [
  [[39.990475, 116.481499], [39.991754014757, 116.487585177952]],
  [[39.990375, 116.481499], [39.991653917101, 116.487585177952]],
];

test('eviltransform reference pairs, both ways, to float precision', () => {
  for (const [wLat, wLon, gLat, gLon] of EVILTRANSFORM) {
    assert.ok(offBy(wgs84ToGcj02(wLat, wLon), [gLat, gLon]) < 1e-12, `${wLat},${wLon}`);
    assert.ok(offBy(gcj02ToWgs84(gLat, gLon), [wLat, wLon]) < 1e-12, `${gLat},${gLon}`);
  }
});

test('coordtransform README: Tiananmen', () => {
  assert.ok(offBy(wgs84ToGcj02(...TIANANMEN), CT_WGS84_TO_GCJ02) < 1e-12);
  assert.ok(offBy(wgs84ToGcj02(...gcj02ToWgs84(...TIANANMEN)), TIANANMEN) < 1e-12);
});

test("AMap's own converter agrees to 4e-7 degrees", () => {
  for (const [wgs, gcj] of AMAP_GPS_TO_GCJ02) {
    assert.ok(offBy(wgs84ToGcj02(...wgs), gcj) < 1e-6);
  }
});

test('the offset is hundreds of metres inside China and nothing outside the box', () => {
  const [lat, lon] = wgs84ToGcj02(31.2304, 121.4737);
  assert.ok(Math.abs(lat - 31.2304) > 1e-3 || Math.abs(lon - 121.4737) > 1e-3);
  assert.deepEqual(wgs84ToGcj02(48.8566, 2.3522), [48.8566, 2.3522]); // Paris
  assert.deepEqual(wgs84ToGcj02(0.5, 100.0), [0.5, 100.0]); // south of the box
  assert.equal(inChina(55.8271, 137.8347), true); // the box is inclusive
  assert.equal(inChina(55.8272, 137.8347), false);
});

test('round trips inside China on a grid', () => {
  for (let lat = 1; lat < 55; lat += 3.7) {
    for (let lon = 73; lon < 137; lon += 4.1) {
      assert.ok(offBy(gcj02ToWgs84(...wgs84ToGcj02(lat, lon)), [lat, lon]) < 1e-9);
    }
  }
});

test('drawer: gcj02 converts, anything else is the identity', () => {
  assert.deepEqual(drawer('gcj02')(...TIANANMEN), wgs84ToGcj02(...TIANANMEN));
  assert.deepEqual(drawer('wgs84')(...TIANANMEN), TIANANMEN);
  assert.deepEqual(drawer(undefined)(...TIANANMEN), TIANANMEN);
});

test('convertGeometry takes every [lon, lat] position of a geometry through the drawer', () => {
  const ring = [
    [121.47, 31.23],
    [121.48, 31.23],
    [121.48, 31.24],
    [121.47, 31.23],
  ];
  const toGcj = drawer('gcj02');
  const polygon = convertGeometry({ type: 'Polygon', coordinates: [ring] }, toGcj);
  assert.equal(polygon.coordinates[0].length, 4);
  for (let i = 0; i < ring.length; i += 1) {
    const [lat, lon] = wgs84ToGcj02(ring[i][1], ring[i][0]);
    assert.deepEqual(polygon.coordinates[0][i], [lon, lat]);
  }
  const multi = convertGeometry({ type: 'MultiPolygon', coordinates: [[ring], [ring]] }, toGcj);
  assert.deepEqual(multi.coordinates[1], polygon.coordinates);
  const point = convertGeometry({ type: 'Point', coordinates: [121.47, 31.23] }, toGcj);
  assert.deepEqual(point.coordinates, polygon.coordinates[0][0]);
  assert.deepEqual(ring[0], [121.47, 31.23]); // the input is not changed
});
