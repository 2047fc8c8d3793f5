"""The learned fusion engine's static shapes: its BEV grid, pillars, painted point features,
classes and tensor names.

Shared by the torch graph (`engines.fusion.learned_graph`, needs torch), the pillariser
(`engines.fusion.pillars`, numpy) and the runner (`engines.fusion.learned_runner`, numpy), so
that the run time needs no torch.

The engine is a PointPillars-style lidar branch over *painted* points (PointPainting, box-level:
each lidar point carries the scores of the camera's 2D boxes it projects into, per class, and a
flag saying a camera saw it), fused in one BEV grid and decoded by a CenterPoint-style head.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

from engines.checks import brief, check_count, finite_number, yaml_text_hint
from engines.engine import TensorSpec
from engines.errors import ModelError
from engines.registry import PACKAGED_MODELS_DIR

__all__ = [
    "LEARNED_INPUT_NAMES",
    "LEARNED_ONNX_OPSET",
    "LEARNED_OUTPUT_NAMES",
    "PACKAGED_LEARNED_MODEL",
    "POINT_FEATURES",
    "REGRESSION_CHANNELS",
    "LearnedFusionConfig",
    "LearnedModel",
    "bucket_onnx_path",
    "config_path",
    "learned_model_from_document",
    "learned_model_paths",
]

#: The learned engine the project trains and ships (`configs/train_learned_fusion.yaml`).
PACKAGED_LEARNED_MODEL = PACKAGED_MODELS_DIR / "learned_fusion.onnx"

LEARNED_ONNX_OPSET = 17

#: Per point, as the pillariser writes them: position and intensity, the offsets to its pillar's
#: point mean and to the pillar's centre, then the painted channels (one score per class and the
#: camera flag).
POINT_FEATURES: tuple[str, ...] = ("x", "y", "z", "intensity", "dx_mean", "dy_mean",
                                   "dz_mean", "dx_centre", "dy_centre")  # fmt: skip

#: Regression channels of the head, per output cell: sub-cell centre offset, centre height,
#: log size, heading as sin/cos, velocity over ground.
REGRESSION_CHANNELS: tuple[str, ...] = ("dx", "dy", "z", "log_l", "log_w", "log_h", "sin_yaw",
                                        "cos_yaw", "vx", "vy")  # fmt: skip

LEARNED_INPUT_NAMES: tuple[str, ...] = ("pillars", "pillar_points", "pillar_cells")
#: ``detections``: [max_detections, 11] rows of (x, y, z, length, width, height, yaw, vx, vy,
#: score, class index); ``camera_free_score``: [max_detections] the same peak's score with every
#: painted channel removed (computed in the same call), for attribution.
LEARNED_OUTPUT_NAMES: tuple[str, ...] = ("detections", "camera_free_score")

# Upper bounds of the sizes, so that a typo is refused when the config is read rather than
# as an allocation of terabytes once the samples are prepared. Each is far above any
# configuration that fits a lidar sweep (the packaged one: 6000 pillars of 12 points, a
# 140 x 180 grid, 64 channels).
MAX_PILLARS = 1 << 18
MAX_POINTS_PER_PILLAR = 256
MAX_GRID_CELLS = 1 << 22
MAX_CHANNELS = 1024
MAX_DETECTIONS = 4096


@dataclass(frozen=True)
class LearnedFusionConfig:
    """Grid, pillar and head shapes of the learned fusion engine.

    The grid covers ``x_range_m`` x ``y_range_m`` of the vehicle frame in square pillars of
    ``pillar_m``; the head decodes on a grid ``head_stride`` times coarser. ``max_pillars``
    pillars of up to ``points_per_pillar`` points are kept (the fullest first), the rest
    dropped. ``classes`` are the head's classes in order and also the painted score channels.
    ``z_range_m`` bounds the points used. ``channels`` are the two backbone stages' widths.
    ``attribution`` runs the camera-free copy in the same call (``camera_free_score``)."""

    classes: tuple[str, ...] = ("Car", "Pedestrian", "Cyclist")
    x_range_m: tuple[float, float] = (0.0, 44.8)
    y_range_m: tuple[float, float] = (-28.8, 28.8)
    z_range_m: tuple[float, float] = (-3.0, 2.0)
    pillar_m: float = 0.32
    max_pillars: int = 6000
    points_per_pillar: int = 12
    pfn_channels: int = 32
    channels: tuple[int, int] = (32, 64)
    head_stride: int = 2
    max_detections: int = 64
    attribution: bool = True

    def __post_init__(self) -> None:
        classes = self.classes
        if (
            not isinstance(classes, tuple | list)
            or not classes
            or not all(isinstance(c, str) and c for c in classes)
            or len(set(classes)) != len(classes)
        ):
            raise ValueError(
                f"learned fusion classes must be distinct non-empty names, got {brief(classes)}"
            )
        for name in ("x_range_m", "y_range_m", "z_range_m"):
            pair = getattr(self, name)
            if not (
                isinstance(pair, tuple | list)
                and len(pair) == 2
                and all(finite_number(v) is not None for v in pair)
                and pair[0] < pair[1]
            ):
                raise ValueError(
                    f"learned fusion {name} must be an increasing pair, got {brief(pair)}"
                )
        if not (finite_number(self.pillar_m) is not None and self.pillar_m > 0):
            raise ValueError(
                f"learned fusion pillar_m must be a finite number > 0, got {brief(self.pillar_m)}"
                f"{yaml_text_hint(self.pillar_m)}"
            )
        for name, most in (
            ("max_pillars", MAX_PILLARS),
            ("points_per_pillar", MAX_POINTS_PER_PILLAR),
            ("pfn_channels", MAX_CHANNELS),
            ("max_detections", MAX_DETECTIONS),
        ):
            check_count(getattr(self, name), f"learned fusion {name}", 1, most)
        if not isinstance(self.channels, tuple | list) or len(self.channels) != 2:
            raise ValueError(
                "learned fusion channels must be the two stages' widths, "
                f"got {brief(self.channels)}"
            )
        for width in self.channels:
            check_count(width, "learned fusion channels", 1, MAX_CHANNELS)
        if isinstance(self.head_stride, bool) or self.head_stride not in (1, 2, 4):
            raise ValueError(
                f"learned fusion head_stride must be 1, 2 or 4, got {brief(self.head_stride)}"
            )
        if not isinstance(self.attribution, bool):
            raise ValueError(
                f"learned fusion attribution must be true or false, got {brief(self.attribution)}"
            )
        # In floats first: a tiny pillar_m over a wide range is no grid to allocate.
        fx = (self.x_range_m[1] - self.x_range_m[0]) / self.pillar_m
        fy = (self.y_range_m[1] - self.y_range_m[0]) / self.pillar_m
        if not (math.isfinite(fx * fy) and fx * fy <= MAX_GRID_CELLS):
            raise ValueError(
                f"learned fusion grid of {fx:.3g} x {fy:.3g} pillars is above {MAX_GRID_CELLS:,} "
                "pillars: choose a larger pillar_m or smaller ranges"
            )
        nx, ny = self.grid_size
        if nx < 1 or ny < 1:
            raise ValueError(
                f"learned fusion grid {nx} x {ny} pillars is empty: choose a pillar_m smaller "
                "than the ranges"
            )
        if nx % (2 * self.head_stride) or ny % (2 * self.head_stride):
            raise ValueError(
                f"learned fusion grid {nx} x {ny} pillars must divide by twice head_stride "
                f"({2 * self.head_stride}): choose ranges that are multiples of that many pillars"
            )

    @property
    def grid_size(self) -> tuple[int, int]:
        """Pillars along x and along y."""
        nx = round((self.x_range_m[1] - self.x_range_m[0]) / self.pillar_m)
        ny = round((self.y_range_m[1] - self.y_range_m[0]) / self.pillar_m)
        return nx, ny

    @property
    def head_size(self) -> tuple[int, int]:
        """Output cells along x and along y."""
        nx, ny = self.grid_size
        return nx // self.head_stride, ny // self.head_stride

    @property
    def cell_m(self) -> float:
        """The side of one output cell (m)."""
        return self.pillar_m * self.head_stride

    @property
    def point_features(self) -> int:
        """Features per point: geometry (POINT_FEATURES), one painted score per class and the
        camera flag."""
        return len(POINT_FEATURES) + len(self.classes) + 1

    @property
    def painted_slice(self) -> slice:
        """The painted channels (class scores and camera flag) within a point's features."""
        return slice(len(POINT_FEATURES), self.point_features)

    def class_index(self, label: str) -> int:
        """The head index of ``label``, -1 when it is not one of the classes."""
        try:
            return self.classes.index(label)
        except ValueError:
            return -1

    @property
    def pillar_buckets(self) -> tuple[int, ...]:
        """The pillar counts the graph is exported at, ascending, the last ``max_pillars``: a
        quarter, a half and three quarters of it (rounded up to a multiple of 256, and only
        those below it). A sweep runs on the smallest holding its pillars
        (``engines.fusion.learned_buckets``)."""
        full = self.max_pillars
        smaller = {math.ceil(full * q / 4 / 256) * 256 for q in (1, 2, 3)}
        return (*sorted(n for n in smaller if 0 < n < full), full)

    def input_specs(self, pillars: int | None = None) -> tuple[TensorSpec, ...]:
        """The engine's inputs, in :data:`LEARNED_INPUT_NAMES` order, at ``pillars`` (default
        ``max_pillars``)."""
        p, k = self.max_pillars if pillars is None else pillars, self.points_per_pillar
        return (
            TensorSpec("pillars", "float32", (p, k, self.point_features)),
            TensorSpec("pillar_points", "int32", (p,)),
            TensorSpec("pillar_cells", "int64", (p,)),
        )

    def output_specs(self) -> tuple[TensorSpec, ...]:
        """The engine's outputs, in :data:`LEARNED_OUTPUT_NAMES` order."""
        return (
            TensorSpec("detections", "float32", (self.max_detections, 11)),
            TensorSpec("camera_free_score", "float32", (self.max_detections,)),
        )

    def to_dict(self) -> dict[str, object]:
        """The config as plain values (for a checkpoint or a training config)."""
        return dataclasses.asdict(self)

    @staticmethod
    def from_dict(doc: dict[str, object]) -> LearnedFusionConfig:
        """The config of ``to_dict``'s output (lists become tuples).

        Raises:
            ValueError: an unknown field or a bad value.
        """
        fields = {f.name for f in dataclasses.fields(LearnedFusionConfig)}
        unknown = sorted(set(doc) - fields)
        if unknown:
            raise ValueError(f"learned fusion config: unknown field(s) {', '.join(unknown)}")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in doc.items()}
        try:
            return LearnedFusionConfig(**values)  # type: ignore[arg-type]
        except TypeError as e:
            raise ValueError(f"learned fusion config: {e}") from e


