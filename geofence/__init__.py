"""Fences and the indexes that answer "which fences hold this point" and "which cars are here"."""

from geofence.fence import (
    Fence,
    FenceError,
    FenceKind,
    fence_to_feature,
    load_fences,
    parse_feature_collection,
    parse_fence,
)
from geofence.index import FenceHit, FenceIndex, MarginHits
from geofence.positions import PositionIndex

__all__ = [
    "Fence",
    "FenceError",
    "FenceHit",
    "FenceIndex",
    "FenceKind",
    "MarginHits",
    "PositionIndex",
    "fence_to_feature",
    "load_fences",
    "parse_feature_collection",
    "parse_fence",
]
