"""The lidar encoder's grid and features, its tensor specs and its packaged export.

Shared by the graph (`engines.lidar.graph`, needs torch) and the runner (`engines.lidar.runner`,
numpy only), so neither imports the other.

`engines/models/lidar_encoder.onnx` is the export of :data:`OBSTACLE_CONFIG`, the grid the
pipeline uses for lidar-only objects; it ships with the package so the runtime install needs no
torch (a test checks it equals a fresh export).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

from engines.engine import TensorSpec
from engines.exports import export_key
from engines.registry import PACKAGED_MODELS_DIR

__all__ = [
    "ENCODER_VERSION",
    "FEATURES",
    "INPUT_NAMES",
    "MIN_POINT_BUCKET",
    "OBSTACLE_CONFIG",
    "ONNX_OPSET",
    "OUTPUT_NAMES",
    "PACKAGED_MODEL_PATH",
    "LidarEncoderConfig",
    "bucket_onnx_path",
    "packaged_model_path",
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

#: Graph inputs and outputs, in order.
INPUT_NAMES: tuple[str, ...] = ("points", "num_points")
OUTPUT_NAMES: tuple[str, ...] = ("bev",)

#: ScatterElements with ``reduction="max"|"min"`` exists from ONNX opset 18 on; the classic
#: exporter writes it for ``scatter_reduce(amax/amin)`` regardless of the opset asked for, so an
#: older opset would give an invalid model.
ONNX_OPSET = 18

#: Bumped whenever the graph changes for the same config, so cached exports are not reused stale.
ENCODER_VERSION = 2
#: The smallest padded point count the encoder is exported at (``point_buckets``).
MIN_POINT_BUCKET = 8192


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

    def input_specs(self, points: int | None = None) -> tuple[TensorSpec, ...]:
        """The padded inputs: ``points`` float32 ``[points, 4]`` (default ``max_points``),
        ``num_points`` int64 ``[1]``."""
        return (
            TensorSpec("points", "float32", (points or self.max_points, 4)),
            TensorSpec("num_points", "int64", (1,)),
        )

    def point_buckets(self) -> tuple[int, ...]:
        """The padded point counts the graph is exported at, smallest first: the powers of two
        from :data:`MIN_POINT_BUCKET` below ``max_points``, then ``max_points``. Every padding
        row is scattered like a real one, and an obstacle scan fills a fraction of the full
        count (5-20k of 65,536): a scan runs on the smallest count that holds it, with the
        same grid and the same output."""
        sizes = []
        n = MIN_POINT_BUCKET
        while n < self.max_points:
            sizes.append(n)
            n *= 2
        return (*sizes, self.max_points)

    def at_points(self, points: int) -> LidarEncoderConfig:
        """This grid exported for ``points`` padded points (a bucket's config)."""
        return dataclasses.replace(self, max_points=points)

    def output_specs(self) -> tuple[TensorSpec, ...]:
        """The output: ``bev`` float32 ``[C, H, W]``."""
        return (TensorSpec("bev", "float32", self.output_shape),)

    def cache_key(self) -> str:
        """A sha256 hex digest of everything that determines the exported ONNX file.

        Covers the config, the encoder graph version, the opset and the torch version (the
        exporter's output may change between torch releases).
        """
        return export_key(dataclasses.asdict(self), graph_version=ENCODER_VERSION, opset=ONNX_OPSET)


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

#: The export of :data:`OBSTACLE_CONFIG` (regenerate with `python -m engines.lidar.graph`), with
#: its smaller point buckets beside it (:func:`bucket_onnx_path`).
PACKAGED_MODEL_PATH = PACKAGED_MODELS_DIR / "lidar_encoder.onnx"


def bucket_onnx_path(onnx_path: Path, points: int) -> Path:
    """Where the export at ``points`` padded points lies beside the full export ``onnx_path``:
    ``lidar_encoder.onnx`` -> ``lidar_encoder.n8192.onnx``."""
    return onnx_path.with_name(f"{onnx_path.stem}.n{points}{onnx_path.suffix}")


def packaged_model_path(points: int) -> Path:
    """The packaged export of :data:`OBSTACLE_CONFIG` at ``points`` padded points (one of its
    ``point_buckets``): the full export at ``max_points``, a bucket's file beside it else."""
    if points == OBSTACLE_CONFIG.max_points:
        return PACKAGED_MODEL_PATH
    return bucket_onnx_path(PACKAGED_MODEL_PATH, points)
