// The live map: a base layer (a configured tile URL, or the bundled offline boundaries),
// fences, risk-site candidates, a car's track, and the live cars clustered at low zoom.
//
// Everything the engine sends is WGS84; `toDrawn` takes it to the tiles' system (GCJ-02
// for AMap or Tencent tiles), once per car update and once per fence load.
//
// Drawing: Leaflet circle markers on one canvas renderer (fences, track, clusters, cars:
// one canvas keeps hit detection right for all of them), the offline base map on a canvas
// of its own below (a car's move never redraws the boundaries). Clustering: supercluster,
// rebuilt at most every `REBUILD_MS` while cars move (10k points take ~10 ms); between
// rebuilds a car drawn on its own moves at once.

import * as L from 'leaflet';
import Supercluster from 'supercluster';
import { feature, mesh } from 'topojson-client';

import { convertGeometry } from './coords.js';

const REBUILD_MS = 1000;
const CLUSTER_MAX_ZOOM = 15; // from zoom 16 every car is drawn on its own
const CAR_STYLE = { radius: 5, weight: 1, color: '#0d2b52', fillColor: '#1e88e5', fillOpacity: 1 };
const FREE_CAR_STYLE = { ...CAR_STYLE, fillColor: '#90a4ae' }; // on no loan
const CLUSTER_STYLE = { weight: 2, color: '#0d47a1', fillColor: '#90caf9', fillOpacity: 0.85 };
const SELECTED_STYLE = { radius: 8, weight: 2, color: '#4a1c00', fillColor: '#ff6f00', fillOpacity: 1 };
const FENCE_STYLES = {
  zone: { color: '#2e7d32', weight: 2, fillColor: '#66bb6a', fillOpacity: 0.08 },
  risk_site: { color: '#c62828', weight: 2, fillColor: '#ef5350', fillOpacity: 0.25 },
  candidate: { color: '#ef6c00', weight: 2, dashArray: '6 4', fillColor: '#ffa726', fillOpacity: 0.15 },
};

const LABEL_FONT = '600 11px sans-serif';
const CLUSTER_RADIUS_PX = 80;
const VIEW_PAD = 0.1; // draw what is this share of the view beyond its edges (smooth panning)

// A cluster: a circle with its count drawn on the same canvas (no DOM per cluster).
const ClusterMarker = L.CircleMarker.extend({
  _updatePath() {
    L.CircleMarker.prototype._updatePath.call(this);
    const ctx = this._renderer._ctx;
    if (!ctx || this._empty()) return;
    if (ctx.font !== LABEL_FONT) {
      // setting a font parses it: only when another layer changed it
      ctx.font = LABEL_FONT;
      ctx.textAlign = 'center';
      ctx.textBaseline = 'middle';
    }
    ctx.fillStyle = '#0b2545';
    ctx.fillText(this.options.label, this._point.x, this._point.y);
  },
});

