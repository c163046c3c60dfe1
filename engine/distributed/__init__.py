"""The distributed runtime (DESIGN §1, §9): the same core and consumers on Kafka.

- `records`: the topics' records as bytes (readings, rejects, loan events, alerts); pure.
- `stages`: the pipeline cut in two, a device stage keyed by device and a per-loan stage
  keyed by loan, with what each checkpoints; pure.
"""
