"""Coverage-guided fuzzing of the decoder, the GeoJSON parser and the loan parser (atheris).

    .venv/bin/python -m tests.fuzz --minutes 30                 # every target, 30 min in all
    .venv/bin/python -m tests.fuzz --minutes 30 --parallel      # all at once, 30 min each
    .venv/bin/python -m tests.fuzz --target fence --minutes 10  # one target
    .venv/bin/python -m tests.fuzz replay out/fuzz/decode/crash-1a2b...  # reproduce a finding
    .venv/bin/python -m tests.fuzz replay                       # the committed corpus
    .venv/bin/python -m tests.fuzz seed                         # rewrite the seed corpus

Each target runs in its own process under libFuzzer (atheris), for its share of the time
(one after another; `--parallel` runs them at once, each for the whole time), starting
from the committed corpus `tests/fuzz/corpus/<target>/` and keeping what it finds
under `--out` (default `out/fuzz/<target>/`): `corpus/` for inputs that reached new code,
`crash-*`, `timeout-*` for breaches of the contract (the run of that target stops at the
first one). To keep a finding as a regression seed, copy it into the committed corpus with
a name that says what it is. The exit status is non-zero if any target found something.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
CORPUS = HERE / "corpus"
TARGET_NAMES = ("decode", "fence", "loan")
INSTRUMENTED = ["devices", "geofence", "lending"]
INPUT_TIMEOUT_S = 10  # one input taking longer is a finding (a denial of service)
RSS_LIMIT_MB = 4096


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the fuzzers, a replay, or the seeding."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_worker"]:  # internal: `_worker TARGET LIBFUZZER_ARGS...`
        return _worker(argv[1], argv[2:])
    args = _parser().parse_args(argv)
    if args.command == "seed":
        return _seed()
    if args.command == "replay":
        return _replay(args.target, [Path(p) for p in args.inputs])
    return _run(args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tests.fuzz",
        description="Coverage-guided fuzzing of the decoder, fence and loan parsers (atheris).",
    )
    parser.add_argument("command", nargs="?", default="run", choices=["run", "seed", "replay"])
    parser.add_argument("inputs", nargs="*", help="replay: files to run through the target")
    parser.add_argument("--target", choices=[*TARGET_NAMES, "all"], default="all")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--minutes", type=float, help="time for all targets together")
    budget.add_argument("--seconds", type=float, help="time for all targets together")
    budget.add_argument("--runs", type=int, help="inputs per target (instead of a time)")
    parser.add_argument("--out", type=Path, default=REPO / "out" / "fuzz")
    parser.add_argument("--seed", type=int, help="libFuzzer's random seed (default: random)")
    parser.add_argument("--parallel", action="store_true", help="run the targets at once")
    return parser


def _targets(choice: str) -> list[str]:
    return list(TARGET_NAMES) if choice == "all" else [choice]


def _run(args: argparse.Namespace) -> int:
    targets = _targets(args.target)
    total_s = args.seconds if args.seconds is not None else 60.0 * (args.minutes or 1.0)
    share_s = total_s if args.parallel else total_s / len(targets)
    workers = []
    for target in targets:
        command = worker_command(target, args.out / target, share_s, args.runs, args.seed)
        print(f"fuzzing {target}: {' '.join(command[3:])}", flush=True)
        process = subprocess.Popen(command, cwd=REPO, env=_worker_env())
        if not args.parallel:
            process.wait()
        workers.append((target, process))
    failed = [target for target, process in workers if process.wait() != 0]
    for target in failed:
        print(f"{target}: a breach of the contract; see {args.out / target}", file=sys.stderr)
    return 1 if failed else 0


def worker_command(
    target: str, out: Path, seconds: float | None, runs: int | None = None, seed: int | None = None
) -> list[str]:
    """The command that fuzzes one target under libFuzzer, keeping its findings in `out`."""
    from tests.fuzz.targets import TARGETS  # not before the worker's instrumentation

    (out / "corpus").mkdir(parents=True, exist_ok=True)
    flags = [
        f"-max_len={TARGETS[target].max_len}",
        f"-timeout={INPUT_TIMEOUT_S}",
        f"-rss_limit_mb={RSS_LIMIT_MB}",
        f"-artifact_prefix={out}{os.sep}",
        f"-dict={_dictionary(out)}",
        "-print_final_stats=1",
        "-use_value_profile=1",
    ]
    if runs is not None:
        flags.append(f"-runs={runs}")
    else:
        flags.append(f"-max_total_time={max(1, round(seconds or 60))}")
    if seed is not None:
        flags.append(f"-seed={seed}")
    folders = [str(out / "corpus"), str(CORPUS / target)]
    return [sys.executable, "-m", "tests.fuzz", "_worker", target, *flags, *folders]


def _dictionary(out: Path) -> Path:
    from tests.fuzz.mutate import DICTIONARY  # as above

    path = out / "tokens.dict"
    lines = [f'"{_escape(token)}"' for token in DICTIONARY]
    path.write_text("\n".join(lines) + "\n", encoding="ascii")
    return path


def _escape(token: bytes) -> str:
    """A token as libFuzzer's dictionary format spells it: printable ASCII, else `\\xNN`."""
    return "".join(chr(b) if 32 <= b < 127 and b not in b'"\\' else f"\\x{b:02x}" for b in token)


def _worker_env() -> dict[str, str]:
    pythonpath = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": pythonpath}


def _worker(target: str, libfuzzer_args: list[str]) -> int:
    """Fuzz one target in this process: libFuzzer exits the process when it is done."""
    import atheris  # only the worker needs it

    with atheris.instrument_imports(include=INSTRUMENTED):
        from tests.fuzz.targets import TARGETS  # instrumented on import
    from tests.fuzz.mutate import json_mutator

    chosen = TARGETS[target]

    def byte_mutate(data: bytes, max_size: int) -> bytes:
        # Looked up at each call: Fuzz() puts libFuzzer's own `Mutate` in place when it starts.
        return atheris.Mutate(data, max_size)

    mutator = json_mutator(byte_mutate, topic_line=target == "decode")
    atheris.Setup([sys.argv[0], *libfuzzer_args], chosen.check, custom_mutator=mutator)
    atheris.Fuzz()
    return 0  # pragma: no cover  # Fuzz() exits the process


def _replay(choice: str, inputs: list[Path]) -> int:
    """Run files through a target without the fuzzer; a traceback for each breach."""
    import traceback

    from tests.fuzz.targets import TARGETS

    paths = inputs or [p for t in _targets(choice) for p in sorted((CORPUS / t).iterdir())]
    failed = 0
    for path in paths:
        # A file under a folder named for a target (the corpus, `--out`) belongs to it.
        named = path.parent.name if path.parent.name in TARGET_NAMES else None
        targets = [named] if choice == "all" and named else _targets(choice)
        for target in targets:
            try:
                TARGETS[target].check(path.read_bytes())
            except Exception:  # noqa: BLE001  # report every breach, then go on
                failed += 1
                print(f"{target} {path}:", file=sys.stderr)
                traceback.print_exc()
    print(f"{len(paths)} inputs, {failed} breaches")
    return 1 if failed else 0


def _seed() -> int:
    from tests.fuzz.seeds import write_corpus

    for target in TARGET_NAMES:
        written = write_corpus(target)
        print(f"{target}: {len(written)} seeds in {CORPUS / target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
