"""Running the fusion engine: pads numpy inputs to the graph's static shapes and runs them
through an :class:`~engines.engine.Engine` (ONNX Runtime, TensorRT or torch, as the factory built
it), on the smallest bucket shape that holds the call when the engine has buckets
(`engines.fusion.buckets`). Shapes, tunables and priors are `engines.fusion.config`; the graph
itself `engines.fusion.graph` (needs torch).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from engines.engine import Engine, TensorSpec, require_specs
from engines.errors import EngineError
from engines.fusion.buckets import BucketedFusionEngine
from engines.fusion.config import OUTPUT_NAMES, FusionEngineConfig, Shape

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

    With a :class:`~engines.fusion.buckets.BucketedFusionEngine` (what
    ``engines.factory.EngineFactory.fusion_engine`` builds for ONNX Runtime and torch), each call
    is padded to the smallest of the config's shapes that holds it, which gives the same outputs
    as the full shape at a fraction of the cost; any other engine runs the full shape. The
    padded input arrays are kept per shape and reused, so a call allocates no large arrays.

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
        self._buckets: BucketedFusionEngine | None = None
        if isinstance(engine, BucketedFusionEngine):
            if engine.config.shapes() != self.config.shapes():
                raise EngineError(
                    f"fusion engine: the engine's buckets {engine.config.shapes()} are not the "
                    f"config's {self.config.shapes()}"
                )
            self._buckets = engine
        # Per shape: the padded points and boxes arrays and how many rows hold data.
        self._padded: dict[Shape, tuple[np.ndarray, np.ndarray, list[int]]] = {}
        self._lock = threading.Lock()
        #: The shape the last :meth:`run` was padded to.
        self.last_shape: Shape | None = None

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        """The padded input specs (full shape), in :data:`engines.fusion.config.INPUT_NAMES`
        order."""
        return self.config.input_specs()

    @property
    def last_gpu_ns(self) -> int | None:
        """GPU time of the last :meth:`run` (CUDA events), or None where the engine cannot time
        it (CPU, ONNX Runtime)."""
        return self.engine.last_gpu_ns

    @property
    def shapes(self) -> tuple[Shape, ...]:
        """Every static shape a call may run at (the buckets, or the full shape alone)."""
        return self._buckets.sizes if self._buckets is not None else (self.config.full_shape,)

    def make_all(self) -> None:
        """Makes the engine of every bucket now rather than on its first use (a session's
        making took 150-190 ms on this project's 2-core CPU, a stalled frame mid-drive); see
        :meth:`engines.buckets.EngineBuckets.make_all`."""
        if self._buckets is not None:
            self._buckets.make_all()

    def shape_for(self, num_points: int, num_boxes: int) -> Shape:
        """The static shape a call with this many points and boxes runs at: the smallest bucket
        that holds them, or the full shape for an engine without buckets.

        Raises:
            ValueError: more than ``n_max`` points or ``b_max`` boxes.
        """
        shape = self.config.shape_for(num_points, num_boxes)
        return shape if self._buckets is not None else self.config.full_shape

    def _checked(  # noqa: PLR0917 - the graph's inputs in order
        self,
        points: npt.ArrayLike,
        boxes: npt.ArrayLike,
        camera_from_vehicle: npt.ArrayLike,
        intrinsics: npt.ArrayLike,
        image_size: npt.ArrayLike,
        ground: npt.ArrayLike,
    ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """Points ``[N, 3|4]``, boxes ``[M, 6]`` and the small inputs, validated."""
        cfg = self.config
        pts = _array(points, "points", [(None, 4), (None, 3)])
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
        small = {
            "num_points": np.array([len(pts)], np.int64),
            "num_boxes": np.array([len(bx)], np.int64),
            "camera_from_vehicle": np.ascontiguousarray(pose),
            "intrinsics": np.ascontiguousarray(_array(intrinsics, "intrinsics", [(3, 3)])),
            "image_size": _array(image_size, "image_size", [(2,)]),
            "ground": _array(ground, "ground", [(4,)]),
        }
        return pts, bx, small

    def pad(  # noqa: PLR0917 - the graph's inputs in order
        self,
        points: npt.ArrayLike,
        boxes: npt.ArrayLike,
        camera_from_vehicle: npt.ArrayLike,
        intrinsics: npt.ArrayLike,
        image_size: npt.ArrayLike,
        ground: npt.ArrayLike,
    ) -> dict[str, np.ndarray]:
        """The graph inputs, padded to the full shape (new arrays): see :meth:`run` for the
        arguments.

        Raises:
            ValueError: an input has the wrong shape or too many rows; the message names it.
        """
        pts, bx, small = self._checked(
            points, boxes, camera_from_vehicle, intrinsics, image_size, ground
        )
        n_max, b_max = self.config.full_shape
        padded_points = np.zeros((n_max, 4), np.float32)
        padded_points[: len(pts), : pts.shape[1]] = pts
        padded_boxes = np.zeros((b_max, 6), np.float32)
        padded_boxes[: len(bx)] = bx
        return {"points": padded_points, "boxes": padded_boxes, **small}

    def _fill(self, shape: Shape, pts: np.ndarray, bx: np.ndarray) -> tuple[np.ndarray, ...]:
        """The reused padded arrays of ``shape`` holding ``pts`` and ``bx`` (zeros beyond)."""
        if shape not in self._padded:
            n, b = shape
            self._padded[shape] = (
                np.zeros((n, 4), np.float32),
                np.zeros((b, 6), np.float32),
                [0, 0],
            )
        padded_points, padded_boxes, used = self._padded[shape]
        padded_points[: len(pts), : pts.shape[1]] = pts
        if pts.shape[1] == 3:
            padded_points[: len(pts), 3] = 0.0
        # Only the rows the previous call filled beyond this one's need clearing.
        padded_points[len(pts) : used[0]] = 0.0
        padded_boxes[: len(bx)] = bx
        padded_boxes[len(bx) : used[1]] = 0.0
        used[:] = [len(pts), len(bx)]
        return padded_points, padded_boxes

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
        pts, bx, small = self._checked(
            points, boxes, camera_from_vehicle, intrinsics, image_size, ground
        )
        m = len(bx)
        shape = self.shape_for(len(pts), m)
        with self._lock:
            padded_points, padded_boxes = self._fill(shape, pts, bx)
            feed = {"points": padded_points, "boxes": padded_boxes, **small}
            if self._buckets is not None:
                out = self._buckets.run_on(shape, feed)
            else:
                out = self.engine.run(feed)
        self.last_shape = shape
        boxes3d, valid, score = (out[name] for name in OUTPUT_NAMES)
        return FusionEngineResult(
            boxes3d=np.ascontiguousarray(boxes3d[:m], dtype=np.float32),
            valid=np.asarray(valid[:m], dtype=np.bool_),
            fused_score=np.ascontiguousarray(score[:m], dtype=np.float32),
        )

    def describe(self) -> str:
        """One line: the engine as it runs and the padded sizes."""
        text = (
            f"fusion engine: {self.engine.describe()}; n_max {self.config.n_max}, "
            f"b_max {self.config.b_max}"
        )
        if self._buckets is not None:
            text += f", {len(self.config.shapes())} bucket shapes"
        return text
