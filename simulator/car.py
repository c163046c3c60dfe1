"""A pledged car in a scenario run: its story's kind, its setup, its loans and trackers.

`CarSetup` is what a builder (`simulator.scenarios`) gets; `Car` is what it returns, with
the alerts the car guarantees (`required`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import StrEnum

from simulator.city import Area, City
from simulator.trackers import Tracker
from simulator.truth import Expectation, Role
from simulator.vehicles import SimulatedVehicle


class ScenarioKind(StrEnum):
    """The scripted stories a car can play."""

    STAYS_HOME = "stays_home"
    LEAVES_ZONE = "leaves_zone"
    PAWNSHOP_DWELL = "pawnshop_dwell"
    TOWED = "towed"
    TRACKER_REMOVED = "tracker_removed"
    VIN_SWAP = "vin_swap"
    SPOOFED_JUMP = "spoofed_jump"
    POWER_CUT = "power_cut"
    GOES_SILENT = "goes_silent"
    SILENT_OUTSIDE = "silent_outside"
    IMPOUNDED = "impounded"
    DOUBLE_PLEDGE = "double_pledge"
    FLATBED_TOW = "flatbed_tow"
    BRIEF_VISIT = "brief_visit"
    QUICK_EXIT = "quick_exit"


@dataclass(frozen=True, slots=True)
class LoanSpec:
    """A loan as `PUT /v1/loans/{loan_id}` takes it (DESIGN §3), plus its id."""

    loan_id: str
    vin: str
    device_ids: tuple[str, ...]
    zone_ids: tuple[str, ...]
    principal: int
    vehicle: SimulatedVehicle
    mileage_km: float

    def to_json(self) -> dict[str, object]:
        """The loan as a `loans.json` element."""
        return {
            "loan_id": self.loan_id,
            "vin": self.vin,
            "device_ids": list(self.device_ids),
            "zone_ids": list(self.zone_ids),
            "status": "active",
            "principal": self.principal,
            "vehicle": {
                "make": self.vehicle.make,
                "model": self.vehicle.model,
                "year": self.vehicle.year,
                "mileage_km": self.mileage_km,
                "value": self.vehicle.value,
            },
        }


@dataclass(frozen=True, slots=True)
class Car:
    """A car in a run: its loans, trackers, and the alerts it guarantees."""

    car_id: str
    role: Role
    scenario: ScenarioKind | None
    vehicle: SimulatedVehicle
    zone: Area
    loans: tuple[LoanSpec, ...]
    trackers: tuple[Tracker, ...]
    required: tuple[Expectation, ...] = ()


class DoesNotFit(RuntimeError):  # noqa: N818  # reads as the condition it is
    """A scenario's story (and the alerts it guarantees) does not fit in the run's span."""


@dataclass(frozen=True, slots=True)
class CarSetup:
    """What a builder gets: the city, the car's number (1-based) and home zone, the run's span,
    and the VINs already taken in the run (shared, grows as cars are built).

    A fleet (`simulator.fleet_plan`) also sets: `id_prefix` (ids that stay unique in a fleet of any
    size), `vehicle` (drawn when the fleet is planned), `pace` (the factor on a story's
    idle times, below 1 to fit a span shorter than two hours; the times the rules need are
    kept), `offline_ms` (the silence, in event time, that the engine reports offline) and
    `lead_s` (to start the story later in a run longer than it).
    """

    city: City
    car_no: int
    zone: Area
    t0_ms: int
    t1_ms: int
    vins: set[str]
    id_prefix: str | None = None
    vehicle: SimulatedVehicle | None = None
    pace: float = 1.0
    offline_ms: int = 1_800_000
    lead_s: float = 0.0  # parked this long before the story starts

    @property
    def car_id(self) -> str:
        """`car-07` (a fleet's: `sim-car00007`)."""
        if self.id_prefix is not None:
            return f"{self.id_prefix}-car{self.car_no:05d}"
        return f"car-{self.car_no:02d}"

    @property
    def device_id(self) -> str:
        """The car's (first) hard-wired tracker: `trk-007` (a fleet's: `sim-00007`)."""
        if self.id_prefix is not None:
            return f"{self.id_prefix}-{self.car_no:05d}"
        return f"trk-{self.car_no:03d}"

    @property
    def loan_id(self) -> str:
        """The car's (first) loan: `L-1007` (a fleet's: `sim-L00007`)."""
        if self.id_prefix is not None:
            return f"{self.id_prefix}-L{self.car_no:05d}"
        return f"L-{1000 + self.car_no}"

    @property
    def second_loan_id(self) -> str:
        """Another lender's loan on the same car: `L-2007` (a fleet's: `sim-L00007-2`)."""
        if self.id_prefix is not None:
            return f"{self.loan_id}-2"
        return f"L-{2000 + self.car_no}"

    def idle_s(self, rng: random.Random, lo_s: float, hi_s: float, floor_s: float = 0.0) -> float:
        """An idle time drawn from `lo_s`..`hi_s` at the setup's pace, at least `floor_s`."""
        return max(rng.uniform(lo_s, hi_s) * self.pace, floor_s)


def make_loan(
    rng: random.Random,
    vehicle: SimulatedVehicle,
    loan_id: str,
    device_ids: tuple[str, ...],
    zone: Area,
) -> LoanSpec:
    """A loan on `vehicle` of 50-70 % of its value, permitted in `zone`."""
    return LoanSpec(
        loan_id,
        vehicle.vin,
        device_ids,
        (zone.fence_id,),
        int(round(vehicle.value * rng.uniform(0.5, 0.7), -3)),
        vehicle,
        round(vehicle.odometer_km - rng.uniform(500.0, 5000.0), 0),
    )