def bucket_onnx_path(onnx_path: Path, pillars: int) -> Path:
    """Where the export at ``pillars`` pillars lies beside the full export ``onnx_path``:
    ``learned_fusion.onnx`` -> ``learned_fusion.p1536.onnx``."""
    return onnx_path.with_name(f"{onnx_path.stem}.p{pillars}{onnx_path.suffix}")


def config_path(onnx_path: Path) -> Path:
    """Where the config an export was trained with lies beside it: ``learned_fusion.onnx`` ->
    ``learned_fusion.yaml``."""
    return onnx_path.with_suffix(".yaml")


@dataclass(frozen=True)
class LearnedModel:
    """A trained learned fusion engine: its ONNX export, the config it was trained with (the
    ``.yaml`` beside it, written by ``perception train``), the weights for the torch backend
    (the ``.pt`` beside it, None when absent), the score threshold per class tuned on the
    training run's validation drives (empty when it had none) and the exports at the config's
    smaller pillar counts found beside it (``bucket_onnx_path``; none for an older export)."""

    onnx_path: Path
    config: LearnedFusionConfig
    weights_path: Path | None
    score_thresholds: dict[str, float] = dataclasses.field(default_factory=dict)
    bucket_paths: tuple[tuple[int, Path], ...] = ()


def learned_model_paths(model: str | Path) -> tuple[Path, Path]:
    """The ONNX file of the learned model ``model`` names (``learned_fusion``: the packaged one,
    or an ONNX file exported by ``perception train``) and its config beside it (the ``.yaml``).

    The config is not read here: it is a user's file, read by the bounded YAML loader of the
    packages above (``perception.pipeline.learned_model.load_learned_model``), which this
    package may not import, and handed to :func:`learned_model_from_document`.

    Raises:
        ModelError: the ONNX file is missing, or the config is there but no regular file (one
            line naming the file).
    """
    path = PACKAGED_LEARNED_MODEL if str(model) == "learned_fusion" else Path(model).expanduser()
    if not path.is_file():
        raise ModelError(
            f"learned fusion model {path}: not found (train one with `perception train "
            "CONFIG`, which writes learned_fusion.onnx and its .yaml)"
        )
    meta_path = config_path(path)
    if meta_path.exists() and not meta_path.is_file():
        # A folder, a device or a pipe (which would never end) holds no config.
        raise ModelError(f"{meta_path}: not a regular file, so not a learned model config")
    return path, meta_path


