"""The fusion engine's static shapes, tunables and class priors, its tensor specs and its
packaged exports.

Shared by the graph (`engines.fusion.graph`, needs torch) and the runner
(`engines.fusion.runner`, numpy only), so neither imports the other.
`engines/models/fusion_engine.onnx` is the export of the default config, shipped with the package
so the runtime install needs no torch (a test checks it equals a fresh export); beside it,
`engines/models/fusion_engine_buckets/` holds the same graph exported at the config's smaller
bucket shapes (:meth:`FusionEngineConfig.shapes`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from engines.engine import TensorSpec
from engines.exports import export_key
from engines.registry import PACKAGED_MODELS_DIR

__all__ = [
    "BIG",
    "DEFAULT_ENGINE_PRIORS",
    "GENERIC_ENGINE_PRIOR",
    "GRAPH_VERSION",
    "INPUT_NAMES",
    "ONNX_OPSET",
    "OUTPUT_NAMES",
    "PACKAGED_BUCKETS_DIR",
    "PACKAGED_MODEL_PATH",
    "EnginePrior",
    "FusionEngineConfig",
    "Shape",
    "packaged_model_path",
]

#: Bumped whenever the graph changes for the same config, so cached exports are not reused stale.
GRAPH_VERSION = 2

#: The default config's graph, exported (regenerate with `python -m engines.fusion.graph`).
PACKAGED_MODEL_PATH = PACKAGED_MODELS_DIR / "fusion_engine.onnx"
#: The default config's graph at its smaller bucket shapes (regenerated with it).
PACKAGED_BUCKETS_DIR = PACKAGED_MODELS_DIR / "fusion_engine_buckets"

#: A static input shape of the graph: ``(points, boxes)`` rows.
Shape = tuple[int, int]

#: ``ScatterElements`` with ``reduction="max"`` needs opset 18.
ONNX_OPSET = 18

#: Graph inputs, in order (see :class:`FusionEngine.forward`).
INPUT_NAMES: tuple[str, ...] = (
    "points",
    "num_points",
    "boxes",
    "num_boxes",
    "camera_from_vehicle",
    "intrinsics",
    "image_size",
    "ground",
)
#: Graph outputs, in order.
OUTPUT_NAMES: tuple[str, ...] = ("boxes3d", "valid", "fused_score")

#: Stand-in for +-infinity inside the graph (and in the prior table): inf - inf is NaN, and NaN
#: would leak through min/max reductions differently per backend; this is far beyond any metre or
#: pixel value.
BIG = 1.0e6


@dataclass(frozen=True)
class EnginePrior:
    """Size prior and plausibility limits of one class (metres), as a row of the prior table.

    ``length_m``, ``width_m``, ``height_m`` are the typical box; ``max_*_m`` the largest extents
    still one object; the cluster's top must reach ``min_height_above_ground_m``; below a
    visible extent of ``yaw_fit_min_extent_m`` the heading comes from the prior (``inf``: never
    fitted);
    ``min_points`` lidar points at least; the prior height's image height at the cluster depth
    over the 2D box height must lie in [``min_box_height_ratio``, ``max_box_height_ratio``].
    """

    label: str
    length_m: float
    width_m: float
    height_m: float
    max_length_m: float
    max_width_m: float
    max_height_m: float
    min_height_above_ground_m: float
    yaw_fit_min_extent_m: float
    min_points: int = 5
    min_box_height_ratio: float = 0.6
    max_box_height_ratio: float = 2.5

    def __post_init__(self) -> None:
        for name in ("length_m", "width_m", "height_m"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"EnginePrior({self.label}).{name}: must be > 0, got {value}")
            if not getattr(self, f"max_{name}") >= value:
                raise ValueError(f"EnginePrior({self.label}).max_{name}: must be >= {name}")
        if self.min_points < 1:
            raise ValueError(f"EnginePrior({self.label}).min_points: must be >= 1")
        if not 0.0 <= self.min_box_height_ratio <= self.max_box_height_ratio:
            raise ValueError(
                f"EnginePrior({self.label}): need 0 <= min_box_height_ratio <= max_box_height_ratio"
            )

    def row(self) -> list[float]:
        """The table row; infinities become a large finite value (graphs avoid inf)."""
        values = (
            self.length_m,
            self.width_m,
            self.height_m,
            self.max_length_m,
            self.max_width_m,
            self.max_height_m,
            self.min_height_above_ground_m,
            self.yaw_fit_min_extent_m,
            float(self.min_points),
            self.min_box_height_ratio,
            self.max_box_height_ratio,
        )
        return [min(float(v), BIG) for v in values]


# KITTI anchor sizes for the KITTI classes, typical sizes for the other COCO road users.
DEFAULT_ENGINE_PRIORS: tuple[EnginePrior, ...] = (
    # Car: a top 0.7 m above the ground (a car seen from the front beyond ~20 m shows only its
    # bumper below the windscreen: 0.81-0.91 m tall); the box-height ratio at most 1.3 (a nearer
    # occluder's cluster in a parked car's box reads 1.24-1.6; the car's own about 1.0). Both
    # measured on the synthetic drives (recall 94.0 -> 96.8% seed 0, 89.9 -> 95.0% seed 1, false
    # positives 42 -> 26 and 81 -> 32); the KITTI frames' detections are unchanged.
    EnginePrior("Car", 3.9, 1.6, 1.56, 6.5, 2.6, 2.8, 0.7, 2.4, 5, 0.6, 1.3),
    EnginePrior("Pedestrian", 0.8, 0.6, 1.73, 1.5, 1.5, 2.3, 0.8, math.inf),
    EnginePrior("Cyclist", 1.76, 0.6, 1.73, 2.5, 1.5, 2.3, 0.8, 1.2),
    EnginePrior("motorbike", 2.0, 0.8, 1.5, 2.8, 1.5, 2.3, 0.7, 1.4),
    EnginePrior("truck", 6.0, 2.4, 2.8, 18.0, 3.0, 4.5, 1.0, 3.0, 5, 0.3, 2.5),
    EnginePrior("bus", 11.0, 2.6, 3.2, 19.0, 3.0, 4.5, 1.2, 3.0, 5, 0.3, 2.5),
)
#: The prior of any class index outside the table (no depth check: sizes vary too much).
GENERIC_ENGINE_PRIOR = EnginePrior("*", 1.0, 1.0, 1.5, 20.0, 5.0, 5.0, 0.3, 1.5, 5, 0.0, math.inf)


@dataclass(frozen=True)
class FusionEngineConfig:
    """Static shapes and tunables of the fusion graph (metres, pixels, degrees where named).

    ``n_max`` points and ``b_max`` boxes are the padded input sizes. ``priors`` is the class
    table: a box's ``class_index`` selects a row; any other index uses ``generic_prior``
    (:meth:`class_index` maps a label to its index).
    """

    n_max: int = 32768
    b_max: int = 16
    points_per_box: int = 1024  # members gathered per box (a fixed hashed subset beyond that)
    # Smaller static shapes the graph is also exported at (see `shapes`): a frame runs on the
    # smallest that holds it, since padding rows cost as much as real ones. Point buckets
    # below points_per_box are not used (they would shorten the per-box arrays, and with them
    # the order of float sums, so results would not be bitwise those of the full shape).
    point_buckets: tuple[int, ...] = (8192, 16384, 24576)
    box_buckets: tuple[int, ...] = (4, 8)
    # Points.
    min_depth_m: float = 0.5  # camera depth below which points are ignored
    max_range_m: float = 80.0  # BEV range from the lidar beyond which points are ignored
    lidar_origin_xy: tuple[float, float] = (0.0, 0.0)
    ground_clearance_m: float = 0.25  # points lower than this above the ground are ground
    local_ground_cell_m: float = 1.0
    local_ground_window: int = 5  # cells (odd) of the min filter over the lowest returns
    local_ground_max_offset_m: float = 0.6
    box_shrink: float = 0.05  # fraction of the box width/height removed from each side
    # Depth clusters.
    depth_bin_m: float = 0.2
    max_clusters: int = 32  # the nearest this many depth clusters per box are considered
    cluster_link_m: float = 0.3  # largest depth gap inside one cluster at the sensor ...
    cluster_link_per_m: float = 0.01  # ... growing by this much per metre of depth
    min_width_coverage: float = 0.3
    coverage_bins: int = 16
    image_edge_margin_px: float = 2.0  # a box this close to the image edge is cut off by it
    # Heading.
    yaw_search_step_deg: float = 2.0
    yaw_refine_step_deg: float = 0.25
    yaw_trim_fraction: float = 0.8
    rect_trim_percent: float = 5.0
    outline_bin_m: float = 0.15
    outline_bins: int = 64  # bins widen beyond outline_bin_m when the object spans more
    min_outline_points: int = 6
    prior_yaw_rad: float = 0.0
    # Centre.
    extent_percent: float = 2.0  # cluster extents are the [p, 100 - p] percentiles
    full_extent_fraction: float = 0.85
    occlusion_margin_deg: float = 1.5
    occlusion_gap_m: float = 0.5
    occlusion_column_px: float = 2.0  # image column width of the nearest-obstacle profile
    max_image_width_px: int = 4096  # the column profile covers [0, this) pixels
    # Score: camera score x (1 - weight x (1 - min(1, coverage / full_support_coverage))).
    lidar_support_weight: float = 0.2
    full_support_coverage: float = 0.6
    priors: tuple[EnginePrior, ...] = DEFAULT_ENGINE_PRIORS
    generic_prior: EnginePrior = field(default=GENERIC_ENGINE_PRIOR)

    def __post_init__(self) -> None:
        for name in ("n_max", "b_max", "points_per_box", "max_clusters", "coverage_bins"):
            if getattr(self, name) < 1:
                raise ValueError(f"FusionEngineConfig.{name}: must be >= 1")
        for name in ("point_buckets", "box_buckets"):
            sizes = getattr(self, name)
            if any(not isinstance(v, int) or v < 1 for v in sizes) or list(sizes) != sorted(
                set(sizes)
            ):
                raise ValueError(
                    f"FusionEngineConfig.{name}: must be increasing whole numbers >= 1"
                )
        if self.outline_bins < 2 or self.min_outline_points < 2:
            raise ValueError("FusionEngineConfig: outline_bins and min_outline_points must be >= 2")
        positive = (
            "min_depth_m",
            "max_range_m",
            "depth_bin_m",
            "cluster_link_m",
            "yaw_search_step_deg",
            "yaw_refine_step_deg",
            "outline_bin_m",
            "local_ground_cell_m",
            "occlusion_column_px",
            "full_extent_fraction",
            "full_support_coverage",
        )
        for name in positive:
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"FusionEngineConfig.{name}: must be a finite number > 0")
        if self.local_ground_window < 1 or self.local_ground_window % 2 == 0:
            raise ValueError("FusionEngineConfig.local_ground_window: must be an odd number >= 1")
        if self.max_image_width_px < 1:
            raise ValueError("FusionEngineConfig.max_image_width_px: must be >= 1")
        if not 0.0 <= self.box_shrink < 0.5:
            raise ValueError("FusionEngineConfig.box_shrink: must be in [0, 0.5)")
        for name in ("min_width_coverage", "yaw_trim_fraction", "lidar_support_weight"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"FusionEngineConfig.{name}: must be in [0, 1]")
        for name in ("rect_trim_percent", "extent_percent"):
            if not 0.0 <= getattr(self, name) < 50.0:
                raise ValueError(f"FusionEngineConfig.{name}: must be in [0, 50)")
        if len(self.lidar_origin_xy) != 2:
            raise ValueError("FusionEngineConfig.lidar_origin_xy: expected (x, y)")

    @property
    def depth_bins(self) -> int:
        """Number of depth histogram bins (covering [0, max_range_m])."""
        return math.ceil(self.max_range_m / self.depth_bin_m) + 1

    def class_index(self, label: str) -> int:
        """The ``class_index`` of ``label`` for the ``boxes`` input (``len(priors)``: generic)."""
        for i, prior in enumerate(self.priors):
            if prior.label == label:
                return i
        return len(self.priors)

    def prior_table(self) -> npt.NDArray[np.float32]:
        """``[len(priors) + 1, 11]`` float32: :meth:`EnginePrior.row` per class, generic last."""
        rows = [p.row() for p in (*self.priors, self.generic_prior)]
        return np.asarray(rows, dtype=np.float32)

    @property
    def full_shape(self) -> Shape:
        """``(n_max, b_max)``: the largest shape, which every frame fits."""
        return (self.n_max, self.b_max)

    def point_sizes(self) -> tuple[int, ...]:
        """The padded point counts in use, increasing, ``n_max`` last."""
        low = min(self.points_per_box, self.n_max)
        return (*(n for n in self.point_buckets if low <= n < self.n_max), self.n_max)

    def box_sizes(self) -> tuple[int, ...]:
        """The padded box counts in use, increasing, ``b_max`` last."""
        return (*(b for b in self.box_buckets if b < self.b_max), self.b_max)

    def shapes(self) -> tuple[Shape, ...]:
        """Every static ``(points, boxes)`` shape the graph runs at, the full shape last.

        The graph's outputs for a frame are the same (bitwise) at every shape that holds it:
        padded rows are masked out, each box is worked on alone, and the point sampling order
        is the full shape's (its first rows).
        """
        return tuple((n, b) for n in self.point_sizes() for b in self.box_sizes())

    def shape_for(self, num_points: int, num_boxes: int) -> Shape:
        """The smallest shape that holds ``num_points`` points and ``num_boxes`` boxes.

        Raises:
            ValueError: more than ``n_max`` points or ``b_max`` boxes.
        """
        if not (0 <= num_points <= self.n_max and 0 <= num_boxes <= self.b_max):
            raise ValueError(
                f"fusion engine: {num_points} points and {num_boxes} boxes do not fit "
                f"n_max={self.n_max}, b_max={self.b_max}"
            )
        n = next(s for s in self.point_sizes() if s >= num_points)
        b = next(s for s in self.box_sizes() if s >= num_boxes)
        return (n, b)

    def input_specs(self, shape: Shape | None = None) -> tuple[TensorSpec, ...]:
        """The padded inputs at ``shape`` (default the full shape), in :data:`INPUT_NAMES`
        order (see ``FusionEngine.forward``)."""
        n, b = shape if shape is not None else self.full_shape
        return (
            TensorSpec("points", "float32", (n, 4)),
            TensorSpec("num_points", "int64", (1,)),
            TensorSpec("boxes", "float32", (b, 6)),
            TensorSpec("num_boxes", "int64", (1,)),
            TensorSpec("camera_from_vehicle", "float32", (4, 4)),
            TensorSpec("intrinsics", "float32", (3, 3)),
            TensorSpec("image_size", "float32", (2,)),
            TensorSpec("ground", "float32", (4,)),
        )

    def output_specs(self, shape: Shape | None = None) -> tuple[TensorSpec, ...]:
        """The outputs at ``shape`` (default the full shape), in :data:`OUTPUT_NAMES` order:
        ``boxes3d`` float32 ``[b, 7]``, ``valid`` bool ``[b]``, ``fused_score`` float32
        ``[b]``."""
        b = shape[1] if shape is not None else self.b_max
        return (
            TensorSpec("boxes3d", "float32", (b, 7)),
            TensorSpec("valid", "bool", (b,)),
            TensorSpec("fused_score", "float32", (b,)),
        )

    def cache_key(self, shape: Shape | None = None) -> str:
        """A sha256 hex digest of everything that determines the exported ONNX file at
        ``shape`` (default the full shape): the config, the shape, :data:`GRAPH_VERSION`, the
        opset and the torch version."""
        payload = {"config": dataclasses.asdict(self), "shape": list(shape or self.full_shape)}
        return export_key(payload, graph_version=GRAPH_VERSION, opset=ONNX_OPSET)


def packaged_model_path(shape: Shape) -> Path:
    """Where the default config's export at ``shape`` is packaged (it may not exist for shapes
    other than the default config's)."""
    if shape == FusionEngineConfig().full_shape:
        return PACKAGED_MODEL_PATH
    return PACKAGED_BUCKETS_DIR / f"fusion_engine_n{shape[0]}_b{shape[1]}.onnx"
