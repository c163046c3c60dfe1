// WGS84 -> GCJ-02, a port of geofence/coords.py (the published formula on the Krasovsky
// 1940 ellipsoid). Map tiles of AMap or Tencent are drawn in GCJ-02: every WGS84 coordinate
// the console draws over them (cars, fences, tracks) goes through `toDrawn`.
// Pure: no DOM, no clock. Every function takes and returns [lat, lon] in degrees.

export const KRASOVSKY_A = 6378245.0;
export const KRASOVSKY_EE = 0.00669342162296594323;
// (min_lat, min_lon, max_lat, max_lon), inclusive: where GCJ-02 differs from WGS84.
export const CHINA_BOX = [0.8293, 72.004, 55.8271, 137.8347];

const DEG = Math.PI / 180.0;
const LAT_SCALE = KRASOVSKY_A * (1.0 - KRASOVSKY_EE) * DEG;
const LON_SCALE = KRASOVSKY_A * DEG;
const INVERSE_TOL_DEG = 1e-11;
const INVERSE_MAX_STEPS = 12;

export function inChina(lat, lon) {
  return lat >= CHINA_BOX[0] && lat <= CHINA_BOX[2] && lon >= CHINA_BOX[1] && lon <= CHINA_BOX[3];
}

function gcjOffset(lat, lon) {
  const x = lon - 105.0;
  const y = lat - 35.0;
  const xPi = x * Math.PI;
  const yPi = y * Math.PI;
  const common = ((20.0 * Math.sin(6.0 * xPi) + 20.0 * Math.sin(2.0 * xPi)) * 2.0) / 3.0;
  let dlat = -100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * Math.sqrt(Math.abs(x));
  dlat += common + ((20.0 * Math.sin(yPi) + 40.0 * Math.sin(yPi / 3.0)) * 2.0) / 3.0;
  dlat += ((160.0 * Math.sin(yPi / 12.0) + 320.0 * Math.sin(yPi / 30.0)) * 2.0) / 3.0;
  let dlon = 300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * Math.sqrt(Math.abs(x));
  dlon += common + ((20.0 * Math.sin(xPi) + 40.0 * Math.sin(xPi / 3.0)) * 2.0) / 3.0;
  dlon += ((150.0 * Math.sin(xPi / 12.0) + 300.0 * Math.sin(xPi / 30.0)) * 2.0) / 3.0;
  const radLat = lat * DEG;
  const sinLat = Math.sin(radLat);
  const magic = 1.0 - KRASOVSKY_EE * sinLat * sinLat;
  const sqrtMagic = Math.sqrt(magic);
  return [
    (dlat * (magic * sqrtMagic)) / LAT_SCALE,
    (dlon * sqrtMagic) / (LON_SCALE * Math.cos(radLat)),
  ];
}

/** WGS84 -> GCJ-02; the identity outside CHINA_BOX. */
export function wgs84ToGcj02(lat, lon) {
  if (!inChina(lat, lon)) return [lat, lon];
  const [dlat, dlon] = gcjOffset(lat, lon);
  return [lat + dlat, lon + dlon];
}

/** GCJ-02 -> WGS84, the exact inverse by fixed-point iteration (for a click on the map). */
export function gcj02ToWgs84(lat, lon) {
  if (!inChina(lat, lon)) return [lat, lon];
  const [dlat, dlon] = gcjOffset(lat, lon);
  let wLat = lat - dlat;
  let wLon = lon - dlon;
  for (let i = 0; i < INVERSE_MAX_STEPS; i += 1) {
    const [gLat, gLon] = wgs84ToGcj02(wLat, wLon);
    const errLat = gLat - lat;
    const errLon = gLon - lon;
    wLat -= errLat;
    wLon -= errLon;
    if (Math.abs(errLat) < INVERSE_TOL_DEG && Math.abs(errLon) < INVERSE_TOL_DEG) break;
  }
  return [wLat, wLon];
}

/** The function that takes a WGS84 [lat, lon] to the map's drawing system. */
export function drawer(coordSys) {
  if (coordSys === 'gcj02') return wgs84ToGcj02;
  return (lat, lon) => [lat, lon];
}

/** A GeoJSON geometry's positions ([lon, lat]) taken through `toDrawn` (a fresh copy). */
export function convertGeometry(geometry, toDrawn) {
  const position = (p) => {
    const [lat, lon] = toDrawn(p[1], p[0]);
    return [lon, lat];
  };
  const walk = (coords, depth) =>
    depth === 0 ? position(coords) : coords.map((c) => walk(c, depth - 1));
  const depths = { Point: 0, MultiPoint: 1, LineString: 1, MultiLineString: 2, Polygon: 2, MultiPolygon: 3 };
  if (!(geometry.type in depths)) return geometry;
  return { type: geometry.type, coordinates: walk(geometry.coordinates, depths[geometry.type]) };
}