export function createMapView(container, options) {
  const { toDrawn, tileUrl, attribution, basemapUrl, onCarClick } = options;
  const map = L.map(container, { preferCanvas: true, worldCopyJump: true, zoomControl: true });
  map.setView([31.2304, 121.4737], 4);
  map.createPane('basePane').style.zIndex = 150;
  const baseRenderer = L.canvas({ pane: 'basePane', padding: 0.2 });
  const renderer = L.canvas({ padding: VIEW_PAD, tolerance: 3 });
  const fenceLayer = L.layerGroup().addTo(map);
  const trackLayer = L.layerGroup().addTo(map);
  const clusterLayer = L.layerGroup().addTo(map);
  const carLayer = L.layerGroup().addTo(map);

  const drawnCars = new Map(); // device_id -> {lat, lon (drawn), loanId, point (its feature)}
  const points = []; // the cars as GeoJSON points for supercluster, updated in place
  const carMarkers = new Map(); // device_id -> circle marker on the map
  const clusterMarkers = new Map(); // cluster_id -> ClusterMarker on the map
  let index = new Supercluster({ radius: CLUSTER_RADIUS_PX, maxZoom: CLUSTER_MAX_ZOOM, minPoints: 3 });
  let indexVersion = 0;
  let shown = null; // the index version, zoom and box the markers were chosen for
  let indexDirty = true;
  let lastRebuildAt = -Infinity;
  let frameRequested = false;
  let rebuildTimer = null;
  let selected = null;
  let fitted = false;
  const stats = { base: null, renders: 0, rebuilds: 0, lastRebuildMs: 0, lastRenderMs: 0, clusters: 0, markers: 0 };
  let basemap = null;

  function addBasemap() {
    if (basemap) return;
    stats.base = tileUrl ? 'tiles failed: offline' : 'offline';
    basemap = L.layerGroup().addTo(map);
    fetch(basemapUrl)
      .then((r) => r.json())
      .then((topo) => {
        const countries = topo.objects.countries;
        const land = feature(topo, countries);
        const style = { renderer: baseRenderer, interactive: false };
        L.geoJSON(land, { ...style, style: { stroke: false, fillColor: '#f4f1e8', fillOpacity: 1 } }).addTo(basemap);
        const borders = mesh(topo, countries, (a, b) => a !== b);
        L.geoJSON(borders, { ...style, style: { color: '#a89f91', weight: 1 } }).addTo(basemap);
        const coast = mesh(topo, countries, (a, b) => a === b);
        L.geoJSON(coast, { ...style, style: { color: '#7c9cb0', weight: 1 } }).addTo(basemap);
      })
      .catch(() => {});
    map.attributionControl.addAttribution('Boundaries: Natural Earth');
  }

  if (tileUrl) {
    stats.base = 'tiles';
    let loads = 0;
    let errors = 0;
    const tiles = L.tileLayer(tileUrl, { attribution: attribution || '', maxZoom: 19 }).addTo(map);
    tiles.on('tileload', () => {
      loads += 1;
    });
    tiles.on('tileerror', () => {
      errors += 1;
      if (errors >= 4 && loads === 0 && map.hasLayer(tiles)) {
        map.removeLayer(tiles); // no tiles to be had (no internet?): the offline map instead
        addBasemap();
      }
    });
  } else {
    addBasemap();
  }

  function carStyle(id) {
    if (id === selected) return SELECTED_STYLE;
    return drawnCars.get(id)?.loanId ? CAR_STYLE : FREE_CAR_STYLE;
  }

  function requestRender() {
    if (frameRequested) return;
    frameRequested = true;
    requestAnimationFrame(() => {
      frameRequested = false;
      render();
    });
  }

  function viewBox() {
    const b = map.getBounds().pad(VIEW_PAD);
    let west = b.getWest();
    let east = b.getEast();
    if (east - west >= 360) [west, east] = [-180, 180];
    const south = Math.max(-90, b.getSouth());
    const north = Math.min(90, b.getNorth());
    return [Math.max(-180, west), south, Math.min(180, east), north];
  }

  function rebuild() {
    const started = performance.now();
    index = new Supercluster({ radius: CLUSTER_RADIUS_PX, maxZoom: CLUSTER_MAX_ZOOM, minPoints: 3 }).load(points);
    indexVersion += 1;
    indexDirty = false;
    lastRebuildAt = performance.now();
    stats.rebuilds += 1;
    stats.lastRebuildMs = lastRebuildAt - started;
  }

  function render() {
    const started = performance.now();
    if (indexDirty && started - lastRebuildAt >= REBUILD_MS) rebuild();
    else if (indexDirty && rebuildTimer === null) {
      rebuildTimer = setTimeout(() => {
        rebuildTimer = null;
        requestRender();
      }, REBUILD_MS - (started - lastRebuildAt));
    }
    const zoom = Math.round(map.getZoom());
    const box = viewBox();
    const key = `${indexVersion}|${zoom}|${box.join(',')}`;
    if (key === shown) return; // the same clusters: the cars drawn alone moved already
    shown = key;
    const found = index.getClusters(box, zoom);
    const wanted = new Set();
    const clusters = [];
    for (const f of found) {
      if (f.properties.cluster) clusters.push(f);
      else wanted.add(f.properties.id);
    }
    if (selected !== null && drawnCars.has(selected)) wanted.add(selected); // never hidden in a cluster
    for (const [id, marker] of carMarkers) {
      if (!wanted.has(id)) {
        carLayer.removeLayer(marker);
        carMarkers.delete(id);
      }
    }
    for (const id of wanted) {
      const car = drawnCars.get(id);
      if (car === undefined) continue;
      const marker = carMarkers.get(id);
      if (marker === undefined) {
        const m = L.circleMarker([car.lat, car.lon], { renderer, ...carStyle(id) });
        m.on('click', () => onCarClick(id));
        carMarkers.set(id, m);
        carLayer.addLayer(m);
      } else {
        const at = marker.getLatLng();
        if (at.lat !== car.lat || at.lng !== car.lon) marker.setLatLng([car.lat, car.lon]);
      }
    }
    const keep = new Set();
    for (const c of clusters) {
      const id = c.properties.cluster_id;
      const [lon, lat] = c.geometry.coordinates;
      const label = String(c.properties.point_count_abbreviated);
      const radius = Math.min(28, 10 + 3 * Math.log2(c.properties.point_count));
      keep.add(id);
      const marker = clusterMarkers.get(id);
      if (marker === undefined) {
        const m = new ClusterMarker([lat, lon], { renderer, radius, label, ...CLUSTER_STYLE });
        m.on('click', () => {
          const to = Math.min(index.getClusterExpansionZoom(id), CLUSTER_MAX_ZOOM + 1);
          map.setView(m.getLatLng(), to);
        });
        clusterMarkers.set(id, m);
        clusterLayer.addLayer(m);
        continue;
      }
      const at = marker.getLatLng();
      if (marker.options.label !== label || marker.getRadius() !== radius) {
        marker.options.label = label;
        marker.setRadius(radius); // redraws it
      }
      if (at.lat !== lat || at.lng !== lon) marker.setLatLng([lat, lon]);
    }
    for (const [id, marker] of clusterMarkers) {
      if (!keep.has(id)) {
        clusterLayer.removeLayer(marker);
        clusterMarkers.delete(id);
      }
    }
    stats.renders += 1;
    stats.clusters = clusters.length;
    stats.markers = carMarkers.size;
    stats.lastRenderMs = performance.now() - started;
  }

  map.on('moveend zoomend', requestRender);

  function setCar(id, car) {
    const before = drawnCars.get(id);
    if (car === undefined) {
      if (before === undefined) return;
      const last = points.pop(); // swap-remove its point
      if (last !== before.point) {
        points[before.index] = last;
        drawnCars.get(last.properties.id).index = before.index;
      }
      drawnCars.delete(id);
      const marker = carMarkers.get(id);
      if (marker !== undefined) {
        carLayer.removeLayer(marker);
        carMarkers.delete(id);
      }
      return;
    }
    const [lat, lon] = toDrawn(car.lat, car.lon);
    if (before === undefined) {
      const point = { type: 'Feature', properties: { id }, geometry: { type: 'Point', coordinates: [lon, lat] } };
      drawnCars.set(id, { lat, lon, loanId: car.loan_id, point, index: points.length });
      points.push(point);
    }
    const loanChanged = before !== undefined && before.loanId !== car.loan_id;
    if (before !== undefined) {
      before.point.geometry.coordinates[0] = lon;
      before.point.geometry.coordinates[1] = lat;
      Object.assign(before, { lat, lon, loanId: car.loan_id });
    }
    const marker = carMarkers.get(id);
    if (marker === undefined) return;
    marker.setLatLng([lat, lon]); // drawn on its own: move it now
    if (loanChanged) marker.setStyle(carStyle(id));
  }

  function fitCars() {
    if (fitted || drawnCars.size === 0) return;
    fitted = true;
    const bounds = L.latLngBounds([...drawnCars.values()].map((c) => [c.lat, c.lon]));
    map.fitBounds(bounds.pad(0.2), { maxZoom: 14 });
  }

  function fenceLayerOf(feat, kind) {
    const style = { renderer, ...(FENCE_STYLES[kind] ?? FENCE_STYLES.zone) };
    const props = feat.properties ?? {};
    const name = props.name || feat.id || '';
    const label = kind === 'candidate' ? `candidate risk site: ${props.loans} loans` : `${kind.replace('_', ' ')}: ${name}`;
    const geometry = convertGeometry(feat.geometry, toDrawn);
    let layer;
    if (geometry.type === 'Point') {
      const [lon, lat] = geometry.coordinates;
      layer = L.circle([lat, lon], { ...style, radius: props.radius_m ?? 100 });
    } else {
      layer = L.geoJSON({ type: 'Feature', geometry, properties: {} }, { style, renderer });
    }
    layer.bindTooltip(label, { sticky: true });
    layer.drawnAs = { id: feat.id ?? null, kind, geometry }; // for tests: what was drawn
    return layer;
  }

  return {
    map,
    stats,
    carsChanged(cars, changed) {
      for (const id of changed) setCar(id, cars.get(id));
      indexDirty = true;
      fitCars();
      requestRender();
    },
    setFences(fences, candidates) {
      fenceLayer.clearLayers();
      for (const f of fences) fenceLayer.addLayer(fenceLayerOf(f, f.properties?.kind === 'risk_site' ? 'risk_site' : 'zone'));
      for (const c of candidates) {
        const feat = { geometry: { type: 'Point', coordinates: [c.lon, c.lat] }, properties: c };
        fenceLayer.addLayer(fenceLayerOf(feat, 'candidate'));
      }
      fenceLayer.eachLayer((l) => l.bringToBack?.());
    },
    showTrack(items) {
      trackLayer.clearLayers();
      if (items.length === 0) return;
      const points = items.map((p) => toDrawn(p.lat, p.lon));
      trackLayer.addLayer(L.polyline(points, { renderer, color: '#6a1b9a', weight: 3, opacity: 0.85 }));
      trackLayer.addLayer(L.circleMarker(points[0], { renderer, radius: 5, color: '#6a1b9a', fillColor: '#fff', fillOpacity: 1 }));
      trackLayer.addLayer(L.circleMarker(points[points.length - 1], { renderer, radius: 5, color: '#6a1b9a', fillColor: '#6a1b9a', fillOpacity: 1 }));
      map.fitBounds(L.latLngBounds(points).pad(0.2), { maxZoom: 16 });
    },
    clearTrack() {
      trackLayer.clearLayers();
    },
    select(id) {
      const before = selected;
      selected = id;
      shown = null; // the chosen car is drawn on its own, wherever the clusters are
      for (const key of [before, id]) carMarkers.get(key)?.setStyle(carStyle(key));
      requestRender();
    },
    /** Centre on a WGS84 point. */
    show(lat, lon, zoom = 15) {
      map.setView(toDrawn(lat, lon), zoom);
    },
    /** A car as drawn now: where its marker is and the colour of the canvas at its centre;
     * null when it is in a cluster or out of view. */
    drawn(id) {
      const marker = carMarkers.get(id);
      if (marker === undefined || !map.hasLayer(marker)) return null;
      const at = marker.getLatLng();
      const p = map.latLngToContainerPoint(at);
      let rgba = null; // read from Leaflet's canvas internals (pinned at 1.9.4)
      const ctx = renderer._ctx;
      const origin = renderer._bounds?.min;
      if (ctx && origin && marker._point) {
        const scale = window.devicePixelRatio || 1;
        const x = Math.round((marker._point.x - origin.x) * scale);
        const y = Math.round((marker._point.y - origin.y) * scale);
        rgba = Array.from(ctx.getImageData(x, y, 1, 1).data);
      }
      return { lat: at.lat, lon: at.lng, x: p.x, y: p.y, fill: marker.options.fillColor, rgba };
    },
    /** The fences as drawn: {id, kind, geometry} in the map's system. */
    drawnFences() {
      return fenceLayer.getLayers().map((l) => l.drawnAs);
    },
    clusterCount() {
      return clusterMarkers.size;
    },
  };
}
