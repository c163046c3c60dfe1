// The console page: sign in, then the map with the live cars and fences beside the panels
// (alerts and cases, car and loan, dead deliveries, KPIs, audit). `window.pledgewatch`
// shows read-only state for tests and the benchmark.

import { createAlertsPanel } from './alerts_panel.js';
import { createApi } from './api.js';
import { createAuditPanel } from './audit_panel.js';
import { createCarPanel } from './car_panel.js';
import { drawer } from './coords.js';
import { createDeliveriesPanel } from './deliveries_panel.js';
import { fill, h } from './dom.js';
import { createFrameRecorder } from './frame_stats.js';
import { createKpisPanel } from './kpis_panel.js';
import { connectLive } from './live_feed.js';
import { applyCars, applySnapshot, createLiveState, createRate } from './live_state.js';
import { createMapView } from './map_view.js';
import { can } from './roles.js';

const BASE = '/console/';
const MESSAGE_KEY = 'pledgewatch.message'; // what the sign-in form says after a reload
const root = document.getElementById('app');
const api = createApi({ onUnauthorized: () => signedOut('Your session ended: sign in again.') });
let feed = null;

const longTaskWatchers = [];
try {
  new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) for (const watch of longTaskWatchers) watch(entry.duration);
  }).observe({ type: 'longtask', buffered: false });
} catch {
  // no long-task timing in this browser: frame times only
}
const frames = createFrameRecorder({
  raf: (f) => requestAnimationFrame(f),
  now: () => performance.now(),
  observe: (cb) => longTaskWatchers.push(cb),
});

async function start() {
  let config = { tile_url: null, tile_coord_sys: 'wgs84', tile_attribution: null, live_interval_ms: 1000 };
  try {
    config = { ...config, ...(await api.get(`${BASE}config.json`)) };
  } catch {
    // the defaults: the offline map, one update a second
  }
  try {
    const session = await api.get('/v1/session');
    api.setCsrf(session.csrf_token);
    run(config, session);
  } catch (err) {
    if (err.status === 401) {
      const message = sessionStorage.getItem(MESSAGE_KEY) ?? '';
      sessionStorage.removeItem(MESSAGE_KEY);
      signIn(config, message);
    }
    else fill(root, h('p', { class: 'error page-error', text: `The engine did not answer: ${err.message}` }));
  }
}

function signIn(config, message = '') {
  feed?.close();
  feed = null;
  const name = h('input', { id: 'signin-name', name: 'username', autocomplete: 'username', required: true });
  const password = h('input', { id: 'signin-password', name: 'password', type: 'password', autocomplete: 'current-password', required: true });
  const error = h('p', { id: 'signin-error', class: 'error', role: 'alert' });
  const note = h('p', { id: 'signin-note', class: 'muted', text: message });
  const submit = h('button', { id: 'signin-submit', type: 'submit' }, 'Sign in');
  const form = h(
    'form',
    {
      id: 'signin',
      class: 'signin',
      onsubmit: async (e) => {
        e.preventDefault();
        submit.disabled = true;
        note.textContent = '';
        try {
          const session = await api.post('/v1/session', { name: name.value.trim(), password: password.value });
          api.setCsrf(session.csrf_token);
          run(config, { ...session, kind: 'operator' });
        } catch (err) {
          error.textContent = err.message;
          submit.disabled = false;
        }
      },
    },
    h('h1', {}, 'pledgewatch'),
    h('p', { class: 'muted', text: 'Operator console' }),
    h('label', {}, 'Name', name),
    h('label', {}, 'Password', password),
    submit,
    error,
    note,
  );
  fill(root, form);
  document.body.className = 'signed-out';
  name.focus();
}

let signedOut = () => {};

