"""`pledgewatch loadtest`: play a simulated fleet into an engine and judge how fast, how late
and how accurate it is.

- `quality`: alerts against the run's ground truth (recall, precision, false alerts per
  1,000 car-hours); pure.
- `latency`: when each received alert became due, from what was published when; pure.
- `target`: the engine under test, started as `pledgewatch run` or attached by URL, its
  `/metrics` and its process's CPU and memory.
- `sampling`: the once-a-second sampler, the alert collector and the progress line.
- `run`: setup, publishing, drain, ramp, and the report document.
- `report`: `report.json`, `report.md` and the PNG charts (matplotlib, Agg).
- `command`: the flags, wired into `engine.cli.main`.
"""
