"""Fuzzing of the parsers that take outside input: the MQTT payload decoder, the GeoJSON
fence parser and the loan parser (atheris, coverage-guided), and the schemathesis hooks.

- `targets`: each target's contract check of one input (used by the fuzzer and by CI).
- `seeds`: the seed inputs, real (example city, golden scenarios) and hostile.
- `mutate`: a JSON-aware mutator beside libFuzzer's byte mutations.
- `corpus/<target>/`: the committed seeds (`python -m tests.fuzz seed` rewrites them).
- `schemathesis_hooks`: the RFC 9457 problem check of `tests/test_schemathesis.py`.

CI runs `tests/test_fuzz.py` (the corpus replayed, then 15 s of fuzzing per target). A long
session: `.venv/bin/python -m tests.fuzz --minutes 30` (see `tests/fuzz/__main__.py`).
Import nothing here: the fuzzing worker must import the parsers under instrumentation.
"""
