"""Running the lidar encoder without torch: its grid config, the cached or packaged ONNX export
and a runner that pads numpy points and executes the graph with ONNX Runtime (or the torch module
when torch is installed). The graph itself is `engines.lidar.graph` (needs torch).

`engines/models/lidar_encoder.onnx` is the export of :data:`OBSTACLE_CONFIG`, the grid the
pipeline uses for lidar-only objects; it ships with the package so the runtime install needs no
torch (a test checks it equals a fresh export).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engines.graph_runner import Backend, GraphRunner, torch_version
from engines.onnxruntime_backend import TensorSpec
from engines.registry import PACKAGED_MODELS_DIR

__all__ = [
    "DEFAULT_CACHE_DIR",
    "FEATURES",
    "OBSTACLE_CONFIG",
    "ONNX_OPSET",
    "PACKAGED_MODEL_PATH",
    "LidarEncoderConfig",
    "LidarEncoderEngine",
    "cached_lidar_encoder_onnx",
]

#: Every feature the encoder can produce, in the default channel order.
#: - ``max_z`` / ``min_z`` / ``mean_z``: highest / lowest / mean point z in the cell, metres.
#: - ``z_range``: ``max_z - min_z``, metres.
#: - ``density``: ``log(1 + number of points in the cell)``.
#: - ``max_intensity`` / ``mean_intensity``: of the cell's points, sensor units.
#: - ``occupancy``: 1 where the cell holds at least one point, else 0.
FEATURES: tuple[str, ...] = (
    "max_z",
    "min_z",
    "mean_z",
    "z_range",
    "density",
    "max_intensity",
    "mean_intensity",
    "occupancy",
)

#: ScatterElements with ``reduction="max"|"min"`` exists from ONNX opset 18 on; the classic
#: exporter writes it for ``scatter_reduce(amax/amin)`` regardless of the opset asked for, so an
#: older opset would give an invalid model.
ONNX_OPSET = 18

#: Where :func:`cached_lidar_encoder_onnx` keeps exported models unless told otherwise.
DEFAULT_CACHE_DIR = Path.home() / ".cache" / "perception-node" / "engines"

#: Where :func:`cached_lidar_encoder_onnx` keeps exported models unless told otherwise.
DEFAULT_CACHE_DIR = Path.home() / ".cache" / "perception-node" / "engines"

# Bumped whenever the graph changes for the same config, so cached exports are not reused stale.
_ENCODER_VERSION = 1


def _cells(lo: float, hi: float, cell: float, axis: str) -> int:
    n = round((hi - lo) / cell)
    # A range that is not a whole number of cells would leave a partial cell whose extent
    # differs between the grid and the range check; refuse it rather than silently crop.
    if n < 1 or not math.isclose(n * cell, hi - lo, rel_tol=0.0, abs_tol=1e-6):
        raise ValueError(
            f"LidarEncoderConfig: {axis} range [{lo}, {hi}] is not a whole number of {cell} m cells"
        )
    return n


@dataclass(frozen=True)
class LidarEncoderConfig:
    """Grid and features of the lidar encoder.

    Defaults are the KITTI PointPillars grid: x [0, 69.12] m, y [-39.68, 39.68] m, z [-3, 1] m,
    0.16 m cells (432 x 496); :meth:`coarse` gives the same extent at 0.32 m (216 x 248), about
    four times fewer cells. Ranges are half-open (``min <= v < max``), vehicle frame, metres.

    Attributes:
        x_range, y_range, z_range: the extent of the grid; points outside are ignored.
        cell_size: the side of a square cell, metres.
        max_points: the fixed (padded) number of input points; a full KITTI scan is ~115k.
        features: output channels, names from :data:`FEATURES`, in this order.

    Raises:
        ValueError: empty or reversed ranges, a range that is not a whole number of cells,
            ``max_points < 1``, or unknown/duplicate/no feature names.
    """

    x_range: tuple[float, float] = (0.0, 69.12)
    y_range: tuple[float, float] = (-39.68, 39.68)
    z_range: tuple[float, float] = (-3.0, 1.0)
    cell_size: float = 0.16
    max_points: int = 150_000
    features: tuple[str, ...] = field(default=FEATURES)

    def __post_init__(self) -> None:
        if not self.cell_size > 0:
            raise ValueError(f"LidarEncoderConfig: cell_size must be > 0, got {self.cell_size}")
        for name, (lo, hi) in (
            ("x", self.x_range),
            ("y", self.y_range),
            ("z", self.z_range),
        ):
            if not lo < hi:
                raise ValueError(f"LidarEncoderConfig: {name} range [{lo}, {hi}] is empty")
        _cells(*self.x_range, self.cell_size, "x")
        _cells(*self.y_range, self.cell_size, "y")
        if self.max_points < 1:
            raise ValueError(f"LidarEncoderConfig: max_points must be >= 1, got {self.max_points}")
        if not self.features:
            raise ValueError("LidarEncoderConfig: features must not be empty")
        unknown = [f for f in self.features if f not in FEATURES]
        if unknown:
            raise ValueError(
                f"LidarEncoderConfig: unknown feature(s) {unknown}; known: {list(FEATURES)}"
            )
        if len(set(self.features)) != len(self.features):
            raise ValueError(f"LidarEncoderConfig: duplicate features in {list(self.features)}")

    @classmethod
    def coarse(cls, **overrides: object) -> LidarEncoderConfig:
        """The default extent at 0.32 m cells (216 x 248), for speed; ``overrides`` as fields."""
        values: dict[str, object] = {"cell_size": 0.32, **overrides}
        return cls(**values)  # type: ignore[arg-type]

    @property
    def width(self) -> int:
        """W: the number of cells along x."""
        return _cells(*self.x_range, self.cell_size, "x")

    @property
    def height(self) -> int:
        """H: the number of cells along y."""
        return _cells(*self.y_range, self.cell_size, "y")

    @property
    def output_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of the BEV output."""
        return (len(self.features), self.height, self.width)

    def cache_key(self) -> str:
        """A sha256 hex digest of everything that determines the exported ONNX file.

        Covers the config, the encoder graph version, the opset and the torch version (the
        exporter's output may change between torch releases).
        """
        payload = {
            "config": dataclasses.asdict(self),
            "encoder_version": _ENCODER_VERSION,
            "opset": ONNX_OPSET,
            "torch": torch_version(),
        }
        text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()


