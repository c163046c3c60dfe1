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

    `update` and `remove` are O(log n). Not thread-safe: one writer, or a lock around it.
    """

    __slots__ = ("_by_device", "_devices", "_next_id", "_tree")

    def __init__(self) -> None:
        """An empty index."""
        self._tree = Index()
        self._by_device: dict[str, tuple[int, float, float]] = {}  # device -> (rtree id, lat, lon)
        self._devices: dict[int, str] = {}  # rtree id -> device
        self._next_id = 0

    def __len__(self) -> int:
        """Number of devices with a position."""
        return len(self._by_device)

    def __contains__(self, device_id: object) -> bool:
        """Whether the device has a position."""
        return device_id in self._by_device

    def update(self, device_id: str, lat: float, lon: float) -> None:
        """Set (or move) the device's latest position, degrees."""
        _check_point(lat, lon)
        lat, lon = float(lat), float(lon)
        entry = self._by_device.get(device_id)
        if entry is None:
            rid = self._next_id
            self._next_id += 1
            self._devices[rid] = device_id
        else:
            rid, old_lat, old_lon = entry
            if (old_lat, old_lon) == (lat, lon):
                return
            self._tree.delete(rid, (old_lon, old_lat, old_lon, old_lat))
        self._tree.insert(rid, (lon, lat, lon, lat))
        self._by_device[device_id] = (rid, lat, lon)

    def remove(self, device_id: str) -> bool:
        """Forget the device's position; False if it had none."""
        entry = self._by_device.pop(device_id, None)
        if entry is None:
            return False
        rid, lat, lon = entry
        self._tree.delete(rid, (lon, lat, lon, lat))
        del self._devices[rid]
        return True

    def position(self, device_id: str) -> tuple[float, float] | None:
        """The device's latest (lat, lon), or None."""
        entry = self._by_device.get(device_id)
        return None if entry is None else (entry[1], entry[2])

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
