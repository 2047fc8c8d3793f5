"""Running the lidar encoder: pads a numpy point array to the grid's static shape and runs it
through an :class:`~engines.engine.Engine` (ONNX Runtime, TensorRT or torch, as the factory built
it). The grid is `engines.lidar.config`; the graph itself `engines.lidar.graph` (needs torch).
"""

from __future__ import annotations

import numpy as np

from engines.engine import Engine, require_specs
from engines.lidar.buckets import BucketedLidarEncoder
from engines.lidar.config import LidarEncoderConfig

__all__ = ["LidarEncoderRunner"]


class LidarEncoderRunner:
    """Runs the lidar encoder on a ``N x 4`` point array, padding it to ``max_points``.

    Args:
        engine: the encoder for ``config`` (``engines.factory.EngineFactory.lidar_encoder``).
        config: the grid the engine was exported for.

    Raises:
        engines.errors.EngineError: the engine's tensors are not the ones of ``config``.
    """

    def __init__(self, engine: Engine, config: LidarEncoderConfig) -> None:
        require_specs("lidar encoder", engine, config.input_specs(), config.output_specs())
        self.engine = engine
        self.config = config

    @property
    def last_gpu_ns(self) -> int | None:
        """GPU time of the last :meth:`encode` (CUDA events), or None where the engine cannot
        time it (CPU, ONNX Runtime)."""
        return self.engine.last_gpu_ns

    def pad(self, points: np.ndarray, rows: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Pads ``points`` (float32 ``[N, 4]``) with zero rows to ``[rows, 4]`` (default
        ``max_points``; a point bucket's count).

        Returns:
            ``(padded points, num_points)`` with ``num_points`` int64 ``[1]`` holding N.

        Raises:
            ValueError: ``points`` is not a float32 numpy array of shape ``[N, 4]``, or
                N > ``max_points``; the message names the input.
        """
        if not isinstance(points, np.ndarray):
            raise ValueError(
                f"lidar encoder input 'points' must be a numpy array, got {type(points).__name__}"
            )
        if points.ndim != 2 or points.shape[1] != 4:
            raise ValueError(
                f"lidar encoder input 'points' must have shape [N, 4] (x, y, z, intensity), "
                f"got {list(points.shape)}"
            )
        if points.dtype != np.float32:
            raise ValueError(
                f"lidar encoder input 'points' must be float32, got {points.dtype.name}"
            )
        n = points.shape[0]
        if n > self.config.max_points:
            raise ValueError(
                f"lidar encoder input 'points' has {n} points, more than max_points="
                f"{self.config.max_points}; crop the scan or raise LidarEncoderConfig.max_points"
            )
        padded = np.zeros((rows or self.config.max_points, 4), dtype=np.float32)
        padded[:n] = points
        return padded, np.array([n], dtype=np.int64)

    def encode(self, points: np.ndarray) -> np.ndarray:
        """BEV features of one scan.

        Args:
            points: float32 ``[N, 4]`` (x, y, z, intensity), vehicle frame, metres.

        Returns:
            float32 ``[C, H, W]``, :attr:`LidarEncoderConfig.output_shape`.

        Raises:
            ValueError: see :meth:`pad`.
            engines.errors.EngineError: the engine failed to run.
        """
        if isinstance(self.engine, BucketedLidarEncoder) and isinstance(points, np.ndarray):
            # Padded to the smallest point bucket that holds the scan, not to max_points.
            rows = self.engine.size_for(len(points))
            padded, count = self.pad(points, rows)
            return self.engine.run_on(rows, {"points": padded, "num_points": count})["bev"]
        padded, count = self.pad(points)
        return self.engine.run({"points": padded, "num_points": count})["bev"]

    def make_all(self) -> None:
        """Makes the engine of every point bucket now rather than on its first use (a stalled
        sweep mid-drive); nothing for an engine of one size."""
        if isinstance(self.engine, BucketedLidarEncoder):
            self.engine.make_all()

    def describe(self) -> str:
        """A one-line summary: the engine as it runs, grid and output shape."""
        c, h, w = self.config.output_shape
        return (
            f"lidar encoder: {self.engine.describe()}; grid {w}x{h} @ {self.config.cell_size} m, "
            f"max_points {self.config.max_points}, bev [{c}, {h}, {w}] "
            f"({','.join(self.config.features)})"
        )
