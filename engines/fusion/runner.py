"""Running the fusion engine: pads numpy inputs to the graph's static shapes and runs them
through an :class:`~engines.engine.Engine` (ONNX Runtime, TensorRT or torch, as the factory built
it). Shapes, tunables and priors are `engines.fusion.config`; the graph itself
`engines.fusion.graph` (needs torch).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from engines.engine import Engine, TensorSpec, require_specs
from engines.fusion.config import OUTPUT_NAMES, FusionEngineConfig

__all__ = ["FusionEngineResult", "FusionEngineRunner"]


@dataclass(frozen=True)
class FusionEngineResult:
    """Engine outputs for the ``M`` boxes given (padding removed).

    ``boxes3d``: float32 ``[M, 7]`` (cx, cy, cz, length, width, height, yaw), vehicle frame,
    metres / radians; ``valid``: bool ``[M]``; ``fused_score``: float32 ``[M]``.
    """

    boxes3d: npt.NDArray[np.float32]
    valid: npt.NDArray[np.bool_]
    fused_score: npt.NDArray[np.float32]


def _array(value: npt.ArrayLike, name: str, shapes: Sequence[tuple[int | None, ...]]) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"fusion engine input {name!r}: not a numeric array ({exc})") from exc
    for shape in shapes:
        if arr.ndim == len(shape) and all(
            want is None or want == got for want, got in zip(shape, arr.shape, strict=True)
        ):
            return arr
    wanted = " or ".join(
        "[" + ", ".join("N" if d is None else str(d) for d in s) + "]" for s in shapes
    )
    raise ValueError(
        f"fusion engine input {name!r}: expected shape {wanted}, got {list(arr.shape)}"
    )


class FusionEngineRunner:
    """Pads numpy inputs to the engine's static shapes and runs it.

    Args:
        engine: the fusion engine for ``config`` (``engines.factory.EngineFactory.fusion_engine``).
        config: the graph's config (padded sizes, priors); default :class:`FusionEngineConfig`.

    Raises:
        engines.errors.EngineError: the engine's tensors are not the ones of ``config``.
    """

    def __init__(self, engine: Engine, config: FusionEngineConfig | None = None) -> None:
        self.config = config if config is not None else FusionEngineConfig()
        require_specs(
            "fusion engine", engine, self.config.input_specs(), self.config.output_specs()
        )
        self.engine = engine

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        """The padded input specs, in :data:`engines.fusion.config.INPUT_NAMES` order."""
        return self.config.input_specs()

    @property
    def last_gpu_ns(self) -> int | None:
        """GPU time of the last :meth:`run` (CUDA events), or None where the engine cannot time
        it (CPU, ONNX Runtime)."""
        return self.engine.last_gpu_ns

    def pad(  # noqa: PLR0917 - the graph's inputs in order
        self,
        points: npt.ArrayLike,
        boxes: npt.ArrayLike,
        camera_from_vehicle: npt.ArrayLike,
        intrinsics: npt.ArrayLike,
        image_size: npt.ArrayLike,
        ground: npt.ArrayLike,
    ) -> dict[str, np.ndarray]:
        """The graph inputs, padded: see :meth:`run` for the arguments.

        Raises:
            ValueError: an input has the wrong shape or too many rows; the message names it.
        """
        cfg = self.config
        pts = _array(points, "points", [(None, 4), (None, 3)])
        if pts.shape[1] == 3:
            pts = np.concatenate([pts, np.zeros((len(pts), 1), np.float32)], axis=1)
        if len(pts) > cfg.n_max:
            raise ValueError(
                f"fusion engine input 'points': {len(pts)} points, more than n_max={cfg.n_max}; "
                "crop the scan (e.g. to the camera's view) or export with a larger n_max"
            )
        bx = _array(boxes, "boxes", [(None, 6)])
        if len(bx) > cfg.b_max:
            raise ValueError(
                f"fusion engine input 'boxes': {len(bx)} boxes, more than b_max={cfg.b_max}"
            )
        pose = _array(camera_from_vehicle, "camera_from_vehicle", [(4, 4), (3, 4)])
        if pose.shape == (3, 4):
            pose = np.concatenate([pose, np.array([[0, 0, 0, 1]], np.float32)], axis=0)
        padded_points = np.zeros((cfg.n_max, 4), np.float32)
        padded_points[: len(pts)] = pts
        padded_boxes = np.zeros((cfg.b_max, 6), np.float32)
        padded_boxes[: len(bx)] = bx
        return {
            "points": padded_points,
            "num_points": np.array([len(pts)], np.int64),
            "boxes": padded_boxes,
            "num_boxes": np.array([len(bx)], np.int64),
            "camera_from_vehicle": np.ascontiguousarray(pose),
            "intrinsics": np.ascontiguousarray(_array(intrinsics, "intrinsics", [(3, 3)])),
            "image_size": _array(image_size, "image_size", [(2,)]),
            "ground": _array(ground, "ground", [(4,)]),
        }

    def run(  # noqa: PLR0917 - the graph's inputs in order
        self,
        points: npt.ArrayLike,
        boxes: npt.ArrayLike,
        camera_from_vehicle: npt.ArrayLike,
        intrinsics: npt.ArrayLike,
        image_size: npt.ArrayLike,
        ground: npt.ArrayLike,
    ) -> FusionEngineResult:
        """3D boxes for ``M`` camera boxes.

        Args:
            points: ``[N, 4]`` (x, y, z, intensity) or ``[N, 3]``, vehicle frame, metres;
                N <= ``n_max``.
            boxes: ``[M, 6]`` (x1, y1, x2, y2 pixels, score, class_index); M <= ``b_max``.
            camera_from_vehicle: ``[4, 4]`` or ``[3, 4]`` vehicle -> camera transform.
            intrinsics: ``[3, 3]`` pinhole matrix (pixels).
            image_size: ``[2]`` (width, height) pixels.
            ground: ``[4]`` plane (nx, ny, nz, d), ``n · p + d = 0``, vehicle frame.

        Returns:
            The outputs for the ``M`` boxes (padding rows dropped).

        Raises:
            ValueError: an input has the wrong shape or too many rows; the message names it.
            engines.errors.EngineError: the engine failed to run.
        """
        feed = self.pad(points, boxes, camera_from_vehicle, intrinsics, image_size, ground)
        m = int(feed["num_boxes"][0])
        out = self.engine.run(feed)
        boxes3d, valid, score = (out[name] for name in OUTPUT_NAMES)
        return FusionEngineResult(
            boxes3d=np.ascontiguousarray(boxes3d[:m], dtype=np.float32),
            valid=np.asarray(valid[:m], dtype=np.bool_),
            fused_score=np.ascontiguousarray(score[:m], dtype=np.float32),
        )

    def describe(self) -> str:
        """One line: the engine as it runs and the padded sizes."""
        return (
            f"fusion engine: {self.engine.describe()}; n_max {self.config.n_max}, "
            f"b_max {self.config.b_max}"
        )
