"""Lidar encoder: a padded point cloud -> a dense bird's-eye-view (BEV) feature image.

The encoder is the project's own torch graph. It bins points into a regular x/y grid (the
PointPillars grid by default) and reduces each cell's points to a few hand-made features with
scatter ops, so it exports to ONNX with static shapes and runs the same under ONNX Runtime and
torch.

Frames and units: points are ``(x, y, z, intensity)`` in the vehicle (velodyne) frame, x forward,
y left, z up, metres. The output ``bev`` is ``[C, H, W]`` with rows along y and columns along x:
``bev[c, iy, ix]`` describes the cell ``x in [x_min + ix * cell, x_min + (ix + 1) * cell)``,
``y in [y_min + iy * cell, ...)``; this is PointPillars' dense ``[496, 432]`` layout.
Heights are the absolute z of the points in metres; empty cells hold 0 in every channel (use the
``occupancy`` channel to tell an empty cell from a point at z = 0).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from engines.onnx_ops import export_static_onnx, scatter_amax
from engines.onnxruntime_backend import OnnxRuntimeEngine, TensorSpec

__all__ = [
    "DEFAULT_CACHE_DIR",
    "FEATURES",
    "ONNX_OPSET",
    "LidarEncoder",
    "LidarEncoderConfig",
    "LidarEncoderEngine",
    "cached_lidar_encoder_onnx",
    "export_lidar_encoder_onnx",
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
            "torch": torch.__version__,
        }
        text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()


def _filled(cols: int, value: float, num_points: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A contiguous ``[3, cols]`` tensor of ``value``.

    Built from ``num_points * 0`` (an int, so never NaN) because the exporter folds any
    input-independent tensor into a constant: two ``3 x cols`` float buffers would add 5 MB of
    zeros to the ONNX file, where this is a few small nodes.
    """
    scalar = (num_points.reshape(1, 1) * 0).to(dtype) + value
    return scalar.expand(3, cols).contiguous()


