"""The latest position of each device in a dynamic R-tree: "which cars are in this lot now?"."""

from __future__ import annotations

import math

import numpy as np
import shapely
from numpy.typing import NDArray
from rtree.index import Index

from geofence.fence import Fence
from geofence.geo import haversine_m_np, metres_to_degrees

_Box = tuple[float, float, float, float]


class PositionIndex:
    """Latest (lat, lon) in WGS84 degrees per device id, indexed by an `rtree` R-tree.

    Writes are O(1): they are recorded and reach the tree when a query needs it, one by one
    when few are pending, or by rebuilding the tree in one bulk load when many are (an
    R-tree delete costs hundreds of microseconds at scale; the engine moves thousands of
    cars a second and asks where they are a few times a minute). Not thread-safe: one
    writer, or a lock around it.
    """

    __slots__ = ("_by_device", "_devices", "_latest", "_next_id", "_pending", "_tree")

    def __init__(self) -> None:
        """An empty index."""
        self._tree = Index()
        self._by_device: dict[str, tuple[int, float, float]] = {}  # what the tree holds
        self._devices: dict[int, str] = {}  # rtree id -> device
        self._next_id = 0
        self._latest: dict[str, tuple[float, float]] = {}  # the truth: device -> (lat, lon)
        self._pending: set[str] = set()  # devices whose tree entry is stale

    def __len__(self) -> int:
        """Number of devices with a position."""
        return len(self._latest)

    def __contains__(self, device_id: object) -> bool:
        """Whether the device has a position."""
        return device_id in self._latest

    def update(self, device_id: str, lat: float, lon: float) -> None:
        """Set (or move) the device's latest position, degrees."""
        _check_point(lat, lon)
        self._latest[device_id] = (float(lat), float(lon))
        self._pending.add(device_id)

    def remove(self, device_id: str) -> bool:
        """Forget the device's position; False if it had none."""
        if self._latest.pop(device_id, None) is None:
            return False
        self._pending.add(device_id)
        return True

    def position(self, device_id: str) -> tuple[float, float] | None:
        """The device's latest (lat, lon), or None."""
        return self._latest.get(device_id)

    def _sync(self) -> None:
        """Bring the tree up to date with the recorded writes."""
        if not self._pending:
            return
        if len(self._pending) > max(256, len(self._by_device) // 8):
            self._rebuild()
            return
        for device_id in self._pending:
            entry = self._by_device.pop(device_id, None)
            if entry is not None:
                rid, old_lat, old_lon = entry
                self._tree.delete(rid, (old_lon, old_lat, old_lon, old_lat))
                del self._devices[rid]
            latest = self._latest.get(device_id)
            if latest is not None:
                rid = self._next_id
                self._next_id += 1
                lat, lon = latest
                self._tree.insert(rid, (lon, lat, lon, lat))
                self._by_device[device_id] = (rid, lat, lon)
                self._devices[rid] = device_id
        self._pending.clear()

    def _rebuild(self) -> None:
        self._by_device = {
            d: (i, lat, lon) for i, (d, (lat, lon)) in enumerate(self._latest.items())
        }
        self._devices = {i: d for d, (i, _, _) in self._by_device.items()}
        self._next_id = len(self._by_device)
        entries = ((i, (lon, lat, lon, lat), None) for i, lat, lon in self._by_device.values())
        self._tree = Index(entries) if self._by_device else Index()
        self._pending.clear()

    def inside(self, fence: Fence) -> list[str]:
        """Ids of the devices whose latest position is in the fence's interior, sorted."""
        min_lon, min_lat, max_lon, max_lat = fence.geometry.bounds
        devices = self._candidates([(min_lon, min_lat, max_lon, max_lat)])
        if not devices:
            return []
        lats, lons = self._coords(devices)
        mask = shapely.contains_xy(fence.geometry, lons, lats)
        return sorted(d for d, m in zip(devices, mask.tolist(), strict=True) if m)

    def near(self, lat: float, lon: float, radius_m: float) -> list[tuple[str, float]]:
        """(device id, metres) of the devices within `radius_m` metres (great-circle distance,
        inclusive), sorted by distance then id."""
        _check_point(lat, lon)
        if not (radius_m >= 0.0 and math.isfinite(radius_m)):
            msg = f"radius_m must be finite and >= 0, got {radius_m!r}"
            raise ValueError(msg)
        dlat, dlon = metres_to_degrees(lat, radius_m)
        min_lat, max_lat = max(lat - dlat, -90.0), min(lat + dlat, 90.0)
        boxes: list[_Box]
        if dlon >= 180.0:
            boxes = [(-180.0, min_lat, 180.0, max_lat)]
        else:
            west, east = lon - dlon, lon + dlon
            boxes = [(max(west, -180.0), min_lat, min(east, 180.0), max_lat)]
            if west < -180.0:  # wrap across the antimeridian
                boxes.append((west + 360.0, min_lat, 180.0, max_lat))
            if east > 180.0:
                boxes.append((-180.0, min_lat, east - 360.0, max_lat))
        devices = self._candidates(boxes)
        if not devices:
            return []
        lats, lons = self._coords(devices)
        distances = haversine_m_np(lat, lon, lats, lons).tolist()
        found = [(d, m) for d, m in zip(devices, distances, strict=True) if m <= radius_m]
        found.sort(key=lambda item: (item[1], item[0]))
        return found

    def _candidates(self, boxes: list[_Box]) -> list[str]:
        self._sync()
        rids: set[int] = set()
        for box in boxes:
            rids.update(self._tree.intersection(box))
        return [self._devices[rid] for rid in rids]

    def _coords(self, devices: list[str]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        entries = [self._by_device[d] for d in devices]
        lats = np.fromiter((e[1] for e in entries), dtype=np.float64, count=len(entries))
        lons = np.fromiter((e[2] for e in entries), dtype=np.float64, count=len(entries))
        return lats, lons


def _check_point(lat: float, lon: float) -> None:
    if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):  # also rejects NaN
        msg = f"({lat!r}, {lon!r}) is not a valid lat, lon in degrees"
        raise ValueError(msg)
