"""Driving an engine from outside: one harness for the tests, the load test, the benchmarks
and the demo.

- `engine_process`: `pledgewatch run` as a child process, with one readiness rule and one
  environment policy.
- `broker`: a private Mosquitto with the shipped settings.
- `receiver`: the webhook receiver that verifies signatures.
- `prometheus`: the parser of `GET /metrics`.
- `api_client`: bulk import through the API; `procfs`: CPU and memory from /proc.
"""
