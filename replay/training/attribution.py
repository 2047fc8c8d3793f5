"""What the camera contributes to the learned engine's detections, on training samples with
ground truth (synthetic drives): the walk that `benchmarks/attribution.py` tabulates and the
attribution test checks.

Each sample is painted with the camera detector's boxes and run through the engine once; every
detection it publishes comes with its score, its camera-free score (the same peak with the
painted channels removed, in the same call), its bearing, whether it lies within ``MATCH_M`` of
a ground-truth object and, if so, whether the camera's detector named that object (a 2D box of
the detection's class covers some of the object's points).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engines.factory import EngineFactory
from engines.fusion.learned_runner import LearnedFusionRunner
from perception.config import FusionConfig
from perception.msgs.types import Detection3D
from perception.pipeline.ensemble import learned_detections
from perception.pipeline.learned_model import load_learned_model
from replay.training.fusion_config import CameraPaintConfig
from replay.training.fusion_data import prepare
from replay.training.gt_sampling import points_in_boxes
from replay.training.parallel_prepare import build_painter
from replay.training.samples import TrainingSample

__all__ = ["MATCH_M", "SYNTH_PAINT", "Attributed", "attributed_detections"]

#: A detection within this BEV distance of a ground-truth object is that object's.
MATCH_M = 1.0
#: The camera detector the packaged engine was trained with (configs/train_learned_fusion.yaml).
SYNTH_PAINT = CameraPaintConfig(model="synth", kind="yolox", score_threshold=0.15)


@dataclass(frozen=True)
class Attributed:
    """One detection: as published (`detection`, its `camera_contribution` set), its
    camera-free score, its bearing from the vehicle's x axis (degrees, absolute), whether it
    matched a ground-truth object and whether the camera named that object."""

    detection: Detection3D
    camera_free_score: float
    bearing_deg: float
    matched: bool
    named_by_camera: bool


def attributed_detections(
    samples: Iterable[TrainingSample],
    model: str | Path = "learned_fusion",
    *,
    camera_contribution: float | None = None,
    paint: CameraPaintConfig = SYNTH_PAINT,
) -> Iterator[Attributed]:
    """Every detection of the learned engine `model` on each of `samples` (see the module
    docstring); `camera_contribution` is the threshold for `sources` (default: the node's)."""
    learned = load_learned_model(model)
    engine = EngineFactory().learned_fusion_engine(learned)
    runner = LearnedFusionRunner.for_model(engine, learned)
    painter = build_painter(paint)
    classes = learned.config.classes
    if camera_contribution is None:
        camera_contribution = FusionConfig().camera_contribution
    for sample in samples:
        prepared = prepare(sample, painter, learned.config)
        found = runner.run(prepared.points)
        dets = learned_detections(
            found.rows, found.camera_free_score, classes,
            camera_seen=True, camera_contribution=camera_contribution,
        )  # fmt: skip
        for det, free in zip(dets, found.camera_free_score, strict=True):
            near = [b for b in sample.boxes if math.dist(b.center[:2], det.center[:2]) < MATCH_M]
            named = False
            if near:
                box = near[0]
                row = np.array([[*box.center, *box.size, box.yaw]], np.float32)
                (inside,) = points_in_boxes(prepared.points, row)
                painted = prepared.points[inside, 4 + classes.index(det.label)]
                named = bool(len(painted)) and float(painted.max()) > 0.0
            bearing = abs(math.degrees(math.atan2(det.center[1], det.center[0])))
            yield Attributed(det, float(free), bearing, bool(near), named)
