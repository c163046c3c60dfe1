"""The JT/T 808 gateway under a simulated terminal fleet, beside a bare asyncio floor.

```
.venv/bin/python -m benchmarks.bench_jt808 [--terminals 10000] [--rates 1000,2500,5000,7500]
    [--step-s 8] [--max-s 10] [--window 2] [--seed 1] [--no-floor] [--no-pin] [--quick]
```

Two servers, one after the other, under the same seeded fleet (`benchmarks/jt808_fleet.py`,
on `simulator/jt808_terminal.py`):
`pledgewatch gateway jt808` publishing to a private Mosquitto, and the floor
(`benchmarks/jt808_floor.py`: framing and answers only). For each: connect, register and
authenticate `--terminals` terminals (the connections held, and the server's RSS growth per
connection), then offer location reports at each of `--rates` per second for `--step-s`
(reports acked per second, latency from the report's write to its 0x8001 at p50/p99, the
server's CPU), then as fast as a window of `--window` unanswered reports per terminal
allows for `--max-s` (the most it answers, and CPU microseconds per report, hence reports
per second on one core). With two or more cores the server runs pinned to a core of its
own, the fleet and Mosquitto on another.

Checks: every terminal the fleet connected is counted by the gateway, the gateway's
`reports_acked_total` equals the reports the fleet saw answered result 0, as many `gps`
readings were acked by the broker, and nothing was rejected.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path

from benchmarks.common import RESULTS_DIR, exit_status, log, machine_info, table, write_json
from benchmarks.common import fmt_value as _fmt
from benchmarks.jt808_fleet import FleetStats, WalkingTerminal, connect_fleet, pace, settle
from engine.cli.gateway import raise_fd_limit
from simulator.harness.broker import PrivateBroker, free_port, wait_port
from simulator.harness.gateway_process import GatewayProcess
from simulator.harness.procfs import proc_cpu_s, proc_memory

TARGET_CONNECTIONS = 10_000
TARGET_REPORTS_PER_S = 5_000
SUSTAINED_SHARE = 0.95  # a rate is sustained when this share of it is acked...
SUSTAINED_P99_S = 1.0  # ...with a p99 latency under this


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """The benchmark's flags."""
    p = argparse.ArgumentParser(prog="bench_jt808", description=__doc__)
    p.add_argument("--terminals", type=int, default=TARGET_CONNECTIONS)
    p.add_argument("--rates", default="1000,2500,5000,7500", help="reports/s offered, in order")
    p.add_argument("--step-s", type=float, default=8.0, help="seconds per rate")
    p.add_argument("--max-s", type=float, default=10.0, help="seconds of the unpaced run")
    p.add_argument("--window", type=int, default=2, help="unanswered reports per terminal")
    p.add_argument("--connect-batch", type=int, default=500)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--no-floor", action="store_true", help="skip the bare asyncio floor")
    p.add_argument("--no-pin", action="store_true", help="do not pin the server to a core")
    p.add_argument("--quick", action="store_true", help="tiny sizes (the smoke test)")
    p.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    args = p.parse_args(argv)
    if args.quick:
        args.terminals, args.rates, args.step_s, args.max_s = 40, "200", 1.5, 1.5
        args.connect_batch = 20
    args.rate_list = [float(r) for r in args.rates.split(",") if r.strip()]
    return args


def percentile_ms(values: list[float], q: float) -> float | None:
    """The q-th percentile of seconds, in milliseconds (None without values)."""
    if not values:
        return None
    ordered = sorted(values)
    return round(1000 * ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))], 2)


async def _measure_phase(
    terminals: list[WalkingTerminal],
    stats: FleetStats,
    pid: int,
    rate: float | None,
    seconds: float,
    window: int,
) -> dict[str, object]:
    stats.reset_window()
    cpu0, t0 = proc_cpu_s(pid), time.perf_counter()
    wall = await pace(terminals, rate, seconds, window)
    left = await settle(terminals, 15.0)
    elapsed = time.perf_counter() - t0
    cpu = proc_cpu_s(pid) - cpu0
    acked = stats.acked
    return {
        "offered_per_s": rate,
        "seconds": round(wall, 2),
        "sent": stats.sent,
        "acked": acked,
        "refused": stats.refused,
        "unanswered_at_end": left,
        "skipped_full_window": stats.skipped if rate is not None else None,
        "sent_per_s": round(stats.sent / wall, 1) if wall else 0.0,
        "acked_per_s": round(acked / wall, 1) if wall else 0.0,
        "latency_ms": {
            "p50": percentile_ms(stats.latencies_s, 50),
            "p99": percentile_ms(stats.latencies_s, 99),
            "max": percentile_ms(stats.latencies_s, 100),
        },
        "server_cpu_share": round(cpu / elapsed, 3) if elapsed else None,
        "server_cpu_us_per_report": round(1e6 * cpu / acked, 1) if acked else None,
        "reports_per_core_s": round(acked / cpu) if cpu > 0 else None,
    }


