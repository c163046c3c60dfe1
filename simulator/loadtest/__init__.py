"""`pledgewatch loadtest`: play a simulated fleet into an engine and judge how fast, how late
and how accurate it is.

- `quality`: alerts against the run's ground truth (recall, precision, false alerts per
  1,000 car-hours); pure.
- `latency`: when each received alert became due, from what was published when; pure.
- `target`: the engine under test, started as `pledgewatch run` or attached by URL, its
  `/metrics` and its process's CPU and memory.
- `sampling`: the once-a-second sampler, the alert collector and the progress line.
- `options`: what the load test was asked (`Options`) and the error when it cannot run.
- `judging`: the ground truth for a live stream, and what an engine's rules leave unjudged;
  pure.
- `stack`: the broker, the engine (started or attached) with the plan loaded, the receiver.
- `jt808`: the JT/T 808 gateway started for `--jt808-share` trackers, their terminals, and
  what both counted.
- `state`: one load test as it runs: its parts, what it published and received, how far
  it got.
- `publishing`: the plan published on a thread, the engine watched meanwhile.
- `drain`: waiting for the engine and the alerts still due after publishing.
- `ramp`: steps of rising rate, each judged sustained or not.
- `document`: the report document, its charts and the cars on its map.
- `run`: one run's phases in order, and the cleanup and report whatever happens.
- `report`: `report.json`, `report.md` and the PNG charts (matplotlib, Agg).
- `command`: the flags, wired into `engine.cli.main`.
"""
