// The `/v1/live` server-sent events: a `snapshot` first, then `cars` deltas, `alert`s and
// `fences` versions. On an error the stream is closed and opened again after a backoff
// (1 s, doubling to 30 s); the snapshot that follows a reconnection is flagged, so the page
// refetches what it may have missed (alerts, fences).

export function connectLive({ intervalMs, handlers, onStatus = () => {}, onError = () => {} }) {
  let source = null;
  let retryMs = 1000;
  let timer = null;
  let stopped = false;
  let reconnecting = false;

  const parse = (event) => {
    try {
      return JSON.parse(event.data);
    } catch {
      return null;
    }
  };
  const on = (name, handler) => {
    source.addEventListener(name, (event) => {
      const doc = parse(event);
      if (doc !== null) handler(doc);
    });
  };

  function open() {
    timer = null;
    source = new EventSource(`/v1/live?interval_ms=${encodeURIComponent(intervalMs)}`);
    onStatus('connecting');
    on('snapshot', (doc) => {
      retryMs = 1000;
      onStatus('live');
      handlers.snapshot(doc, reconnecting);
      reconnecting = false;
    });
    on('cars', handlers.cars);
    on('alert', handlers.alert);
    on('fences', handlers.fences);
    source.onerror = () => {
      source.close();
      if (stopped) return;
      reconnecting = true;
      onStatus('reconnecting');
      onError();
      timer = setTimeout(open, retryMs);
      retryMs = Math.min(30_000, retryMs * 2);
    };
  }

  open();
  return {
    close() {
      stopped = true;
      if (timer !== null) clearTimeout(timer);
      source?.close();
    },
  };
}