def cached_lidar_encoder_onnx(config: LidarEncoderConfig, cache_dir: Path | None = None) -> Path:
    """The exported ONNX file for ``config`` in ``cache_dir``, exporting it on first use.

    The file is named by :meth:`LidarEncoderConfig.cache_key`, so a changed config, encoder
    version or torch version gets a fresh export instead of a stale one.

    Args:
        cache_dir: defaults to :data:`DEFAULT_CACHE_DIR`.

    Raises:
        OSError: the cache directory or file cannot be written.
    """
    directory = Path(cache_dir) if cache_dir is not None else DEFAULT_CACHE_DIR
    path = directory / f"lidar_encoder-{config.cache_key()[:24]}.onnx"
    if not path.is_file():
        from engines.lidar.graph import export_lidar_encoder_onnx  # needs torch

        export_lidar_encoder_onnx(config, path)
    return path


class LidarEncoderEngine(GraphRunner):
    """Runs the lidar encoder on a ``N x 4`` point array, padding it to ``max_points``.

    Args:
        config: grid and features; defaults to :class:`LidarEncoderConfig`'s defaults.
        backend: ``"onnxruntime"`` runs the exported (cached) ONNX model through
            :class:`~engines.onnxruntime_backend.OnnxRuntimeEngine`; ``"torch"`` runs the module.
        cache_dir: where the ONNX export is cached (``onnxruntime`` only); without it,
            :data:`OBSTACLE_CONFIG` runs the packaged export.
        num_threads: ONNX Runtime intra-op threads; ``None`` lets it choose.
        providers: ONNX Runtime execution providers in order of preference.
        device: torch device for the ``torch`` backend (``"cpu"``, ``"cuda"``).

    Raises:
        ValueError: an unknown backend.
        engines.errors.EngineError: the ONNX Runtime session cannot be created.
        OSError: the export cannot be written to the cache.
    """

    def __init__(
        self,
        config: LidarEncoderConfig | None = None,
        *,
        backend: Backend = "onnxruntime",
        cache_dir: Path | None = None,
        num_threads: int | None = None,
        providers: Sequence[str] = ("CPUExecutionProvider",),
        device: str = "cpu",
    ) -> None:
        self.config = config if config is not None else LidarEncoderConfig()
        config_ = self.config

        def onnx_path() -> Path:
            if config_ == OBSTACLE_CONFIG and cache_dir is None:
                return PACKAGED_MODEL_PATH
            return cached_lidar_encoder_onnx(config_, cache_dir)

        def module() -> Any:
            from engines.lidar.graph import LidarEncoder  # needs torch

            return LidarEncoder(config_)

        super().__init__(
            "lidar encoder",
            backend=backend,
            onnx_path=onnx_path,
            module=module,
            num_threads=num_threads,
            providers=providers,
            device=device,
        )

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        """The padded input specs (``points``, ``num_points``)."""
        return (
            TensorSpec("points", "float32", (self.config.max_points, 4)),
            TensorSpec("num_points", "int64", (1,)),
        )

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        """The output spec (``bev``)."""
        return (TensorSpec("bev", "float32", self.config.output_shape),)

    def pad(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pads ``points`` (float32 ``[N, 4]``) with zero rows to ``[max_points, 4]``.

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
        padded = np.zeros((self.config.max_points, 4), dtype=np.float32)
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
            engines.errors.EngineError: ONNX Runtime failed to run.
        """
        padded, count = self.pad(points)
        feed = {"points": padded, "num_points": count}
        (bev,) = self._run_graph(feed, ("points", "num_points"), ("bev",))
        return bev

    def describe(self) -> str:
        """A one-line summary: backend, device/providers, grid and output shape."""
        c, h, w = self.config.output_shape
        grid = (
            f"grid {w}x{h} @ {self.config.cell_size} m, max_points {self.config.max_points}, "
            f"bev [{c}, {h}, {w}] ({','.join(self.config.features)})"
        )
        return self._describe(grid)


#: The pipeline's grid: 360 degrees around the vehicle to 51.2 m at 0.2 m cells (512 x 512),
#: fed with heights above the ground plane (so z is height, metres) of the points that may
#: belong to obstacles; one channel, the highest return per cell, which is what clustering needs.
OBSTACLE_CONFIG = LidarEncoderConfig(
    x_range=(-51.2, 51.2),
    y_range=(-51.2, 51.2),
    z_range=(0.0, 4.0),
    cell_size=0.2,
    max_points=65_536,
    features=("max_z",),
)

#: The export of :data:`OBSTACLE_CONFIG` (regenerate with `python -m engines.lidar.graph`).
PACKAGED_MODEL_PATH = PACKAGED_MODELS_DIR / "lidar_encoder.onnx"
