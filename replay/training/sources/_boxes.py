"""Helpers the sources share: ground-truth documents to BoxLabels, the training/ignored split."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from replay.training.samples import TRAINING_CLASSES, BoxLabel

__all__ = ["box_from_truth", "split_training"]


def box_from_truth(doc: Mapping[str, Any]) -> BoxLabel:
    """A BoxLabel from a ground-truth box document (`replay.drive` ground-truth channel,
    `<drive>.gt.jsonl` line): `label`, `center`, `size`, `yaw`, and when present `velocity`
    (over ground, vehicle axes), `id`, `camera_visible`, `lidar_points`.

    Raises KeyError, TypeError or ValueError on a malformed document (the caller names it)."""
    center = tuple(float(v) for v in doc["center"])
    size = tuple(float(v) for v in doc["size"])
    if len(center) != 3 or len(size) != 3:
        raise ValueError(f"center and size need 3 values, got {len(center)} and {len(size)}")
    velocity = doc.get("velocity")
    vel = (math.nan, math.nan) if velocity is None else (float(velocity[0]), float(velocity[1]))
    return BoxLabel(
        label=str(doc["label"]),
        center=(center[0], center[1], center[2]),
        size=(size[0], size[1], size[2]),
        yaw=float(doc["yaw"]),
        velocity=vel,
        track_id=int(doc.get("id", -1)),
        visibility=float(doc.get("camera_visible", math.nan)),
        lidar_points=int(doc.get("lidar_points", -1)),
    )


def split_training(boxes: Iterable[BoxLabel]) -> tuple[tuple[BoxLabel, ...], tuple[BoxLabel, ...]]:
    """(boxes of the training classes, the other boxes: for a trainer to mask, not to learn)."""
    kept: list[BoxLabel] = []
    ignored: list[BoxLabel] = []
    for box in boxes:
        (kept if box.label in TRAINING_CLASSES else ignored).append(box)
    return tuple(kept), tuple(ignored)
