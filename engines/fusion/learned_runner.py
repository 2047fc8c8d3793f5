"""Running the learned fusion engine (numpy, no torch): painted points -> pillars -> engine ->
the detections above a score threshold.

The engine may be any backend the factory builds (ONNX Runtime, TensorRT, torch); its tensors
must be those of the config it was exported with (``engines.fusion.learned_config``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from engines.engine import Engine, require_specs
from engines.errors import EngineError
from engines.fusion.learned_buckets import BucketedLearnedEngine
from engines.fusion.learned_config import LearnedFusionConfig, LearnedModel
from engines.fusion.pillars import PillarInputs, pillarize

__all__ = ["DEFAULT_SCORE_THRESHOLD", "LearnedDetections", "LearnedFusionRunner"]

#: The score a detection needs when neither the config nor the model says otherwise.
DEFAULT_SCORE_THRESHOLD = 0.3


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
    """Pillarizes painted points and runs the learned fusion engine; detections below
    ``score_threshold`` (one for all classes, or per class name) are dropped.

    Raises:
        engines.errors.EngineError: the engine's tensors are not the learned engine's.
    """

    def __init__(
        self,
        engine: Engine,
        config: LearnedFusionConfig,
        score_threshold: float | Mapping[str, float] = DEFAULT_SCORE_THRESHOLD,
    ) -> None:
        require_specs("learned fusion engine", engine, config.input_specs(), config.output_specs())
        if isinstance(score_threshold, Mapping):
            per_class = {c: float(score_threshold.get(c, DEFAULT_SCORE_THRESHOLD)) for c in
                         config.classes}  # fmt: skip
        else:
            per_class = dict.fromkeys(config.classes, float(score_threshold))
        bad = {c: v for c, v in per_class.items() if not 0.0 <= v <= 1.0}
        if bad:
            raise EngineError(f"learned fusion score thresholds must be in [0, 1], got {bad}")
        self.engine = engine
        self.config = config
        #: The score a detection of each class needs (by class index).
        self.thresholds = np.array([per_class[c] for c in config.classes], np.float32)

    @classmethod
    def for_model(
        cls, engine: Engine, model: LearnedModel, score_threshold: float | None = None
    ) -> LearnedFusionRunner:
        """The runner of a trained model's engine: at ``score_threshold`` for every class, or
        (None) at the thresholds per class the model was tuned to (the default where it has
        none)."""
        threshold = model.score_thresholds if score_threshold is None else score_threshold
        return cls(engine, model.config, threshold)

    def make_all(self) -> None:
        """Makes the engine of every pillar count now rather than on its first use (a stalled
        sweep mid-drive); see :meth:`engines.buckets.EngineBuckets.make_all`."""
        if isinstance(self.engine, BucketedLearnedEngine):
            self.engine.make_all()

    def run(self, painted_points: npt.NDArray[np.float32]) -> LearnedDetections:
        """Detections of one sweep's painted points (N x (4 + classes + 1)).

        Raises:
            ValueError: the points do not have the painted layout of the config.
        """
        pillars = pillarize(painted_points, self.config)
        out = self.engine.run(pillars.as_feeds())
        rows = np.asarray(out["detections"], np.float32)
        free = np.asarray(out["camera_free_score"], np.float32)
        classes = np.clip(rows[:, 10].astype(np.int64), 0, len(self.thresholds) - 1)
        keep = rows[:, 9] >= self.thresholds[classes]
        return LearnedDetections(rows[keep], free[keep], pillars)