async def drive(port: int, pid: int, args: argparse.Namespace) -> dict[str, object]:
    """The fleet against one server: connections and memory, paced steps, the unpaced run."""
    rss0 = proc_memory(pid)["VmRSS"]
    started = time.perf_counter()
    terminals, stats = await connect_fleet(
        "127.0.0.1", port, args.terminals, args.seed, args.connect_batch
    )
    connect_s = time.perf_counter() - started
    await asyncio.sleep(1.0)
    rss1 = proc_memory(pid)["VmRSS"]
    held = len(terminals)
    log(f"  {held} terminals ready in {connect_s:.1f} s ({stats.failed} failed)")
    result: dict[str, object] = {
        "terminals_held": held,
        "terminals_failed": stats.failed,
        "connect_register_auth_s": round(connect_s, 2),
        "rss_before_bytes": rss0,
        "rss_after_connect_bytes": rss1,
        "bytes_per_connection": round((rss1 - rss0) / held) if held else None,
    }
    steps = []
    total_acked = 0
    sustained = 0.0
    for rate in args.rate_list:
        step = await _measure_phase(terminals, stats, pid, rate, args.step_s, 8)
        total_acked += stats.acked
        p99_ms = percentile_ms(stats.latencies_s, 99)
        log(f"  {rate:.0f}/s offered: {step['acked_per_s']}/s acked, p99 {p99_ms} ms")
        acked_per_s = stats.acked / args.step_s
        if acked_per_s >= SUSTAINED_SHARE * rate and (p99_ms or 0) < 1000 * SUSTAINED_P99_S:
            sustained = max(sustained, acked_per_s)
        steps.append(step)
    result["steps"] = steps
    best = await _measure_phase(terminals, stats, pid, None, args.max_s, args.window)
    total_acked += stats.acked
    log(f"  unpaced: {best['acked_per_s']}/s acked, {best['server_cpu_us_per_report']} us/report")
    result["unpaced"] = best
    result["rss_peak_bytes"] = proc_memory(pid)["VmHWM"]
    result["fleet_acked_total"] = total_acked
    result["sustained_per_s"] = round(sustained, 1)
    for t in terminals:
        t.close()
    await asyncio.sleep(0.5)
    return result


def _pin(pid: int, cores: set[int], pinned: bool) -> None:
    if pinned:
        os.sched_setaffinity(pid, cores)


def run_gateway(args: argparse.Namespace, work: Path, pinned: bool) -> dict[str, object]:
    """The gateway and its private broker under the fleet; checks from its /metrics."""
    (work / "broker").mkdir(exist_ok=True)
    broker = PrivateBroker(work / "broker")
    broker.start()
    gateway = GatewayProcess(
        broker.url, work / "auth.json", work / "gateway.log", args=["--summary-s", "10"]
    )
    try:
        gateway.start()
        _pin(broker.pid, {0}, pinned)
        _pin(gateway.pid, {1}, pinned)
        cpu_broker0 = proc_cpu_s(broker.pid)
        result = asyncio.run(drive(gateway.port, gateway.pid, args))
        result["broker_cpu_s"] = round(proc_cpu_s(broker.pid) - cpu_broker0, 2)
        m = gateway.metrics()
        counted = {
            "connections_opened": m.value("pledgewatch_jt808_connections_opened_total"),
            "registrations": m.value("pledgewatch_jt808_registrations_total"),
            "reports_acked": m.value("pledgewatch_jt808_reports_acked_total"),
            "gps_published": m.value("pledgewatch_jt808_readings_published_total", stream="gps"),
            "rejected": m.value("pledgewatch_jt808_rejected_total"),
        }
        result["gateway_counted"] = counted
        acked = result["fleet_acked_total"]
        held = result["terminals_held"]
        assert isinstance(held, int)
        ok = (
            counted["registrations"] >= held
            and counted["reports_acked"] == acked
            and counted["gps_published"] == acked
            and counted["rejected"] == 0
        )
        result["check"] = "ok" if ok else f"WRONG: gateway counted {counted}, fleet acked {acked}"
        assert gateway.terminate() == 0, gateway.log_tail()
    finally:
        if gateway.running():
            gateway.kill9()
        broker.stop()
    return result


