import assert from 'node:assert/strict';
import { test } from 'node:test';

import { createFrameRecorder, percentile, summarize } from '../src/frame_stats.js';

test('nearest-rank percentiles', () => {
  const xs = Array.from({ length: 100 }, (_, i) => i + 1);
  assert.equal(percentile(xs, 50), 50);
  assert.equal(percentile(xs, 95), 95);
  assert.equal(percentile(xs, 99), 99);
  assert.equal(percentile(xs, 100), 100);
  assert.equal(percentile([7], 50), 7);
  assert.equal(percentile([], 50), null);
});

test('a summary of frame intervals and long tasks', () => {
  const frames = [...Array(98).fill(16.7), 60, 120];
  const s = summarize(frames, [70, 130]);
  assert.equal(s.frames, 100);
  assert.equal(s.p50_ms, 16.7);
  assert.equal(s.p99_ms, 60);
  assert.equal(s.max_ms, 120);
  assert.equal(s.frames_over_50ms, 2);
  assert.equal(s.long_tasks, 2);
  assert.equal(s.long_task_ms, 200);
  assert.equal(s.longest_task_ms, 130);
  assert.ok(Math.abs(s.fps - 100_000 / (98 * 16.7 + 180)) < 0.01);
  assert.equal(summarize([]).p50_ms, null);
});

test('the recorder measures intervals between animation frames', () => {
  const queue = [];
  let clock = 0;
  let report = null;
  const recorder = createFrameRecorder({
    raf: (f) => queue.push(f),
    now: () => clock,
    observe: (cb) => {
      report = cb;
    },
  });
  recorder.start();
  for (const t of [0, 16, 33, 83]) {
    clock = t;
    queue.shift()(t);
  }
  report(75);
  const s = recorder.stop();
  assert.deepEqual([s.frames, s.max_ms, s.long_tasks, s.window_ms], [3, 50, 1, 83]);
  assert.equal(recorder.running, false);
  report(99); // after stop: not counted
  clock = 100;
  queue.shift()?.(100); // the pending frame ends the loop
  assert.equal(queue.length, 0);
});
