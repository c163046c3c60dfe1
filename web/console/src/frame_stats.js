// Frame times of the page, for the benchmark and for tests: a recorder of
// requestAnimationFrame intervals and long tasks, and their summary. The summary is pure.

/** The nearest-rank percentile `p` (0-100) of ascending `sorted`; null when empty. */
export function percentile(sorted, p) {
  if (sorted.length === 0) return null;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1];
}

const round = (x) => (x === null ? null : Math.round(x * 100) / 100);

/** Frame intervals (ms) and long-task durations (ms) summarised. */
export function summarize(intervalsMs, longTasksMs = [], windowMs = null) {
  const sorted = [...intervalsMs].sort((a, b) => a - b);
  const total = intervalsMs.reduce((s, x) => s + x, 0);
  return {
    frames: sorted.length,
    window_ms: round(windowMs ?? total),
    fps: total > 0 ? round((sorted.length * 1000) / total) : null,
    p50_ms: round(percentile(sorted, 50)),
    p95_ms: round(percentile(sorted, 95)),
    p99_ms: round(percentile(sorted, 99)),
    max_ms: round(sorted.length ? sorted[sorted.length - 1] : null),
    frames_over_50ms: sorted.filter((x) => x > 50).length,
    long_tasks: longTasksMs.length,
    long_task_ms: round(longTasksMs.reduce((s, x) => s + x, 0)),
    longest_task_ms: round(longTasksMs.length ? Math.max(...longTasksMs) : null),
  };
}

/** A recorder over the browser's `requestAnimationFrame`, `performance.now` and
 * `PerformanceObserver` (passed in, so it runs anywhere). */
export function createFrameRecorder({ raf, now, observe }) {
  let intervals = [];
  let longTasks = [];
  let last = null;
  let running = false;
  let startedAt = null;
  const tick = (t) => {
    if (!running) return;
    if (last !== null) intervals.push(t - last);
    last = t;
    raf(tick);
  };
  if (observe) observe((durationMs) => running && longTasks.push(durationMs));
  return {
    start() {
      intervals = [];
      longTasks = [];
      last = null;
      startedAt = now();
      if (!running) {
        running = true;
        raf(tick);
      }
    },
    stop() {
      running = false;
      return summarize(intervals, longTasks, now() - startedAt);
    },
    get running() {
      return running;
    },
  };
}
