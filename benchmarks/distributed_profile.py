"""Where a worker's time goes: py-spy sampling the `pledgewatch worker` process from outside
(all its threads, Python frames), summed by function and by the code that owns each sample.

py-spy is a sampling profiler in a binary wheel (`pip install py-spy`); it is not a
dependency of the project: without it the benchmark says so and skips the profile. It reads
the worker's memory with `--nonblocking` (the worker is never paused), so the profiled run
is slowed only by py-spy's own CPU on the shared cores.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

SAMPLE_RATE_HZ = 100

# Which code a sample belongs to: the innermost frame whose file matches one of these, inside
# the event loop's dispatch of a callback (asyncio's own frames belong to who called them).
_OWNERS: tuple[tuple[str, str], ...] = (
    ("aiokafka/", "aiokafka: produce, fetch, sockets"),
    ("faust/", "Faust: streams, agents, topics, tables"),
    ("mode/", "Faust: streams, agents, topics, tables"),
    ("engine/store/", "store: SQLite writes"),
    ("engine/distributed/records.py", "records: (de)serialising"),
    ("engine/distributed/", "worker glue: batches, stages, checkpoints"),
    ("engine/runtime/", "core + pipeline (the local engine's code)"),
    ("engine/core/", "core + pipeline (the local engine's code)"),
    ("geofence/", "core + pipeline (the local engine's code)"),
    ("devices/", "core + pipeline (the local engine's code)"),
    ("alerts/", "core + pipeline (the local engine's code)"),
    ("lending/", "lending consumers"),
    ("concurrent/", "threads: executor"),
    ("threading.py", "threads: executor"),
)
_LOOP_FILES = ("asyncio/", "selectors.py")
_DISPATCH = frozenset({"Handle._run", "BaseEventLoop._run_once"})
"""Frames of the event loop running a callback: what lies inside one is the callback's."""
_PATH_PREFIX = re.compile(
    r"\((?:[^()]*?/site-packages/|[^()]*?/lib/python3\.\d+/|" + re.escape(str(Path.cwd())) + "/)"
)


def py_spy_binary(named: str | None = None) -> str | None:
    """The py-spy executable: `named`, else next to this interpreter, else on PATH."""
    if named:
        return named
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


@dataclass(slots=True)
class Spy:
    """A running `py-spy record` on one process, writing collapsed stacks to `out`."""

    proc: subprocess.Popen[bytes]
    out: Path
    log: Path

    @classmethod
    def attach(cls, binary: str, pid: int, out: Path) -> Spy:
        """Start sampling `pid` (and its threads) now."""
        log = out.with_suffix(".log")
        with log.open("wb") as err:
            proc = subprocess.Popen(  # noqa: S603  # the profiler binary, our arguments
                [
                    binary,
                    "record",
                    "--pid",
                    str(pid),
                    "--format",
                    "raw",
                    "--output",
                    str(out),
                    "--rate",
                    str(SAMPLE_RATE_HZ),
                    "--nonblocking",
                ],
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        return cls(proc, out, log)

    def stop(self) -> str | None:
        """Stop sampling and let py-spy write its file; None, or why there is no profile."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            return "py-spy did not stop within 60 s"
        if not self.out.exists():
            tail = self.log.read_text(errors="replace")[-500:]
            return f"py-spy wrote no profile: {tail}"
        return None


@dataclass(slots=True)
class Profile:
    """Collapsed stacks summed: by leaf function (own time), by function anywhere in the
    stack (inclusive), and by the code that owns each sample."""

    samples: int = 0
    own: Counter[str] = field(default_factory=Counter)
    inclusive: Counter[str] = field(default_factory=Counter)
    owners: Counter[str] = field(default_factory=Counter)

    def as_json(self, top: int = 25) -> dict[str, object]:
        """The top functions and the owners, as shares of all samples."""

        def shares(counter: Counter[str], n: int) -> list[list[object]]:
            return [[name, round(c / self.samples, 4)] for name, c in counter.most_common(n)]

        return {
            "samples": self.samples,
            "rate_hz": SAMPLE_RATE_HZ,
            "owners": shares(self.owners, len(self.owners)),
            "top_own": shares(self.own, top),
            "top_inclusive": shares(self.inclusive, top),
        }


def _frame(raw: str) -> tuple[str, str, str]:
    """`func (path:line)` as (`func (short path)`, func, path)."""
    name, _, where = raw.rpartition(" (")
    path = where.rstrip(")").rpartition(":")[0] if ":" in where else where.rstrip(")")
    short = _PATH_PREFIX.sub("(", f"{name} ({path})") if name else raw
    return short, name, path


def _owner(frames: list[tuple[str, str, str]]) -> str:
    start = 0
    for i, (_, name, _path) in enumerate(frames):
        if name in _DISPATCH:
            start = i + 1
    for _, _name, path in reversed(frames[start:]):
        if any(loop in path for loop in _LOOP_FILES):
            continue
        for needle, owner in _OWNERS:
            if needle in path:
                return owner
    return "asyncio event loop" if start else "other"


def read_profile(path: Path) -> Profile:
    """Sum py-spy's raw output (one `frame;frame;... count` line per distinct stack)."""
    prof = Profile()
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [_frame(f) for f in stack.split(";") if f]
        if not frames:
            continue
        prof.samples += n
        prof.own[frames[-1][0]] += n
        for name in {f[0] for f in frames}:
            prof.inclusive[name] += n
        prof.owners[_owner(frames)] += n
    return prof


def profile_lines(doc: dict[str, object], top: int = 12) -> list[str]:
    """The profile as printed lines: owners (with their share of the worker's CPU per
    reading, when the run measured it), then the top functions by own time."""
    samples = doc.get("samples", 0)
    us = doc.get("worker_cpu_us_per_reading")
    lines = [f"worker profile: {samples} samples at {doc.get('rate_hz')} Hz (py-spy, all threads)"]
    owners = doc.get("owners", [])
    own = doc.get("top_own", [])
    assert isinstance(owners, list)
    assert isinstance(own, list)
    for name, share in owners:
        per = f"  ~{share * us:6.0f} us/reading" if isinstance(us, float | int) else ""
        lines.append(f"  {share * 100:5.1f}%{per}  {name}")
    lines.append("  top functions by own time:")
    lines += [f"  {share * 100:5.1f}%  {name}" for name, share in own[:top]]
    return lines