function run(config, session) {
  document.body.className = `signed-in role-${session.role}`;
  const coordSys = config.tile_url ? config.tile_coord_sys : 'wgs84'; // the offline map is WGS84
  const live = createLiveState();
  const rate = createRate(10_000);
  const statusEl = h('span', { id: 'live-status', class: 'pill', text: 'connecting' });
  const countEl = h('span', { id: 'car-count', class: 'muted' });
  const toastEl = h('div', { id: 'toast', class: 'toast hidden', role: 'status' });
  const findIn = h('input', { id: 'find', placeholder: 'find device or loan', size: 18 });
  const mapEl = h('div', { id: 'map' });
  const tabs = {
    alerts: h('section', { id: 'tab-alerts', class: 'tab' }),
    car: h('section', { id: 'tab-car', class: 'tab' }),
    deliveries: h('section', { id: 'tab-deliveries', class: 'tab' }),
    kpis: h('section', { id: 'tab-kpis', class: 'tab' }),
    audit: h('section', { id: 'tab-audit', class: 'tab' }),
  };
  const labels = { alerts: 'Alerts', car: 'Car / loan', deliveries: 'Dead letters', kpis: 'KPIs', audit: 'Audit' };
  const tabButtons = Object.keys(tabs).map((key) =>
    h('button', { type: 'button', id: `tab-button-${key}`, class: 'tab-button', dataset: { tab: key }, disabled: key === 'audit' && !can(session.role, 'audit'), onclick: () => showTab(key) }, labels[key]),
  );
  const header = h(
    'header',
    {},
    h('strong', { class: 'brand', text: 'pledgewatch' }),
    statusEl,
    countEl,
    h('form', { class: 'find', onsubmit: (e) => { e.preventDefault(); find(findIn.value.trim()); } }, findIn),
    h('span', { class: 'spacer' }),
    h('span', { id: 'who', text: `${session.name} (${session.role})` }),
    session.kind === 'operator' ? h('button', { id: 'sign-out', type: 'button', onclick: () => signOut() }, 'Sign out') : null,
  );
  const operatorNames = h('datalist', { id: 'operator-names' });
  fill(root, header, h('main', {}, mapEl, h('aside', { id: 'side' }, h('nav', { class: 'tabs' }, tabButtons), Object.values(tabs))), toastEl, operatorNames);

  let toastTimer = null;
  const toast = (text, bad = false) => {
    toastEl.textContent = text;
    toastEl.className = `toast${bad ? ' bad' : ''}`;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => toastEl.classList.add('hidden'), 4000);
  };

  const app = { api, session, live, toast };
  app.map = createMapView(mapEl, {
    toDrawn: drawer(coordSys),
    tileUrl: config.tile_url,
    attribution: config.tile_attribution,
    basemapUrl: `${BASE}basemap.json`,
    onCarClick: (id) => openCar(id),
  });
  const panels = {
    alerts: createAlertsPanel(app, tabs.alerts),
    car: createCarPanel(app, tabs.car),
    deliveries: createDeliveriesPanel(app, tabs.deliveries),
    kpis: createKpisPanel(app, tabs.kpis),
    audit: createAuditPanel(app, tabs.audit),
  };
  function showTab(key) {
    for (const [k, el] of Object.entries(tabs)) el.classList.toggle('hidden', k !== key);
    for (const b of tabButtons) b.classList.toggle('active', b.dataset.tab === key);
    if (key !== 'car' && key !== 'alerts') panels[key].refresh();
  }
  function openCar(id) {
    showTab('car');
    return panels.car.open(id);
  }
  async function openLoan(id) {
    showTab('car');
    if (!(await panels.car.openLoan(id))) toast(`no loan ${id}`, true);
  }
  async function openAlert(id) {
    showTab('alerts');
    await panels.alerts.choose(id);
  }
  Object.assign(app, { openCar, openLoan, openAlert });
  async function find(text) {
    if (!text) return;
    if (live.cars.has(text)) {
      openCar(text);
      return;
    }
    showTab('car');
    try {
      if (!(await panels.car.openLoan(text))) await panels.car.open(text); // a loan, else a device
    } catch (err) {
      toast(`${text}: ${err.message}`, true);
    }
  }

  async function loadFences() {
    try {
      const [fences, candidates] = await Promise.all([
        api.all('/v1/fences?limit=1000'),
        api.get('/v1/risk-sites/candidates?limit=1000').then((d) => d.items).catch(() => []), // lending off: none
      ]);
      app.map.setFences(fences, candidates);
      fencesLoaded = fences.length;
    } catch (err) {
      toast(`fences: ${err.message}`, true);
    }
  }
  let fencesLoaded = 0;

  const updateCount = () => {
    const n = live.cars.size;
    countEl.textContent = `${n} car${n === 1 ? '' : 's'} · ${Math.round(rate.perSecond(performance.now()))} updates/s`;
  };
  setInterval(updateCount, 1000);
  feed = connectLive({
    intervalMs: config.live_interval_ms ?? 1000,
    onStatus: (s) => {
      statusEl.textContent = s;
      statusEl.className = `pill ${s === 'live' ? 'ok' : 'bad'}`;
    },
    onError: () => {
      api.get('/v1/session').catch(() => {}); // a 401 here signs out (onUnauthorized)
    },
    handlers: {
      snapshot(doc, reconnected) {
        const changed = applySnapshot(live, doc);
        app.map.carsChanged(live.cars, changed);
        updateCount();
        if (reconnected) {
          panels.alerts.refresh();
          loadFences();
        }
      },
      cars(doc) {
        const changed = applyCars(live, doc);
        rate.add(changed.size, performance.now());
        app.map.carsChanged(live.cars, changed);
      },
      alert(doc) {
        panels.alerts.add(doc);
      },
      fences() {
        loadFences();
      },
    },
  });

  async function signOut() {
    try {
      await api.del('/v1/session');
    } finally {
      signedOut('Signed out.');
    }
  }
  signedOut = (message) => {
    // A fresh page: nothing of this session (state, timers, map) outlives it.
    feed?.close();
    feed = null;
    sessionStorage.setItem(MESSAGE_KEY, message);
    window.location.reload();
  };

  if (can(session.role, 'operators')) {
    api
      .get('/v1/operators')
      .then((d) => fill(operatorNames, d.items.filter((o) => o.role !== 'viewer').map((o) => h('option', { value: o.name }))))
      .catch(() => {});
  }
  showTab('alerts');
  panels.alerts.refresh();
  loadFences();

  window.pledgewatch = Object.freeze({
    session: Object.freeze({ name: session.name, role: session.role }),
    coordSys,
    car: (id) => (live.cars.has(id) ? { ...live.cars.get(id) } : null),
    carIds: () => [...live.cars.keys()],
    carCount: () => live.cars.size,
    alerts: () => panels.alerts.items(),
    fenceCount: () => fencesLoaded,
    drawn: (id) => app.map.drawn(id),
    clusterCount: () => app.map.clusterCount(),
    drawnFences: () => app.map.drawnFences(),
    stats: () => ({
      snapshots: live.snapshots,
      carEvents: live.carEvents,
      carUpdates: live.carUpdates,
      rejected: live.rejected,
      updatesPerS: rate.perSecond(performance.now()),
      serverNowMs: live.nowMs,
      map: { ...app.map.stats },
    }),
    frames: Object.freeze({ start: () => frames.start(), stop: () => frames.stop() }),
    show: (lat, lon, zoom) => app.map.show(lat, lon, zoom),
  });
}

start();
