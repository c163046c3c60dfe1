"""A batch of decoded readings as parallel columns, in arrival order.

What the batch step reads with numpy (`engine.runtime.quiet_plan`): which device, which
stream, when, where, how fast, and the ignition and `seq` each reading reports. A column
holds NaN (or None) where a reading has no such field.

`ReadingBatch` is the batch as a sequence of readings that builds each gps fix only when
it is asked for: the columnar decoder (`devices.columnar`) fills the columns directly, and
a fix the batch step settles in bulk is never built (a frozen `GpsFix` costs microseconds).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar, overload

import numpy as np
from numpy.typing import NDArray

from devices.readings import GpsFix, Reading

T = TypeVar("T")


@dataclass(frozen=True, slots=True, eq=False)
class ReadingColumns:
    """Readings as columns. Units as in the readings: epoch ms, WGS84 degrees, km/h.

    `ts_list`, `lat_list` and `lon_list` are the same values as Python numbers (what a
    state keeps); `extra` holds, for gps rows, the fields the core does not read
    (heading_deg, hdop, sats, odometer_km, accuracy_m), to build the fix from.
    """

    device_ids: list[str]
    gps: NDArray[np.bool_]
    ts_ms: NDArray[np.int64]
    lat: NDArray[np.float64]  # NaN where not gps
    lon: NDArray[np.float64]  # NaN where not gps
    speed_kmh: NDArray[np.float64]  # NaN where not gps or not reported
    ignition: list[bool | None]  # as reported (None: not reported)
    seq: list[int | None]
    ts_list: list[int]
    lat_list: list[float]
    lon_list: list[float]
    speed_list: list[float | None]
    extra: list[tuple[float | None, float | None, int | None, float | None, float | None]]

    def __len__(self) -> int:
        """Number of readings."""
        return len(self.device_ids)

    def fix(self, i: int) -> GpsFix:
        """The gps fix of row `i`, built from the columns."""
        heading, hdop, sats, odometer, accuracy = self.extra[i]
        return GpsFix(
            self.device_ids[i],
            self.ts_list[i],
            self.lat_list[i],
            self.lon_list[i],
            self.speed_list[i],
            heading,
            hdop,
            sats,
            self.ignition[i],
            odometer,
            self.seq[i],
            accuracy,
        )


_NO_EXTRA = (None, None, None, None, None)


def columns_of(readings: Sequence[Reading]) -> ReadingColumns:
    """The columns of decoded readings."""
    if isinstance(readings, ReadingBatch):
        return readings.columns
    n = len(readings)
    nan = math.nan
    gps = np.fromiter((type(r) is GpsFix for r in readings), np.bool_, n)
    lat_list = [nan] * n
    lon_list = [nan] * n
    speed_list: list[float | None] = [None] * n
    seq: list[int | None] = [None] * n
    extra: list[tuple[float | None, float | None, int | None, float | None, float | None]]
    extra = [_NO_EXTRA] * n
    for i, r in enumerate(readings):
        if type(r) is GpsFix:
            lat_list[i], lon_list[i], speed_list[i], seq[i] = r.lat, r.lon, r.speed_kmh, r.seq
            extra[i] = (r.heading_deg, r.hdop, r.sats, r.odometer_km, r.accuracy_m)
    ts_list = [r.ts_ms for r in readings]
    return ReadingColumns(
        device_ids=[r.device_id for r in readings],
        gps=gps,
        ts_ms=np.array(ts_list, dtype=np.int64),
        lat=np.array(lat_list, dtype=np.float64),
        lon=np.array(lon_list, dtype=np.float64),
        speed_kmh=np.array([nan if v is None else v for v in speed_list], dtype=np.float64),
        ignition=[getattr(r, "ignition", None) for r in readings],
        seq=seq,
        ts_list=ts_list,
        lat_list=lat_list,
        lon_list=lon_list,
        speed_list=speed_list,
        extra=extra,
    )


class ReadingBatch(Sequence[Reading]):
    """Readings over columns: row `i` is `built[i]`, or a gps fix built (once) when asked."""

    __slots__ = ("built", "columns")

    def __init__(self, columns: ReadingColumns, built: list[Reading | None]) -> None:
        """`built[i]` None: row `i` is a gps fix to build from the columns."""
        self.columns = columns
        self.built = built

    def __len__(self) -> int:
        """Number of readings."""
        return len(self.built)

    @overload
    def __getitem__(self, i: int) -> Reading: ...

    @overload
    def __getitem__(self, i: slice) -> list[Reading]: ...

    def __getitem__(self, i: int | slice) -> Reading | list[Reading]:
        """Row `i` (built now if it was not), or a list of rows."""
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self.built)))]
        r = self.built[i]
        if r is None:
            r = self.built[i] = self.columns.fix(i)
        return r

    def __iter__(self) -> Iterator[Reading]:
        """Every row, in order."""
        return (self[i] for i in range(len(self.built)))

    def take(self, rows: Sequence[int]) -> ReadingBatch:
        """The batch of the given rows, in that order."""
        idx = np.asarray(rows, dtype=np.intp)
        c = self.columns

        def pick(values: list[T]) -> list[T]:
            return [values[i] for i in rows]

        columns = ReadingColumns(
            device_ids=pick(c.device_ids),
            gps=c.gps[idx],
            ts_ms=c.ts_ms[idx],
            lat=c.lat[idx],
            lon=c.lon[idx],
            speed_kmh=c.speed_kmh[idx],
            ignition=pick(c.ignition),
            seq=pick(c.seq),
            ts_list=pick(c.ts_list),
            lat_list=pick(c.lat_list),
            lon_list=pick(c.lon_list),
            speed_list=pick(c.speed_list),
            extra=pick(c.extra),
        )
        return ReadingBatch(columns, pick(self.built))


def without(readings: Sequence[Reading], drop: Sequence[int]) -> Sequence[Reading]:
    """The readings but those at the (ascending) positions `drop`, in order."""
    if not drop:
        return readings
    gone = set(drop)
    keep = [i for i in range(len(readings)) if i not in gone]
    if isinstance(readings, ReadingBatch):
        return readings.take(keep)
    return [readings[i] for i in keep]
