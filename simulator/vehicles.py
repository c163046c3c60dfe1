"""Synthetic cars: valid 17-character VINs (ISO 3779 with the check digit) and loan terms."""

from __future__ import annotations

import random
from dataclasses import dataclass

from lending.model import VIN_ALPHABET

_TRANSLITERATION = {
    **{str(d): d for d in range(10)},
    **dict(zip("ABCDEFGH", range(1, 9), strict=True)),
    **dict(zip("JKLMN", range(1, 6), strict=True)),
    "P": 7,
    "R": 9,
    **dict(zip("STUVWXYZ", range(2, 10), strict=True)),
}
_WEIGHTS = (8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2)
_YEAR_CODES = {2018: "J", 2019: "K", 2020: "L", 2021: "M", 2022: "N", 2023: "P", 2024: "R"}


@dataclass(frozen=True, slots=True)
class Model:
    """A car model sold in China: its maker's WMI and its price new, in CNY."""

    wmi: str
    make: str
    model: str
    price_new: int


CATALOG: tuple[Model, ...] = (
    Model("LSV", "Volkswagen", "Lavida", 120_000),
    Model("LSV", "Volkswagen", "Tiguan L", 230_000),
    Model("LFV", "Volkswagen", "Sagitar", 140_000),
    Model("LFV", "Audi", "A4L", 320_000),
    Model("LSG", "Buick", "GL8", 280_000),
    Model("LVG", "Toyota", "Camry", 200_000),
    Model("LHG", "Honda", "Accord", 190_000),
    Model("LGB", "Nissan", "Sylphy", 110_000),
    Model("LBV", "BMW", "5 Series Li", 450_000),
    Model("LGX", "BYD", "Han", 230_000),
    Model("LB3", "Geely", "Boyue", 120_000),
)


@dataclass(frozen=True, slots=True)
class SimulatedVehicle:
    """One car: VIN, what it is, its odometer and what a lender values it at (CNY)."""

    vin: str
    make: str
    model: str
    year: int
    odometer_km: float
    value: int


def check_digit(vin: str) -> str:
    """The ISO 3779 check character (position 9) of a 17-character VIN."""
    total = sum(_TRANSLITERATION[c] * w for c, w in zip(vin, _WEIGHTS, strict=True))
    rem = total % 11
    return "X" if rem == 10 else str(rem)


def make_vin(rng: random.Random, wmi: str, year: int) -> str:
    """A valid VIN for maker `wmi` and model `year`, with a correct check digit."""
    vds = "".join(rng.choice(VIN_ALPHABET) for _ in range(5))
    plant = rng.choice("ABCDEFGHJKLMNPRSTUVWXYZ")
    serial = f"{rng.randrange(1_000_000):06d}"
    draft = f"{wmi}{vds}0{_YEAR_CODES[year]}{plant}{serial}"
    return draft[:8] + check_digit(draft) + draft[9:]


def make_vehicle(rng: random.Random, taken: set[str]) -> SimulatedVehicle:
    """A random car whose VIN is not in `taken` (the VIN is added to it)."""
    model = rng.choice(CATALOG)
    year = rng.choice(tuple(_YEAR_CODES))
    vin = make_vin(rng, model.wmi, year)
    while vin in taken:
        vin = make_vin(rng, model.wmi, year)
    taken.add(vin)
    age = 2026 - year
    odometer_km = round(age * rng.uniform(9_000, 22_000) + rng.uniform(0, 3_000), 1)
    value = int(model.price_new * 0.85**age * rng.uniform(0.9, 1.05) / 1000) * 1000
    return SimulatedVehicle(vin, model.make, model.model, year, odometer_km, value)