def run_floor(args: argparse.Namespace, pinned: bool) -> dict[str, object]:
    """The bare asyncio server under the same fleet."""
    port = free_port()
    proc = subprocess.Popen(  # noqa: S603  # our interpreter and module
        [sys.executable, "-m", "benchmarks.jt808_floor", "--listen", f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_port(port)
        _pin(proc.pid, {1}, pinned)
        result = asyncio.run(drive(port, proc.pid, args))
        result["check"] = "ok"
    finally:
        proc.terminate()
        proc.wait(10)
    return result


def report(results: dict[str, dict[str, object]], args: argparse.Namespace) -> str:
    """The two tables: connections and memory; reports per rate."""
    names = list(results)
    get: Callable[[str, str], object] = lambda n, k: results[n].get(k)  # noqa: E731
    rows = [
        ["terminals held", *(_fmt(get(n, "terminals_held")) for n in names)],
        [
            "connect+register+auth (s)",
            *(_fmt(get(n, "connect_register_auth_s")) for n in names),
        ],
        [
            "server RSS before / after (MiB)",
            *(
                f"{int(get(n, 'rss_before_bytes')) / 2**20:.0f} / "  # type: ignore[call-overload]
                f"{int(get(n, 'rss_after_connect_bytes')) / 2**20:.0f}"  # type: ignore[call-overload]
                for n in names
            ),
        ],
        [
            "memory per connection (bytes)",
            *(_fmt(get(n, "bytes_per_connection")) for n in names),
        ],
        ["sustained reports/s", *(_fmt(get(n, "sustained_per_s")) for n in names)],
    ]
    for key, label in (
        ("acked_per_s", "unpaced reports/s"),
        ("server_cpu_us_per_report", "unpaced server CPU us/report"),
        ("reports_per_core_s", "reports/s per core (1/CPU)"),
    ):
        rows.append([label, *(_fmt(results[n]["unpaced"][key]) for n in names)])  # type: ignore[index]
    first = table(["", *names], rows)
    header = ["offered/s"]
    for n in names:
        header += [f"{n} acked/s", "p50 ms", "p99 ms", "CPU"]
    rate_rows = []
    for i, rate in enumerate(args.rate_list):
        row = [f"{rate:,.0f}"]
        for n in names:
            steps = results[n]["steps"]
            assert isinstance(steps, list)
            if i >= len(steps):
                row += ["-"] * 4
                continue
            s = steps[i]
            share = s["server_cpu_share"]
            row += [
                _fmt(s["acked_per_s"]),
                _fmt(s["latency_ms"]["p50"]),
                _fmt(s["latency_ms"]["p99"]),
                f"{100 * share:.0f}%" if share is not None else "-",
            ]
        rate_rows.append(row)
    second = table(header, rate_rows)
    return f"{first}\n\n{second}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the tables, write `<out-dir>/bench_jt808.json`."""
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    started = time.perf_counter()
    info = machine_info()
    nofile = raise_fd_limit()
    pinned = not args.no_pin and (os.cpu_count() or 1) >= 2
    own_cores = os.sched_getaffinity(0)
    _pin(0, {0}, pinned)
    results: dict[str, dict[str, object]] = {}
    try:
        with ExitStack() as stack:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pw-jt808-")))
            log(f"gateway: {args.terminals} terminals (open files allowed: {nofile})")
            results["gateway"] = run_gateway(args, work, pinned)
            if not args.no_floor:
                log("floor: the same fleet against a bare asyncio server")
                results["floor"] = run_floor(args, pinned)
    finally:
        os.sched_setaffinity(0, own_cores)
    text = report(results, args)
    print(text)
    checks = {name: str(r["check"]) for name, r in results.items()}
    gw = results["gateway"]
    held = int(gw["terminals_held"])  # type: ignore[call-overload]
    notes = []
    if held < args.terminals:
        ports = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        notes.append(
            f"only {held} of {args.terminals} terminals connected: open files allowed "
            f"{nofile} per process, local ports {'-'.join(ports)}"
        )
    doc: dict[str, object] = {
        "benchmark": "bench_jt808",
        "checks_passed": all(v == "ok" for v in checks.values()),
        "checks": checks,
        "machine": info,
        "parameters": {
            "terminals": args.terminals,
            "rates": args.rate_list,
            "step_s": args.step_s,
            "max_s": args.max_s,
            "window": args.window,
            "seed": args.seed,
            "pinned": pinned,
            "quick": args.quick,
            "open_files_allowed": nofile,
        },
        "targets": {
            "connections": TARGET_CONNECTIONS,
            "reports_per_s_one_core": TARGET_REPORTS_PER_S,
            "sustained_rule": f">= {SUSTAINED_SHARE:.0%} acked, p99 < {SUSTAINED_P99_S} s",
        },
        "results": results,
        "notes": notes,
        "table": text,
        "elapsed_s": round(time.perf_counter() - started, 1),
    }
    write_json(args.out_dir / "bench_jt808.json", doc)
    for note in notes:
        print(note, file=sys.stderr)
    return exit_status(doc["checks_passed"])


if __name__ == "__main__":
    sys.exit(main())