def learned_model_from_document(onnx_path: Path, document: object) -> LearnedModel:
    """The learned model of the export ``onnx_path``, from ``document``: its config (the
    ``.yaml`` beside it, :func:`learned_model_paths`) as parsed, a mapping with the ``model``
    section and optional ``score_thresholds``.

    Raises:
        ModelError: the document is not a valid learned model config (one line naming the
            ``.yaml``).
    """
    meta_path = config_path(onnx_path)
    try:
        if not isinstance(document, dict):
            raise TypeError(f"a mapping expected, got {type(document).__name__}")
        section = document["model"]
        if not isinstance(section, dict):
            raise TypeError(f"model must map the config's fields, got {brief(section)}")
        config = LearnedFusionConfig.from_dict(section)
        raw = document.get("score_thresholds") or {}
        if not isinstance(raw, dict):
            raise TypeError(f"score_thresholds must map classes to thresholds, got {brief(raw)}")
        thresholds = {str(k): float(v) for k, v in raw.items()}
        if not all(0.0 <= v <= 1.0 for v in thresholds.values()):
            raise ValueError("score_thresholds must lie in [0, 1]")
    except KeyError as e:
        raise ModelError(f"{meta_path}: not a learned model config (no {e} section)") from e
    except (TypeError, ValueError) as e:
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ModelError(f"{meta_path}: not a learned model config ({why})") from e
    weights = onnx_path.with_suffix(".pt")
    buckets = tuple(
        (n, bucket_onnx_path(onnx_path, n))
        for n in config.pillar_buckets[:-1]
        if bucket_onnx_path(onnx_path, n).is_file()
    )
    return LearnedModel(
        onnx_path, config, weights if weights.is_file() else None, thresholds, buckets
    )
