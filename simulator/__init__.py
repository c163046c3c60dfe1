"""Seeded simulation of a pledged-car fleet: a synthetic city, cars that drive like cars,
trackers that report like trackers, scripted scenarios, and the ground truth they guarantee.

Layers, each pure (a seeded `random.Random`, no clock, no I/O):

- `city`: street grid, home zones and risk sites around (31.23, 121.47), routes;
- `motion`: a car's true track, second by second (parked spells, kinematic drives);
- `trackers`: a device sampling a track into MQTT messages (noise, cadence, faults,
  scripted events); `messages()` per tracker and `merge()` across trackers give the
  `(topic, payload, ts_ms)` stream a live MQTT fleet simulator publishes in time order;
- `car`, `script`, `scenarios`: a scenario car's types, the moves and alert windows every
  script shares, and what each scenario car does and which alerts it must raise;
- `fleet`: a whole run (cars, merged messages, ground truth); `truth`: checking alerts.
- `jt808_choice`, `jt808_reports`, `jt808_wire`: which trackers of a fleet are JT/T 808
  terminals, what they send in place of their MQTT messages, and its bytes.

A lending fleet's multi-day lives (homes, workplaces, time zones with DST, labelled risky
behaviours) are planned in `life_plan` and `life_places`, lived in `life_days`, reported by
`life_trackers` and written as a labelled replay dataset by `lives`
(`python -m simulator lives --loans N --days D --seed S --out DIR`).

I/O lives in `writer` (a run's files), `__main__` (`python -m simulator OUT_DIR`),
`golden` (`python -m simulator.golden --regenerate | --demo`), `mqtt_publisher` and
`jt808_terminal` (the simulated JT/T 808 terminals' TCP connections).
"""
