"""Running the learned fusion engine (numpy, no torch): painted points -> pillars -> engine ->
the detections above a score threshold.

The engine may be any backend the factory builds (ONNX Runtime, TensorRT, torch); its tensors
must be those of the config it was exported with (``engines.fusion.learned_config``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from engines.engine import Engine
from engines.errors import EngineError
from engines.fusion.learned_config import (
    LEARNED_INPUT_NAMES,
    LEARNED_OUTPUT_NAMES,
    LearnedFusionConfig,
)
from engines.fusion.pillars import PillarInputs, pillarize

__all__ = ["LearnedDetections", "LearnedFusionRunner"]


@dataclass(frozen=True)
class LearnedDetections:
    """The engine's detections above the threshold, best first: ``rows`` float32 [M, 11] of
    (x, y, z, length, width, height, yaw, vx, vy, score, class index), vehicle frame;
    ``camera_free_score`` [M] each one's score with the painted channels removed (NaN when the
    export has no attribution); ``pillars`` the pillar inputs it ran on."""

    rows: npt.NDArray[np.float32]
    camera_free_score: npt.NDArray[np.float32]
    pillars: PillarInputs


class LearnedFusionRunner:
    """Pillarizes painted points and runs the learned fusion engine.

    Raises:
        engines.errors.EngineError: the engine's tensors are not the learned engine's.
    """

    def __init__(
        self, engine: Engine, config: LearnedFusionConfig, score_threshold: float = 0.3
    ) -> None:
        inputs = tuple(spec.name for spec in engine.inputs)
        outputs = tuple(spec.name for spec in engine.outputs)
        if inputs != LEARNED_INPUT_NAMES or outputs != LEARNED_OUTPUT_NAMES:
            raise EngineError(
                f"{engine.describe().model or 'engine'}: not a learned fusion engine (inputs "
                f"{inputs}, outputs {outputs}; expected {LEARNED_INPUT_NAMES} -> "
                f"{LEARNED_OUTPUT_NAMES})"
            )
        if not 0.0 <= score_threshold <= 1.0:
            raise EngineError(
                f"learned fusion score_threshold must be in [0, 1], got {score_threshold}"
            )
        self.engine = engine
        self.config = config
        self.score_threshold = float(score_threshold)

    def run(self, painted_points: npt.NDArray[np.float32]) -> LearnedDetections:
        """Detections of one sweep's painted points (N x (4 + classes + 1)).

        Raises:
            ValueError: the points do not have the painted layout of the config.
        """
        pillars = pillarize(painted_points, self.config)
        out = self.engine.run(pillars.as_feeds())
        rows = np.asarray(out["detections"], np.float32)
        free = np.asarray(out["camera_free_score"], np.float32)
        keep = rows[:, 9] >= self.score_threshold
        return LearnedDetections(rows[keep], free[keep], pillars)