class LidarEncoder(torch.nn.Module):
    """Points -> BEV features; see the module docstring for frames and layout.

    ``forward(points, num_points)``:
        points: float32 ``[max_points, 4]``, (x, y, z, intensity), vehicle frame, metres; rows
            from ``num_points`` on are padding and ignored, whatever they hold.
        num_points: int64 ``[1]``, the number of valid rows.
        returns: float32 ``[C, H, W]`` (:attr:`LidarEncoderConfig.output_shape`).

    Points outside the grid or z range, and points with a non-finite value, are ignored. The
    graph has only static shapes: every point is scattered, and ignored ones go to a dump cell
    (index ``H * W``) that is dropped at the end.
    """

    def __init__(self, config: LidarEncoderConfig | None = None) -> None:
        super().__init__()
        self.config = config if config is not None else LidarEncoderConfig()

    def forward(self, points: torch.Tensor, num_points: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        nx, ny = cfg.width, cfg.height
        num_cells = nx * ny
        x, y, z, intensity = points[:, 0], points[:, 1], points[:, 2], points[:, 3]

        # Cell coordinates stay float until masked: NaN/inf would make an int cast undefined.
        # Validity is decided on the cell index itself (not on x < x_max), so a point that
        # rounds into cell nx is dropped the same way by torch, ONNX Runtime and a reference.
        fx = torch.floor((x - cfg.x_range[0]) / cfg.cell_size)
        fy = torch.floor((y - cfg.y_range[0]) / cfg.cell_size)
        row = torch.arange(points.shape[0], device=points.device)
        valid = (
            (row < num_points)
            & (fx >= 0)
            & (fx < nx)
            & (fy >= 0)
            & (fy < ny)
            & (z >= cfg.z_range[0])
            & (z < cfg.z_range[1])
            & torch.isfinite(intensity)
        )
        # H * W < 2**24 for any sane grid, so the flat index is exact in float32.
        flat = torch.where(valid, fy * nx + fx, float(num_cells))
        index = flat.to(torch.int64).unsqueeze(0).expand(3, -1)

        # Ignored points may hold NaN/inf; zero them so no backend's reduction can see them.
        z_ok = torch.where(valid, z, 0.0)
        i_ok = torch.where(valid, intensity, 0.0)

        # Two stacked scatters (sum and max) instead of six: each ScatterElements walks every
        # padded point, so fewer, wider scatters are cheaper. Channel-major [3, cells] buffers
        # (scatter along axis 1) keep each channel contiguous, so no transposes follow. The
        # count row is the validity mask itself (ignored points land in the dump cell anyway).
        sums_src = torch.stack([valid.to(points.dtype), z_ok, i_ok], dim=0)
        sums_init = _filled(num_cells + 1, 0.0, num_points, points.dtype)
        sums = sums_init.scatter_add(1, index, sums_src)[:, :num_cells]

        maxs_src = torch.stack([z_ok, -z_ok, i_ok], dim=0)
        maxs_init = _filled(num_cells + 1, float("-inf"), num_points, points.dtype)
        maxs = scatter_amax(maxs_init, 1, index, maxs_src)

        count = sums[0]
        occupied = count > 0
        # Empty cells hold -inf (max rows) or 0 (sums); the contract is 0 in every channel.
        maxs = torch.where(occupied, maxs[:, :num_cells], 0.0)
        means = sums[1:] / torch.clamp(count, min=1.0)

        channels: list[torch.Tensor] = []
        for name in cfg.features:
            if name == "max_z":
                channels.append(maxs[0])
            elif name == "min_z":
                channels.append(-maxs[1])
            elif name == "mean_z":
                channels.append(means[0])
            elif name == "z_range":
                channels.append(maxs[0] + maxs[1])
            elif name == "density":
                channels.append(torch.log1p(count))
            elif name == "max_intensity":
                channels.append(maxs[2])
            elif name == "mean_intensity":
                channels.append(means[1])
            else:  # "occupancy"; the config rejects unknown names
                channels.append(occupied.to(points.dtype))
        return torch.stack(channels, dim=0).reshape(len(channels), ny, nx)


def _example_inputs(config: LidarEncoderConfig) -> tuple[torch.Tensor, torch.Tensor]:
    return (
        torch.zeros(config.max_points, 4, dtype=torch.float32),
        torch.tensor([0], dtype=torch.int64),
    )


def export_lidar_encoder_onnx(config: LidarEncoderConfig, path: Path) -> Path:
    """Exports the encoder for ``config`` to ONNX (opset :data:`ONNX_OPSET`, static shapes).

    Inputs ``points`` float32 ``[max_points, 4]`` and ``num_points`` int64 ``[1]``; output
    ``bev`` float32 ``[C, H, W]``. The same config and torch version give the same bytes. The
    file is written to a temporary name beside ``path`` and renamed, so a reader never sees a
    partial model.

    Returns:
        ``path``.

    Raises:
        OSError: the file cannot be written.
    """
    return export_static_onnx(
        LidarEncoder(config),
        _example_inputs(config),
        path,
        ("points", "num_points"),
        ("bev",),
        opset=ONNX_OPSET,
        constant_folding=False,
    )


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
        export_lidar_encoder_onnx(config, path)
    return path


Backend = Literal["onnxruntime", "torch"]


class LidarEncoderEngine:
    """Runs the lidar encoder on a ``N x 4`` point array, padding it to ``max_points``.

    Args:
        config: grid and features; defaults to :class:`LidarEncoderConfig`'s defaults.
        backend: ``"onnxruntime"`` runs the exported (cached) ONNX model through
            :class:`~engines.onnxruntime_backend.OnnxRuntimeEngine`; ``"torch"`` runs the module.
        cache_dir: where the ONNX export is cached (``onnxruntime`` only).
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
        self.backend = backend
        self._ort: OnnxRuntimeEngine | None = None
        self._module: LidarEncoder | None = None
        self._device = torch.device(device)
        if backend == "onnxruntime":
            model_path = cached_lidar_encoder_onnx(self.config, cache_dir)
            self._ort = OnnxRuntimeEngine(model_path, num_threads=num_threads, providers=providers)
        elif backend == "torch":
            self._module = LidarEncoder(self.config).eval().to(self._device)
        else:
            raise ValueError(
                f"LidarEncoderEngine: unknown backend {backend!r}; use 'onnxruntime' or 'torch'"
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
        if self._ort is not None:
            return self._ort.run({"points": padded, "num_points": count})["bev"]
        assert self._module is not None  # set in __init__ for the torch backend
        with torch.inference_mode():
            bev = self._module(
                torch.from_numpy(padded).to(self._device),
                torch.from_numpy(count).to(self._device),
            )
        return np.ascontiguousarray(bev.cpu().numpy())

    def describe(self) -> str:
        """A one-line summary: backend, device/providers, grid and output shape."""
        c, h, w = self.config.output_shape
        grid = (
            f"grid {w}x{h} @ {self.config.cell_size} m, max_points {self.config.max_points}, "
            f"bev [{c}, {h}, {w}] ({','.join(self.config.features)})"
        )
        if self._ort is not None:
            return f"lidar encoder: {self._ort.describe()}; {grid}"
        return f"lidar encoder: torch {torch.__version__} on {self._device}; {grid}"
