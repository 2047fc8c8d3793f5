"""The camera encoder alone, timed in the bench's own process before the node starts: the
yardstick of the whole frame. A node whose frame costs little more than its camera encoder
spends its time where it must; the issue's target is a frame within 1.4x of it.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from app.bench.sweeps import Sweep
from app.models import build_detector
from perception.config import NodeConfig
from perception.msgs.types import CameraFrame
from perception.pipeline.pipeline import frame_image

__all__ = ["FRAME_TARGET_RATIO", "CameraAlone", "time_camera_encoder"]

#: The whole frame's median against the camera encoder's alone: the target, at most.
FRAME_TARGET_RATIO = 1.4


@dataclass(frozen=True)
class CameraAlone:
    """The camera encoder (preprocess, inference, decoding of every camera image of a sweep,
    batched as the node batches them) alone: its median over `rounds` sweeps, ms."""

    median_ms: float
    rounds: int


def time_camera_encoder(
    config: NodeConfig, sweeps: Sequence[Sweep], rounds: int = 30
) -> CameraAlone | None:
    """The camera encoder of `config` (its engines as the node runs them) on the camera images
    of `sweeps` (cycled), after one warm-up call; None when the sweeps carry no image."""
    images = [[frame_image(m) for _, m in sweep if isinstance(m, CameraFrame)] for sweep in sweeps]
    images = [i for i in images if i]
    if not images:
        return None
    detector = build_detector(config)
    times: list[int] = []
    for k in range(rounds + 1):
        start = time.perf_counter_ns()
        tensors = [detector.preprocess(np.ascontiguousarray(i)) for i in images[k % len(images)]]
        raws = detector.infer_batch([t for t, _ in tensors])
        for (_, letterbox), raw in zip(tensors, raws, strict=True):
            detector.decode(raw, letterbox)
        if k:
            times.append(time.perf_counter_ns() - start)
    return CameraAlone(statistics.median(times) / 1e6, rounds)
