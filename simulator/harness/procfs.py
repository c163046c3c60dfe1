"""CPU and memory of processes and of the machine, from Linux's /proc.

The engine runs its MQTT client in a child process, so "the engine" is a process tree:
the benchmarks and the load test measure it with `tree_cpu_s` and `tree_memory`.
"""

from __future__ import annotations

import os
from pathlib import Path

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def proc_cpu_s(pid: int) -> float:
    """CPU seconds (user + system, all threads) a live process has used: /proc/<pid>/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # the name in parentheses may hold spaces
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS  # utime, stime


def proc_tree(pid: int) -> list[int]:
    """A live process and its live descendants (the engine runs MQTT in a child)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*/children"):
            try:
                todo.extend(int(c) for c in task.read_text().split())
            except OSError:
                continue  # the thread ended meanwhile
    return out


def tree_cpu_s(pid: int) -> float:
    """CPU seconds of a process and its live descendants."""
    total = 0.0
    for p in proc_tree(pid):
        try:
            total += proc_cpu_s(p)
        except OSError:
            continue  # it ended meanwhile
    return total


def tree_memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM summed over a process and its live descendants, in bytes."""
    total = {"VmRSS": 0, "VmHWM": 0}
    for p in proc_tree(pid):
        try:
            for key, value in proc_memory(p).items():
                total[key] += value
        except OSError:
            continue
    return total


def proc_memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a live process in bytes: /proc/<pid>/status."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in {"VmRSS", "VmHWM"}:
            out[key] = int(value.split()[0]) * 1024
    return out


def machine_cpu_s() -> tuple[float, float]:
    """(busy, interrupts) CPU seconds of the whole machine since boot, all cores, from
    /proc/stat: busy is user, nice, system and steal; interrupts is irq and softirq (where
    the kernel's loopback networking often runs, charged to no process)."""
    first = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in first[:8])
    return (user + nice + system + steal) / _CLOCK_TICKS, (irq + softirq) / _CLOCK_TICKS
