"""The replay benchmark's seeded fleet: fences, one loan per device, and its readings.

`generate` writes `readings.jsonl` (DESIGN §7 lines: a fix every `--interval-s` per
device, a few vib and status lines, merged by event time), `fences.geojson` and
`loans.json` into a directory. The engine benchmark plays the same fleet.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

from benchmarks.common import log, random_fences
from geofence.fence import FenceKind
from geofence.geo import EARTH_RADIUS_M

T0_MS = 1_796_000_000_000
"""Event time of the first reading: 2026-11-30T00:53:20Z."""

VIN_ALPHABET = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789"
"""VIN characters: digits and letters except I, O and Q."""


@dataclass(frozen=True, slots=True)
class Inputs:
    """The generated files and what is in them."""

    readings: Path
    fences: Path
    loans: Path
    lines: int
    by_stream: dict[str, int]
    event_span_s: float
    region_side_km: float


def random_vins(rng: np.random.Generator, n: int) -> list[str]:
    """`n` distinct, valid 17-character VINs (no I, O, Q)."""
    alphabet = np.array(list(VIN_ALPHABET))
    vins: list[str] = []
    seen: set[str] = set()
    while len(vins) < n:
        for row in alphabet[rng.integers(0, len(alphabet), (n - len(vins), 17))]:
            vin = "".join(row.tolist())
            if vin not in seen:
                seen.add(vin)
                vins.append(vin)
    return vins


def generate(args: argparse.Namespace, work: Path) -> Inputs:
    """Write readings.jsonl, fences.geojson and loans.json for a seeded fleet into `work`."""
    rng = np.random.default_rng(args.seed)
    n_dev = args.devices
    log(f"generating {args.fences} fences (seeded) and parsing them")
    # No holes: each car starts at its zone's centre, which must be inside the zone.
    fs = random_fences(rng, args.fences, args.coverage, hole_share=0.0)
    zone_idx = np.flatnonzero(np.array([f.kind is FenceKind.ZONE for f in fs.fences]))
    home = zone_idx[rng.integers(0, len(zone_idx), n_dev)]
    steps = max(1, args.readings // n_dev)
    interval_ms = args.interval_s * 1000
    log(f"generating {n_dev} devices x {steps} fixes every {args.interval_s} s")

    # Car speeds: a share stand (speed 0; a fifth by default), the rest random-walk between
    # 0 and 110 km/h.
    moving = rng.random(n_dev) >= args.standing
    speed = np.clip(
        rng.normal(50.0, 20.0, n_dev)[:, None]
        + np.cumsum(rng.normal(0.0, 8.0, (n_dev, steps)), axis=1),
        0.0,
        110.0,
    )
    speed[~moving] = 0.0
    heading = rng.uniform(0, 2 * math.pi, n_dev)[:, None] + np.cumsum(
        rng.normal(0.0, 0.35, (n_dev, steps)), axis=1
    )
    dist_m = speed / 3.6 * args.interval_s
    dist_m[:, 0] = 0.0  # the first fix is the start
    north_m = np.cumsum(dist_m * np.cos(heading), axis=1)
    east_m = np.cumsum(dist_m * np.sin(heading), axis=1)
    lat0 = fs.centers[home, 0][:, None]
    lon0 = fs.centers[home, 1][:, None]
    lats = lat0 + np.degrees(north_m / EARTH_RADIUS_M)
    lons = lon0 + np.degrees(east_m / (EARTH_RADIUS_M * np.cos(np.radians(lat0))))
    phase = rng.integers(0, interval_ms, n_dev)
    ts = T0_MS + phase[:, None] + np.arange(steps)[None, :] * interval_ms

    # A few vibration and status lines, between a device's fixes; never two of one stream at
    # the same time on one device (that would be a duplicate, which the engine drops).
    n_extra = round(n_dev * steps * args.vib_share) + round(n_dev * steps * args.status_share)
    extra_kind = np.where(np.arange(n_extra) < round(n_dev * steps * args.vib_share), 1, 2)
    extra_dev = rng.integers(0, n_dev, n_extra)
    extra_step = rng.integers(0, steps, n_extra)
    extra_ts = ts[extra_dev, extra_step] + rng.integers(1, min(interval_ms, 10_000), n_extra)
    _, first = np.unique(
        np.column_stack([extra_dev, extra_ts, extra_kind]), axis=0, return_index=True
    )
    first.sort()
    extra_kind, extra_dev, extra_ts = extra_kind[first], extra_dev[first], extra_ts[first]
    n_vib = int(np.count_nonzero(extra_kind == 1))
    n_status = len(extra_kind) - n_vib
    extra_g = rng.uniform(0.05, 3.0, len(extra_kind))
    extra_power = rng.random(len(extra_kind)) >= 0.1
    vins = random_vins(rng, n_dev)

    # Merge by event time (ties by device, then gps before the others): a dense, ordered stream.
    n_gps = n_dev * steps
    kind = np.concatenate([np.zeros(n_gps, np.int64), extra_kind])
    all_ts = np.concatenate([ts.ravel(), extra_ts])
    all_dev = np.concatenate([np.repeat(np.arange(n_dev), steps), extra_dev])
    ref = np.concatenate([np.arange(n_gps), np.arange(len(extra_kind))])
    order = np.lexsort((kind, all_dev, all_ts))
    readings_path = work / "readings.jsonl"
    log(f"writing {len(order)} lines to {readings_path}")
    lats_l, lons_l, speed_l = lats.ravel().tolist(), lons.ravel().tolist(), speed.ravel().tolist()
    names = [f"trk-{i:06d}" for i in range(n_dev)]
    with readings_path.open("wb") as out:
        for i in order.tolist():
            dev = int(all_dev[i])
            k = int(kind[i])
            j = int(ref[i])
            t = int(all_ts[i])
            payload: dict[str, object]
            if k == 0:
                stream = "gps"
                payload = {
                    "ts": t,
                    "lat": round(lats_l[j], 7),
                    "lon": round(lons_l[j], 7),
                    "speed_kmh": round(speed_l[j], 1),
                    "ignition": True,
                    "seq": j % steps,
                }
            elif k == 1:
                stream = "vib"
                payload = {"ts": t, "g": round(float(extra_g[j]), 2), "duration_ms": 40}
            else:
                stream = "status"
                payload = {
                    "ts": t,
                    "ext_power": bool(extra_power[j]),
                    "battery_v": 12.6,
                    "vin": vins[dev],
                }
            out.write(
                orjson.dumps({"topic": f"telematics/{names[dev]}/{stream}", "payload": payload})
                + b"\n"
            )
    fences_path = work / "fences.geojson"
    fences_path.write_bytes(orjson.dumps({"type": "FeatureCollection", "features": fs.features}))
    loans_path = work / "loans.json"
    loans = [
        {
            "loan_id": f"L-{i:06d}",
            "vin": vins[i],
            "device_ids": [names[i]],
            "zone_ids": [fs.fences[int(home[i])].fence_id],
            "status": "active",
        }
        for i in range(n_dev)
    ]
    loans_path.write_bytes(orjson.dumps(loans))
    return Inputs(
        readings=readings_path,
        fences=fences_path,
        loans=loans_path,
        lines=len(order),
        by_stream={"gps": n_gps, "vib": n_vib, "status": n_status},
        event_span_s=float(all_ts.max() - all_ts.min()) / 1000 if len(all_ts) else 0.0,
        region_side_km=fs.region.side_m / 1000,
    )
