"""Which trackers of a fleet speak JT/T 808, and the ids they go by then.

A fleet spec's `jt808_share` asks for that share of the fleet's trackers. Only a wired unit
can be a JT/T 808 terminal (ACC sense for ignition; a hidden battery unit or a phone has
none), and a car whose story needs what a terminal does not send (a VIN: `vin_swap`) keeps
MQTT; the rest are drawn with the seed and the id prefix. Each chosen tracker gets a
terminal number (`simulator.jt808_wire.terminal_numbers`) and becomes
`jt808-{number without leading zeros}` (DESIGN §9) in its car, its loans and the alerts its
car must raise. A terminal stamps readings with whole seconds, so those alerts may come up
to 999 ms early: their windows open at the whole second. Pure.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Final

from devices.jt808.header import device_id
from simulator.car import Car, LoanSpec, ScenarioKind
from simulator.jt808_wire import terminal_numbers
from simulator.trackers import TrackerModel
from simulator.truth import Expectation

NEEDS_MQTT: Final = frozenset({ScenarioKind.VIN_SWAP})
"""Stories that need a field no JT/T 808 report carries."""


@dataclass(frozen=True, slots=True)
class Candidate:
    """A tracker of the fleet, in car order: its id, its model and its car's story."""

    device_id: str
    model: TrackerModel
    scenario: ScenarioKind | None


def can_speak_jt808(c: Candidate) -> bool:
    """Whether the tracker can be a JT/T 808 terminal without changing its car's alerts."""
    return c.model is TrackerModel.WIRED and c.scenario not in NEEDS_MQTT


def choose_terminals(
    candidates: Sequence[Candidate], share: float, seed: str, id_prefix: str
) -> dict[str, str]:
    """The trackers that speak JT/T 808, each with its terminal number: `share` of all the
    candidates (rounded), or every one that can if fewer can. Seeded by `seed` and
    `id_prefix` (another prefix, other numbers)."""
    wanted = round(share * len(candidates))
    able = [c.device_id for c in candidates if can_speak_jt808(c)]
    rng = random.Random(f"{seed}:jt808:{id_prefix}")
    chosen = rng.sample(able, min(wanted, len(able)))
    return dict(zip(chosen, terminal_numbers(len(chosen), f"{seed}:{id_prefix}"), strict=True))


def terminal_ids(numbers: Mapping[str, str]) -> dict[str, str]:
    """Old device id -> the `jt808-…` id of its terminal number."""
    return {old: device_id(number) for old, number in numbers.items()}


def rename_loan(loan: LoanSpec, ids: Mapping[str, str]) -> LoanSpec:
    """`loan` with its trackers' new ids."""
    return replace(loan, device_ids=tuple(ids.get(d, d) for d in loan.device_ids))


def rename_car(car: Car, ids: Mapping[str, str]) -> Car:
    """`car` with its trackers, loans and required alerts under the new ids; when one of its
    trackers is a terminal, every required window opens at its whole second."""
    if not any(t.device_id in ids for t in car.trackers):
        return car
    return replace(
        car,
        trackers=tuple(
            replace(t, device_id=ids.get(t.device_id, t.device_id)) for t in car.trackers
        ),
        loans=tuple(rename_loan(loan, ids) for loan in car.loans),
        required=tuple(_renamed(e, ids) for e in car.required),
    )


def _renamed(exp: Expectation, ids: Mapping[str, str]) -> Expectation:
    lo = exp.ts_min_ms
    return replace(
        exp,
        device_id=ids.get(exp.device_id, exp.device_id) if exp.device_id else None,
        ts_min_ms=None if lo is None else lo - lo % 1000,
    )
