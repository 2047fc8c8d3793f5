"""Node configuration: YAML loaded into frozen dataclasses, validated with errors naming the key."""

from __future__ import annotations

import math
import os
import sys
import types
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, TypeVar, get_type_hints

from calibration.errors import load_yaml, read_text
from calibration.monitor import MonitorConfig
from engines.checks import yaml_text_hint
from engines.errors import EngineError
from engines.settings import MAX_THREADS, EngineSettings
from perception.errors import ConfigError
from perception.io.runtime import endpoint_problem
from perception.msgs.schema import MAX_TOPIC_BYTES, WireLimits, topic_bytes

__all__ = [
    "FUSION_KINDS",
    "MAX_C_INT",
    "MAX_DURATION_S",
    "MAX_RANGE_M",
    "BudgetConfig",
    "CameraHealthConfig",
    "CameraModelConfig",
    "ClockConfig",
    "FusionConfig",
    "GroundConfig",
    "InputConfig",
    "LidarObjectConfig",
    "MetricsConfig",
    "NodeConfig",
    "OutputConfig",
    "PipelineConfig",
    "RealtimeConfig",
    "SecurityConfig",
    "SyncConfig",
    "TrackingConfig",
    "ViewConfig",
    "WatchdogConfig",
    "load_config",
    "parse_config",
]

#: The longest duration a config may give (a key in ms or s): a million seconds (11.6 days) is
#: beyond any window, timeout or budget of the node, and the node turns durations into integer
#: nanoseconds that it adds to stamps, which must stay inside int64 (292 years).
MAX_DURATION_S = 1e6
#: The farthest range a config may give, in metres (a lidar sees a few hundred): ranges are
#: squared in float32 (the deskew's range filter) and in Python floats (the ground fit), where
#: a larger one overflows on every sweep.
MAX_RANGE_M = 1000.0
#: ZeroMQ takes socket options such as the high-water mark as a C int.
MAX_C_INT = 2**31 - 1
#: Cameras per camera-encoder call: the batch's input is allocated whole (a rig has a dozen).
_MAX_CAMERA_BATCH = 64
#: Camera topics a node subscribes to: each takes a socket and its monitor, a handful of file
#: descriptors, and 5,000 ran out of them at start ("unexpected ZMQError: Too many open
#: files"); a rig has a dozen cameras.
_MAX_CAMERAS = 64
#: Planes the ground fit may try per sweep.
_MAX_RANSAC_ITERATIONS = 100_000


@dataclass(frozen=True)
class InputConfig:
    """Where the sensors publish and under which topics (ZeroMQ SUB side: connect)."""

    endpoints: tuple[str, ...] = ("ipc://{runtime}/sensors",)
    """ZeroMQ endpoints the node connects to (ipc://, tcp:// or inproc://; inproc:// reaches
    only its own process, so the commands refuse it). `{runtime}` is the per-user runtime
    folder: `$XDG_RUNTIME_DIR/perception-node`, else `<tmp>/perception-node-<uid>`, created
    with mode 0700 and checked (owner, mode, not a link) before every use, and the only
    placeholder. A tcp port is 1 to 65535: the one the sensor bound. Not `outputs.endpoint`:
    the node would listen to itself."""
    lidar_topic: str = "lidar/top"
    """Topic of the lidar sweeps: the reference of every bundle."""
    camera_topics: tuple[str, ...] = ("camera/front",)
    """Topics of the cameras, one per camera (`camera/<rig camera name>`), at most 64. Every
    input topic is named, and used once."""
    gnss_topic: str = "gnss"
    """Topic of the GNSS fixes (ego pose, deskew, global positions)."""
    rig_topic: str = "rig"
    """Topic of rig messages: a calibration in force from its stamp on."""
    high_water_mark: int = 10
    """Messages ZeroMQ queues per topic before it drops the newest (1 to 2147483647)."""
    rates_hz: dict[str, float] = field(default_factory=dict)
    """Nominal rate of each sensor topic (the lidar, camera and GNSS topics; one not listed has
    `default_rate_hz`), for liveness: a sensor silent for `dead_after_periods` periods is
    dead, and bundles go out without waiting for it (degraded, the stream listed as missing)
    until it sends again. Diagnostics report each sensor alive or dead with its measured
    rate."""
    default_rate_hz: float = 10.0
    """Nominal rate of a sensor topic not listed in `rates_hz`."""
    dead_after_periods: float = 3.0
    """A sensor silent this many periods is dead (its nominal period, or its measured one when
    it runs slower, so a sensor slower than configured is not declared dead between messages);
    one never heard from is dead this long after the node's first message."""


@dataclass(frozen=True)
class OutputConfig:
    """Where detections and diagnostics are published (ZeroMQ PUB side: bind)."""

    endpoint: str = "ipc://{runtime}/detections"
    """ZeroMQ endpoint the node binds and publishes on (`{runtime}`: see `inputs.endpoints`).
    An ipc endpoint another live process holds is refused; the node's own socket file is
    removed when it stops."""
    detections_topic: str = "detections"
    """Topic of the DetectionLists, one per processed sweep."""
    tracks_topic: str = "tracks"
    """Topic of the TrackLists (the tracker's confirmed tracks), one per DetectionList."""
    diagnostics_topic: str = "diagnostics"
    """Topic of the Diagnostics messages (1 Hz)."""
    high_water_mark: int = 100
    """Messages ZeroMQ queues per subscriber before it drops (1 to 2147483647)."""


@dataclass(frozen=True)
class CameraModelConfig:
    """The camera encoder's model: an ONNX file, or a registered model name (fetched into
    ~/.cache/perception-node/models on first use), and its decoding."""

    path: str = "yolox_nano_coco_416"
    """An ONNX file (relative to the config file) or a registered model name."""
    kind: str = "auto"
    """Output decoding: `yolox`, `yolo_fastestv2`, or `auto` (from the registry or the graph)."""
    score_threshold: float = 0.3
    """2D boxes scoring at or below this are dropped before fusion (at 1, every box: the node
    says so as it starts)."""
    nms_iou: float = 0.45
    """IoU above which class-wise NMS suppresses the lower-scoring 2D box."""
    num_threads: int = 0
    """The camera encoder's ONNX Runtime threads; 0: `engines.threads`."""
    batch: int = 1
    """Cameras per engine call; above 1, a batch-N copy of the model runs."""


@dataclass(frozen=True)
class SyncConfig:
    """Pairing around each lidar sweep (perception.sync: the Bundler and its policies).

    Camera `c` is expected at the sweep stamp + `camera_offsets_ms[c]` (default 0) and matches
    within `camera_windows_ms[c]` (default `window_ms`) of that time. A bundle waits at most
    `timeout_ms` of host time after its sweep arrived. With `policy: approximate_time` the sets
    are chosen by message_filters' ApproximateTime (`queue_size`, `age_penalty`,
    `max_interval_ms`) instead. Times in milliseconds.
    """

    window_ms: float = 50.0
    """A camera frame matches within this of its expected time (default for every camera)."""
    timeout_ms: float = 300.0
    """A bundle waits at most this (host time after its sweep arrived), then goes out degraded."""
    gnss_window_ms: float = 500.0
    """The nearest GNSS fix within this of the sweep stamp joins its bundle."""
    queue_size: int = 20
    """Messages buffered per stream (pending sweeps, unmatched frames; at most 1000000)."""
    policy: str = "collector"
    """`collector` (keyed by the sweep, with a timeout) or `approximate_time` (ROS 2
    message_filters ApproximateTime)."""
    age_penalty: float = 0.1
    """approximate_time only: message_filters' age penalty."""
    max_interval_ms: float | None = None
    """approximate_time only: the widest set allowed (null: unbounded)."""
    camera_offsets_ms: dict[str, float] = field(default_factory=dict)
    """Per camera topic (of `inputs.camera_topics`): when its frame is expected after the sweep
    stamp (default 0)."""
    camera_windows_ms: dict[str, float] = field(default_factory=dict)
    """Per camera topic (of `inputs.camera_topics`): its matching window (default
    `window_ms`)."""
    queue_bytes: int = 128 * 1024 * 1024
    """Bytes buffered per stream (the camera frames of one camera; the pending sweeps), on top
    of `queue_size`: beyond it the oldest are dropped and counted (`dropped_*_queue_full`); the
    newest message is always kept. 128 MiB by default."""


@dataclass(frozen=True)
class ClockConfig:
    """Sensor stamps judged against the host receive clock (perception.sync.clock).

    Each stream's clock offset (host receive time - stamp, its lower envelope) is estimated
    online. Until a stream has an estimate from `warmup_messages` messages, a stamp further than
    `max_offset_ms` from its expected time (the host receive time at first) is rejected; after
    that, one more than `jump_threshold_ms` ahead of its expected time (a message cannot arrive
    before it was sent) or more than `max_delay_ms` behind it. Rejected messages are dropped and
    counted per stream. `jump_confirm` consecutive messages agreeing on one new offset (within
    `jump_threshold_ms`) over at least `jump_confirm_ms` of receive time are a clock jump
    (a PTP resync, a sensor restart): that stream's estimate, the synchroniser's state on its
    old timeline and, for the lidar, the last published stamp are reset, so output resumes. A
    single outlier is dropped without a reset; delays on the receiving side (a backlog
    delivered at once) are not jumps.
    """

    max_offset_ms: float = 2000.0
    """Before a stream's clock is estimated: the largest distance of a stamp from its expected
    time (a sensor clock further off the host clock is adopted once confirmed as a jump is)."""
    jump_threshold_ms: float = 50.0
    """Once estimated: a stamp more than this ahead of its expected time is rejected; an offset
    change larger than this, once confirmed, is a clock jump."""
    max_delay_ms: float = 1000.0
    """Once estimated: a message received more than this after its expected time is rejected
    (its stamp is behind, or it is that stale)."""
    jump_confirm: int = 3
    """Consecutive messages agreeing on a new offset that confirm a clock jump (at most 256)."""
    jump_confirm_ms: float = 150.0
    """The receive time those messages must span (a backlog delivered at once is no jump)."""
    warmup_messages: int = 16
    """Messages of a stream before its estimate is used to judge its stamps (at most 256)."""
    max_drift_ppm: int = 1000
    """The largest drift of a sensor clock against the host clock that the estimate takes
    (microseconds per second; ten times a free-running crystal's tolerance). A larger slope
    through a stream's first, unequally delayed messages is no drift."""


@dataclass(frozen=True)
class BudgetConfig:
    """Latency budgets in milliseconds: per stage and sensor-to-publish.

    `apply_clock_offset`: the sweep stamp is moved onto the host clock with the lidar clock's
    estimated offset (perception.sync.clock) before the latency is taken; off, sensor and host
    clocks are taken to agree (PTP-synchronised sensors).
    """

    end_to_end_ms: float = 100.0
    """Sensor stamp to publish; an overrun clears `budget_ok` and is counted."""
    apply_clock_offset: bool = True
    """Move the sweep stamp onto the host clock with the lidar clock's estimated offset."""
    stages_ms: dict[str, float] = field(
        default_factory=lambda: {
            "preprocess": 10.0,
            "camera_encoder": 40.0,
            "lidar_encoder": 15.0,
            "fusion": 20.0,
            "lidar_objects": 20.0,
            "postprocess": 5.0,
            "tracking": 5.0,
        }
    )
    """Per stage (a DetectionList timing name, `<stage>_gpu` for an engine's GPU time;
    `tracking` is the TrackList's, tracked once the detections are out): its budget. The stages
    given replace their defaults, the others keep theirs."""


@dataclass(frozen=True)
class RealtimeConfig:
    """`cpu_affinity`: CPUs the process may run on (empty: all); `nice`: a niceness to set
    (-20 highest .. 19; None: leave); `fifo_priority`: SCHED_FIFO priority 1-99 (None: normal
    scheduling); `gc_hold`: hold garbage collection during a frame (see the module docstring)."""

    cpu_affinity: tuple[int, ...] = ()
    """CPUs the process may run on (empty: all)."""
    nice: int | None = None
    """A niceness to set, -20 (highest priority) to 19 (null: leave it)."""
    fifo_priority: int | None = None
    """SCHED_FIFO priority 1-99 (null: normal scheduling)."""
    gc_hold: bool = True
    """Hold Python's garbage collection while a frame is processed."""


#: The shortest stall the watchdog takes, s.
_MIN_STALL_S = 1.0


@dataclass(frozen=True)
class WatchdogConfig:
    """The live node's watchdog: a receiver thread that dies or stalls is replaced; a worker
    stalled this long (an engine that hangs) ends the process with exit code 70, for the
    service manager (systemd `Restart=on-failure`) to restart it."""

    stall_timeout_s: float = 10.0
    """A thread whose loop has not gone round for this long is stalled (at least 1 s)."""

    def __post_init__(self) -> None:
        # A worker's round takes a frame's processing (hundreds of ms on a CPU, the first one
        # more), and the watchdog looks every 0.25 s: under a second, the node ended itself with
        # exit code 70 at its first frame, or idle, again at every restart.
        if not (math.isfinite(self.stall_timeout_s) and self.stall_timeout_s >= _MIN_STALL_S):
            raise ConfigError(
                f"stall_timeout_s: must be at least {_MIN_STALL_S:g} s (a frame's processing "
                f"must fit in it), got {self.stall_timeout_s}"
            )


@dataclass(frozen=True)
class GroundConfig:
    """The ground plane: RANSAC over the returns near the expected ground, which the lidar-only
    branch and the fusion engine measure heights from."""

    ground_prior_z_m: float = -1.73
    """The ground's z in the vehicle frame (KITTI: the Velodyne's mounting height); also the
    plane used when too few returns are found."""
    ground_band_below_m: float = 1.0
    """Candidates lie at most this far below the prior."""
    ground_band_above_m: float = 0.6
    """Candidates lie at most this far above the prior."""
    ground_fit_range_m: float = 40.0
    """Candidates lie within this horizontal distance of the vehicle (at most 1000)."""
    ransac_iterations: int = 64
    """Planes tried (at most 100000)."""
    ransac_threshold_m: float = 0.12
    """A return this close to a plane supports it."""
    ransac_max_tilt_deg: float = 12.0
    """Planes tilted more than this from horizontal are refused."""
    ransac_max_points: int = 3000
    """Candidates are stride-sampled down to this many."""
    ransac_min_inliers: int = 50
    """A plane with fewer supporters is refused (the prior is used)."""
    seed: int = 0
    """Seed of the RANSAC generator, >= 0 (results repeat for the same input)."""

    def __post_init__(self) -> None:
        for name in ("ground_fit_range_m", "ransac_threshold_m"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{name}: must be a finite number > 0, got {value}")
        if self.ground_fit_range_m > MAX_RANGE_M:
            raise ConfigError(
                f"ground_fit_range_m: must be at most {MAX_RANGE_M:.0f} m, got "
                f"{self.ground_fit_range_m}"
            )
        if self.ransac_iterations < 1:
            raise ConfigError(f"ransac_iterations: must be >= 1, got {self.ransac_iterations}")
        if self.ransac_iterations > _MAX_RANSAC_ITERATIONS:
            # Every sweep draws them at once: 2**40 is a MemoryError on every sweep.
            raise ConfigError(
                f"ransac_iterations: must be at most {_MAX_RANSAC_ITERATIONS}, got "
                f"{self.ransac_iterations}"
            )
        if self.seed < 0:
            raise ConfigError(f"seed: must be >= 0 (numpy's generators), got {self.seed}")
        if self.ransac_max_points < 3:
            raise ConfigError(f"ransac_max_points: must be >= 3, got {self.ransac_max_points}")
        if not 0.0 < self.ransac_max_tilt_deg < 90.0:
            raise ConfigError(
                f"ransac_max_tilt_deg: must be in (0, 90), got {self.ransac_max_tilt_deg}"
            )


@dataclass(frozen=True)
class LidarObjectConfig:
    """The lidar-only branch: BEV clusters of returns above the ground that no camera-confirmed
    detection explains, published as `unknown` objects. A cluster higher than `max_base_m` clears
    a car (tree crowns, signs); one lower is an obstacle even when only its top is seen. The
    score grows with the returns up to `full_score_points` and is capped at `max_score`, below
    the camera-confirmed detections, so consumers ranking by score see those first."""

    min_height_m: float = 0.3
    """Returns at least this high above the ground may be obstacles."""
    max_height_m: float = 3.0
    """Returns higher than this above the ground are not obstacles (overhangs)."""
    min_points: int = 10
    """A cluster needs at least this many returns."""
    max_extent_m: float = 7.0
    """Longer clusters are structure (walls, hedges, guard rails), not objects."""
    min_top_m: float = 0.5
    """A cluster's top must reach this high above the ground."""
    max_base_m: float = 1.5
    """A cluster's lowest return must be at most this high above the ground."""
    explained_margin_m: float = 0.8
    """Returns within this of a camera-confirmed detection's footprint belong to it ..."""
    explained_fraction: float = 0.3
    """... and a cluster with at least this fraction of such returns is that detection."""
    full_score_points: int = 150
    """Returns at which a lidar-only object's score reaches `max_score`."""
    max_score: float = 0.3
    """The highest score of a lidar-only object."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_height_m < self.max_height_m:
            raise ConfigError(
                "min_height_m, max_height_m: need 0 <= min_height_m < max_height_m, got "
                f"{self.min_height_m}, {self.max_height_m}"
            )
        # A cluster holds only returns from min_height_m up to max_height_m: a top required
        # above that range, or a base below it, made no lidar-only object ever, silently.
        if not self.min_top_m < self.max_height_m:
            raise ConfigError(
                f"min_top_m: must be below max_height_m ({self.max_height_m:g}: no higher return "
                f"is an obstacle), got {self.min_top_m}"
            )
        if not self.max_base_m >= self.min_height_m:
            raise ConfigError(
                f"max_base_m: must be at least min_height_m ({self.min_height_m:g}: no lower "
                f"return is an obstacle), got {self.max_base_m}"
            )
        if self.min_points < 3:
            raise ConfigError(f"min_points: must be >= 3, got {self.min_points}")
        if not self.max_extent_m > 0:
            raise ConfigError(f"max_extent_m: must be > 0, got {self.max_extent_m}")
        if not 0.0 < self.max_score <= 1.0:
            raise ConfigError(f"max_score: must be in (0, 1], got {self.max_score}")
        if not 0.0 <= self.explained_fraction <= 1.0:
            raise ConfigError(
                f"explained_fraction: must be in [0, 1], got {self.explained_fraction}"
            )
        if self.full_score_points < 1:
            raise ConfigError(f"full_score_points: must be >= 1, got {self.full_score_points}")


#: The fusion kinds of `pipeline.fusion.kind`.
FUSION_KINDS = ("geometric", "learned", "ensemble")


@dataclass(frozen=True)
class FusionConfig:
    """Which fusion makes the 3D boxes."""

    kind: str = "geometric"
    """geometric: the frustum fusion engine per camera box plus lidar-only `unknown` objects;
    learned: the trained camera + lidar BEV detector (painted pillars, CenterPoint-style head);
    ensemble: both, boxes of one object merged (never counted twice)."""
    model: str = "learned_fusion"
    """The learned engine: `learned_fusion` (the packaged model) or an ONNX file exported by
    `perception train` (its `.yaml` beside it gives the grid)."""
    score_threshold: float | None = None
    """Learned detections below this score are dropped (at 1, all but saturated scores: the
    node says so as it starts); null: the thresholds per class the model was tuned to on its
    training run's validation drives (0.3 where it has none)."""
    camera_contribution: float = 0.02
    """A learned detection lists the camera among its sources when its score without the
    camera's painted features is lower by more than this. Above what the packaged engine shows
    for objects no camera sees (where removing the camera can change nothing but through the
    network's reach into the view: at most 0.006, 99% under 0.016, on its validation drives)."""

    def __post_init__(self) -> None:
        if self.kind not in FUSION_KINDS:
            raise ConfigError(f"kind: must be one of {', '.join(FUSION_KINDS)}, got {self.kind!r}")
        if not self.model:
            raise ConfigError("model: must name the learned engine (learned_fusion or a file)")
        if self.score_threshold is not None and not 0.0 <= self.score_threshold <= 1.0:
            raise ConfigError(f"score_threshold: must be in [0, 1], got {self.score_threshold}")
        if not 0.0 <= self.camera_contribution <= 1.0:
            raise ConfigError(
                f"camera_contribution: must be in [0, 1], got {self.camera_contribution}"
            )


@dataclass(frozen=True)
class CameraHealthConfig:
    """The check every camera image passes before the camera encoder (perception.pipeline.
    camera_health): an image too dark or too blurred to see in is left out of the fusion, as a
    missing camera would be, and its stream is listed as degraded, rather than letting a blind
    camera's silence vote against what the lidar sees (Autoware's image_diagnostics plays this
    part). Daytime KITTI frames measure mean luma 88-93 and sharpness 44-71; the synthetic
    renders 79-142 and 19-37."""

    enabled: bool = True
    """Check each image; false: every image is used as it comes."""
    min_mean_luma: float = 25.0
    """Mean grey level (0-255) below which an image is too dark."""
    min_sharpness: float = 5.0
    """Relative sharpness (percent: the RMS Laplacian of the quarter-size grey image over its
    mean grey level) below which an image is too blurred (fogged, defocused, smeared)."""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.min_mean_luma) and 0.0 <= self.min_mean_luma < 255.0):
            raise ConfigError(f"min_mean_luma: must be in [0, 255), got {self.min_mean_luma}")
        if not (math.isfinite(self.min_sharpness) and self.min_sharpness >= 0.0):
            raise ConfigError(f"min_sharpness: must be a number >= 0, got {self.min_sharpness}")


@dataclass(frozen=True)
class PipelineConfig:
    """The per-sweep pipeline's tunables."""

    max_range_m: float = 80.0
    """Lidar returns farther than this from the vehicle are dropped before any stage (at most
    1000)."""
    ground: GroundConfig = field(default_factory=GroundConfig)
    """The ground plane fit."""
    lidar_objects: LidarObjectConfig = field(default_factory=LidarObjectConfig)
    """The lidar-only branch."""
    fusion: FusionConfig = field(default_factory=FusionConfig)
    """Which fusion makes the 3D boxes (geometric, learned or ensemble)."""
    camera_health: CameraHealthConfig = field(default_factory=CameraHealthConfig)
    """Which camera images are fit to use."""
    parallel_branches: bool = True
    """Run the lidar branch (ground plane, lidar encoder, lidar-only clusters) on a second
    thread while the camera branch preprocesses and encodes the images and fuses their boxes
    (which needs only the ground). The outputs are the same either way; the stages' own timings
    stay per branch, and the lidar branch's time on the frame's path after the camera boxes
    are fused is the `branch_wait` timing."""
    camera_ahead: bool = True
    """The live node encodes each camera frame as it arrives, on a thread of its own, instead of
    when its sweep's bundle is ready: a spinning lidar's sweep ends after the cameras fired
    within it, so its frame then waits only for the lidar branch and fusion (and for the
    encodings still running: the `camera_wait` timing), and one sweep's camera encoding runs
    beside the previous sweep's lidar work. The detections are the same; only a newer frame of
    the same camera cancels an encoding not yet started. Not with `camera_model.batch` > 1
    (the batch is the bundle's cameras); offline replay always encodes in line."""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.max_range_m) and 0 < self.max_range_m <= MAX_RANGE_M):
            raise ConfigError(
                f"max_range_m: must be a finite number > 0 and at most {MAX_RANGE_M:.0f} m, got "
                f"{self.max_range_m}"
            )


@dataclass(frozen=True)
class CalibrationMonitorConfig:
    """The calibration monitor (calibration.monitor): each camera's extrinsic scored against
    the lidar over a window of sweeps, off the hot path (after the outputs are published), and
    a drift flag with the estimated correction on the diagnostics."""

    enabled: bool = True
    """Watch the calibration."""
    every_n_sweeps: int = 4
    """Use one processed sweep in this many (its cost is measured in the bench)."""
    object_margin_m: float = 0.3
    """Points within this of a detection are left out: objects move between the lidar's and
    the camera's instants."""
    budget_ms_per_sweep: float = 2.0
    """The live node's bound on the monitor's CPU time, per processed sweep on average, ms (0:
    none): a due sweep is passed over (counted, `calibration_over_budget`) while the monitor
    has spent more than this per sweep since its start, allowing for `budget_burst_ms`."""
    budget_burst_ms: float = 1000.0
    """How far ahead of the budget the monitor may run, ms: a search for a drift (a few hundred
    ms) is not cut short, a monitor searching all the time is held to the budget."""
    thread_nice: int = 10
    """The live node's monitor thread runs this much nicer than the process (Linux schedules
    threads by their own nice; a thread of a SCHED_FIFO process is also moved to the normal
    policy), so that a search (up to a second of CPU) yields the cores to the pipeline; 0: the
    process's priority."""
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    """The evidence and the decision."""


@dataclass(frozen=True)
class TrackingConfig:
    """The multi-object tracker after fusion (perception.pipeline.tracking): one EKF per object
    in the world frame (ENU at the drive's origin with ego poses, else the vehicle frame),
    constant turn rate and velocity for `ctrv_labels`, constant velocity for every other label;
    Hungarian association of the box centres, gated on their Mahalanobis distance, at the cost
    of the pair's negative log-likelihood. A detection labelled `unknown` (lidar-only) may feed
    a track of any class, which keeps its class; a labelled one only a track of a compatible
    class (`compatible_labels`) or an `unknown` one, and a track's class is the one with the
    most score-weighted detections. Beside its motion model every track runs a stationary one
    (an interacting multiple model, perception.pipeline.tracking.modes), so that parked objects
    stand still. Per-class values are maps from the label; a label not listed takes the
    `unknown` entry, which every map must have."""

    confirm_hits: int = 3
    """A new (tentative) track is confirmed, and published, after this many detections ..."""
    confirm_window: int = 5
    """... within its first this many sweeps; one that can no longer make it is deleted."""
    max_coast_s: float = 1.5
    """A confirmed track not updated for this long is deleted (it coasts until then)."""
    max_gap_s: float = 2.0
    """Sweeps further apart than this (a stall, a clock jump) start the tracker over; more than
    the lidar's period (its rate in `inputs`)."""
    min_score: float = 0.2
    """Detections scoring below this are not tracked (they neither update nor start a track):
    the geometric fusion's lidar-only fragments, scored a few percent, would drag tracks off
    their objects and start false ones (0-1)."""
    gate_probability: float = 0.99
    """A detection matches a track only inside this probability mass of the track's predicted
    centre (chi-square, 2 degrees of freedom: 0.99 is a Mahalanobis distance of 3.03)."""
    moving_speed_mps: float = 1.0
    """Above this speed over the ground a track's heading is its direction of motion: a
    measured yaw more than 90 degrees off it is taken as flipped; below it, the measured yaw
    nearest the track's (modulo 180 degrees) is used."""
    size_smoothing: float = 0.3
    """Weight of a new detection in the smoothed size and height of its track (0-1]."""
    existence_hit_gain: float = 0.5
    """A detection with score s raises a track's existence probability p by
    (1 - p) * s * this (0-1]."""
    existence_miss_decay: float = 0.7
    """A sweep without a detection multiplies a track's existence probability by this (0-1)."""
    mode_switch_rate_hz: float = 0.01
    """Beside its motion model every track has a stationary one (an interacting multiple
    model): how often per second an object is expected to start or stop. The prior of a change
    of mode; low, so that one odd detection (a moving car's box that lags a sweep, a parked
    car's that jumps) cannot flip the mode, while a few consistent ones do (a single sweep's
    evidence weighs about 30:1)."""
    stationary_drift_mps: float = 0.1
    """The stationary model's random walk, m per square-root second: how far a standing
    object's detected centre may wander (the view of it changes as the ego passes)."""
    outlier_density_per_m2: float = 0.03
    """The floor of both models' measurement likelihoods, per m^2: a detection neither model
    explains (an outlier) leaves the stationary probability where it was."""
    initial_stationary_probability: dict[str, float] = field(
        default_factory=lambda: {
            "Car": 0.5,
            "Van": 0.5,
            "Truck": 0.5,
            "Pedestrian": 0.3,
            "Cyclist": 0.1,
            "unknown": 0.5,
        }
    )
    """Per label of the first detection: a new track's probability of the stationary model
    (0-1). Until its detections decide, a new track's published speed is scaled by one minus
    this: parked cars are common, a cyclist standing in the road rare."""
    compatible_labels: tuple[tuple[str, ...], ...] = (
        ("Car", "Van", "Truck"),
        ("Pedestrian", "Cyclist"),
    )
    """Groups of labels that may share a track (Autoware's can_assign matrix): a detector
    that calls a cyclist a pedestrian for a few sweeps, or a van a car, continues the track,
    whose class is then the one with the most score-weighted detections. Labels of different
    groups never share one; a label in no group only its own (and `unknown`)."""
    ctrv_labels: tuple[str, ...] = ("Car", "Van", "Truck")
    """Labels tracked with constant turn rate and velocity; the others with constant
    velocity."""
    accel_std_mps2: dict[str, float] = field(
        default_factory=lambda: {
            "Car": 1.0,
            "Van": 1.0,
            "Truck": 0.8,
            "Pedestrian": 1.0,
            "Cyclist": 1.5,
            "unknown": 1.5,
        }
    )
    """Process noise per label: acceleration, m/s^2 (along the heading for CTRV, per axis for
    constant velocity)."""
    yaw_accel_std_radps2: dict[str, float] = field(
        default_factory=lambda: {"Car": 0.5, "Van": 0.5, "Truck": 0.3, "unknown": 0.5}
    )
    """Process noise per label of the CTRV tracks: yaw acceleration, rad/s^2."""
    yaw_rate_std_radps: dict[str, float] = field(
        default_factory=lambda: {"Pedestrian": 1.5, "Cyclist": 0.8, "unknown": 1.0}
    )
    """Process noise per label of the constant-velocity tracks: how fast their heading may
    turn, rad/s."""
    position_std_m: dict[str, float] = field(
        default_factory=lambda: {
            "Car": 0.2,
            "Van": 0.2,
            "Truck": 0.3,
            "Pedestrian": 0.15,
            "Cyclist": 0.2,
            "unknown": 0.4,
        }
    )
    """Measurement noise per detection label: a detection's centre (x and y)."""
    yaw_std_rad: dict[str, float] = field(
        default_factory=lambda: {
            "Car": 0.3,
            "Van": 0.3,
            "Truck": 0.3,
            "Pedestrian": 0.5,
            "Cyclist": 0.3,
            "unknown": 0.3,
        }
    )
    """Measurement noise per detection label: a detection's yaw."""
    initial_speed_std_mps: dict[str, float] = field(
        default_factory=lambda: {
            "Car": 10.0,
            "Van": 10.0,
            "Truck": 8.0,
            "Pedestrian": 2.0,
            "Cyclist": 5.0,
            "unknown": 10.0,
        }
    )
    """Uncertainty per label of a new track's speed (it starts at rest)."""
    max_distance_m: dict[str, float] = field(
        default_factory=lambda: {
            "Car": 3.0,
            "Van": 3.0,
            "Truck": 4.0,
            "Pedestrian": 1.5,
            "Cyclist": 2.0,
            "unknown": 3.0,
        }
    )
    """Per label of the track: a detection farther than this, plus `max_speed_mps` times the
    time since the track's last update, from its predicted centre never matches it. A track
    with no detection inside its gate takes one left over within this distance (a manoeuvre
    beyond its process noise), its covariance grown to fit."""
    max_speed_mps: dict[str, float] = field(
        default_factory=lambda: {
            "Car": 50.0,
            "Van": 50.0,
            "Truck": 40.0,
            "Pedestrian": 5.0,
            "Cyclist": 15.0,
            "unknown": 50.0,
        }
    )
    """Per label of the track: the fastest it moves, which widens `max_distance_m` with the
    time since the track's last update (a new track's velocity is not known yet)."""

    def __post_init__(self) -> None:
        if self.confirm_hits < 1:
            raise ConfigError(f"confirm_hits: must be >= 1, got {self.confirm_hits}")
        if self.confirm_window < self.confirm_hits:
            raise ConfigError(
                f"confirm_window: must be >= confirm_hits ({self.confirm_hits}), "
                f"got {self.confirm_window}"
            )
        for name in ("max_coast_s", "max_gap_s", "moving_speed_mps"):
            value = getattr(self, name)
            if not _positive(value):
                raise ConfigError(f"{name}: must be a finite number > 0, got {value}")
        if not 0.0 <= self.min_score <= 1.0:
            raise ConfigError(f"min_score: must be in [0, 1], got {self.min_score}")
        if not 0.0 < self.gate_probability < 1.0:
            raise ConfigError(f"gate_probability: must be in (0, 1), got {self.gate_probability}")
        for name in ("size_smoothing", "existence_hit_gain"):
            value = getattr(self, name)
            if not 0.0 < value <= 1.0:
                raise ConfigError(f"{name}: must be in (0, 1], got {value}")
        if not 0.0 < self.existence_miss_decay < 1.0:
            raise ConfigError(
                f"existence_miss_decay: must be in (0, 1), got {self.existence_miss_decay}"
            )
        for name in ("mode_switch_rate_hz", "stationary_drift_mps", "outlier_density_per_m2"):
            value = getattr(self, name)
            if not _positive(value):
                raise ConfigError(f"{name}: must be a finite number > 0, got {value}")
        if "unknown" not in self.initial_stationary_probability:
            raise ConfigError(
                "initial_stationary_probability: needs an `unknown` entry (used for every "
                "label not listed)"
            )
        for label, value in self.initial_stationary_probability.items():
            if not 0.0 < value < 1.0:
                raise ConfigError(
                    f"initial_stationary_probability.{label}: must be in (0, 1), got {value}"
                )
        if not all(self.ctrv_labels):
            raise ConfigError("ctrv_labels: labels must not be empty")
        grouped: set[str] = set()
        for group in self.compatible_labels:
            if not group or not all(group):
                raise ConfigError("compatible_labels: groups and labels must not be empty")
            if "unknown" in group:
                raise ConfigError(
                    "compatible_labels: `unknown` is compatible with every label already"
                )
            twice = grouped.intersection(group)
            if twice:
                raise ConfigError(
                    f"compatible_labels: {sorted(twice)[0]!r} is in more than one group"
                )
            grouped.update(group)
        for name in (
            "accel_std_mps2",
            "yaw_accel_std_radps2",
            "yaw_rate_std_radps",
            "position_std_m",
            "yaw_std_rad",
            "initial_speed_std_mps",
            "max_distance_m",
            "max_speed_mps",
        ):
            per_label: dict[str, float] = getattr(self, name)
            if "unknown" not in per_label:
                raise ConfigError(
                    f"{name}: needs an `unknown` entry (used for every label not listed)"
                )
            for label, value in per_label.items():
                if not _positive(value):
                    raise ConfigError(f"{name}.{label}: must be a finite number > 0, got {value}")


@dataclass(frozen=True)
class SecurityConfig:
    """Access control of tcp endpoints (perception.io.curve). With `curve: true` every tcp
    socket uses ZeroMQ CURVE: encrypted, a socket that binds admits only clients whose public
    key is in `allowed_clients` (refused handshakes are counted on the node's diagnostics), and
    a socket that connects accepts only a server proving `server_key`. `play`, `record`, `echo`
    and `bench` take the same section from the same config. ipc endpoints are protected by
    their folder's permissions instead (`{runtime}`). Key files come from `perception keys
    generate`; paths are relative to the config file."""

    curve: bool = False
    """Require ZeroMQ CURVE on every tcp endpoint (bound and connected)."""
    secret_key: str | None = None
    """This process's key pair: the `.key_secret` file (mode 0600). Required with `curve`."""
    server_key: str | None = None
    """The public key file (`.key`) the servers this process connects to must prove; null: the
    public half of `secret_key` (processes sharing this config share one key pair)."""
    allowed_clients: str | None = None
    """A folder of public key files (`*.key`): the clients admitted to tcp endpoints this
    process binds. Required to bind a tcp endpoint with `curve`."""


def _check_port(port: int) -> None:
    if not 0 <= port <= 65535:
        raise ConfigError(f"port: must be in [0, 65535], got {port}")


@dataclass(frozen=True)
class ViewConfig:
    """The live view (perception.node.view): a Foxglove WebSocket server (foxglove-sdk) that
    the Foxglove app opens (`ws://HOST:PORT`), showing what the node works on: each processed
    sweep's camera images and lidar points, its detections and tracks as 3D boxes, the rig's
    frame transforms, the ego pose, the per-stage timings and the diagnostics. Off by default
    (`perception run --foxglove [PORT]` turns it on). The node hands each published frame to
    the view's own thread through a bounded queue that drops its oldest entry (counted), and
    nothing is converted for a channel no client subscribes to, so the node never waits for
    the view."""

    foxglove: bool = False
    """Serve the live view over Foxglove WebSocket."""
    host: str = "127.0.0.1"
    """Address the server binds; 0.0.0.0 serves every interface (the view has no access
    control: anyone who reaches the port sees the sensors)."""
    port: int = 8765
    """TCP port of the server (0: any free port, printed at start)."""
    queue_size: int = 2
    """Entries waiting for the view's thread, per kind (processed frames, diagnostics; per topic
    for `perception view`); a full queue drops its oldest entry."""
    max_points: int = 30_000
    """Lidar points shown per sweep (0: all): a sweep with more is thinned to every k-th point.
    A 120 k-point KITTI sweep is 2 MB a frame to copy and send, which a node with no idle CPU
    pays out of its own time; a quarter of it still shows the scene's shape in the app."""
    rate_hz: float = 5.0
    """Most frames shown a second (0: every one), by their stamps: a shown frame's images,
    points, boxes and tracks go together; timings and diagnostics are sent for every frame.
    Converting and sending a frame takes the view 1-2 ms of CPU, which a node with no idle CPU
    pays out of its own time."""
    image_scale: float = 0.5
    """Raw camera images are shown scaled by this (1: as they are; compressed ones always
    are): a quarter of the bytes for a viewer on the vehicle's network and for the node to
    copy (0.1 ms to scale a KITTI image)."""
    nice: int = 10
    """The view's thread runs this much nicer than the node (Linux: the thread's own nice
    value; 0: the node's priority, at most 19): where the CPU is short, the scheduler gives it
    to the node's threads before the view's, which then shows fewer frames."""

    def __post_init__(self) -> None:
        _check_port(self.port)
        if not 0 <= self.nice <= 19:
            raise ConfigError(f"nice: must be in [0, 19], got {self.nice}")
        if self.queue_size < 1:
            raise ConfigError(f"queue_size: must be >= 1, got {self.queue_size}")
        if self.max_points < 0:
            raise ConfigError(f"max_points: must be >= 0 (0: all), got {self.max_points}")
        if not (math.isfinite(self.image_scale) and 0.0 < self.image_scale <= 1.0):
            raise ConfigError(f"image_scale: must be in (0, 1], got {self.image_scale}")
        if not (math.isfinite(self.rate_hz) and self.rate_hz >= 0.0):
            raise ConfigError(
                f"rate_hz: must be a finite number >= 0 (0: every one), got {self.rate_hz}"
            )


@dataclass(frozen=True)
class MetricsConfig:
    """A Prometheus endpoint on the node (perception.node.metrics, prometheus-client):
    `http://HOST:PORT/metrics` serves per-stage latency histograms, the node's counters
    (received, dropped by reason, skipped, overruns, decode errors, ...) and each sensor's
    liveness. Off by default (`perception run --metrics [PORT]` turns it on)."""

    enabled: bool = False
    """Serve the metrics endpoint."""
    host: str = "127.0.0.1"
    """Address the endpoint binds (0.0.0.0: every interface)."""
    port: int = 9464
    """TCP port of the endpoint (0: any free port, printed at start)."""

    def __post_init__(self) -> None:
        _check_port(self.port)


@dataclass(frozen=True)
class NodeConfig:
    """Everything `perception run` needs. `rig` is the vehicle's calibration (a rig YAML or any
    format calibration.load_rig reads), in force until a rig message arrives on the rig topic;
    None: the rig comes over the rig topic only."""

    inputs: InputConfig = InputConfig()
    """Where the sensors publish."""
    outputs: OutputConfig = OutputConfig()
    """Where the node publishes."""
    camera_model: CameraModelConfig = CameraModelConfig()
    """The camera encoder's model."""
    engines: EngineSettings = field(default_factory=EngineSettings)
    """Where the engines run."""
    sync: SyncConfig = SyncConfig()
    """Time synchronisation."""
    clocks: ClockConfig = ClockConfig()
    """Sensor stamps against the host clock: implausible stamps, clock jumps."""
    budgets: BudgetConfig = BudgetConfig()
    """Latency budgets."""
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    """The per-sweep pipeline's tunables (ranges, ground fit, lidar-only objects)."""
    realtime: RealtimeConfig = field(default_factory=RealtimeConfig)
    """Real-time settings of the process."""
    watchdog: WatchdogConfig = field(default_factory=WatchdogConfig)
    """The live node's watchdog over its threads."""
    limits: WireLimits = field(default_factory=WireLimits)
    """Bounds on every message received; a message above one is dropped and counted."""
    rig: str | None = None
    """The vehicle's rig file (any format calibration reads), relative to the config file;
    null: the rig comes over the rig topic only."""
    security: SecurityConfig = field(default_factory=SecurityConfig)
    """Access control of tcp endpoints (CURVE)."""
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    """The multi-object tracker after fusion (tracks in the world frame)."""
    calibration_monitor: CalibrationMonitorConfig = field(default_factory=CalibrationMonitorConfig)
    """Watches each camera's extrinsic while the node runs."""
    view: ViewConfig = field(default_factory=ViewConfig)
    """The live view over Foxglove WebSocket (off by default)."""
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    """The Prometheus metrics endpoint (off by default)."""


T = TypeVar("T")

#: Integers reach numpy, ZeroMQ and the OS as C int64 at most.
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
#: Durations whose key does not end in their unit.
_DURATION_UNITS = {"calibration_monitor.budget_ms_per_sweep": "ms"}
#: Durations that may be negative: a camera may fire before the sweep stamp.
_SIGNED_DURATIONS = {"sync.camera_offsets_ms"}
#: Maps whose given entries replace the defaults of their keys, the others keeping theirs: a
#: budget for one stage must not drop the others'. (No entry can be removed, so that what
#: `perception config show` prints loads as the same config.)
_MERGED_MAPS = {"budgets.stages_ms"}


def _shown_int(value: int) -> str:
    # A long integer swamps the line; Python refuses to print one of more than 4300 digits.
    try:
        text = str(value)
    except ValueError:
        return f"an integer of more than {sys.get_int_max_str_digits()} digits"
    return text if len(text) <= 40 else f"an integer of {len(text.lstrip('-'))} digits"


def _convert(value: Any, hint: Any, key: str) -> Any:
    origin = getattr(hint, "__origin__", None)
    args: tuple[Any, ...] = tuple(getattr(hint, "__args__", ()))
    if is_dataclass(hint) and isinstance(hint, type):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__}")
        return _build(hint, value, key)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__}")
        return tuple(_convert(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__}")
        return {str(k): _convert(v, args[1], f"{key}.{k}") for k, v in value.items()}
    if isinstance(hint, types.UnionType) and type(None) in args:
        (inner,) = [a for a in args if a is not type(None)]
        return None if value is None else _convert(value, inner, key)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: expected a number, got {value!r}{yaml_text_hint(value)}")
        if isinstance(value, int) and abs(value) > sys.float_info.max:
            raise ConfigError(f"{key}: must be a finite number, got {_shown_int(value)}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            hint_text = yaml_text_hint(value, integer=True)
            raise ConfigError(f"{key}: expected an integer, got {value!r}{hint_text}")
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise ConfigError(
                f"{key}: must fit a 64-bit integer (-2**63 to 2**63-1), got {_shown_int(value)}"
            )
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported type {hint}")  # pragma: no cover - schema bug


# Keys that moved: where they are now (an old config gets told, not just refused).
_MOVED = {
    "max_points": "limits.max_points",
    "inputs.max_message_bytes": "limits.max_message_bytes",
}


def _build(cls: type[T], doc: dict[str, Any], prefix: str) -> T:
    hints = get_type_hints(cls)
    names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    for key in doc:
        if key not in names:
            where = f"{prefix}.{key}" if prefix else str(key)
            if where in _MOVED:
                raise ConfigError(f"{where}: this key is now {_MOVED[where]}")
            raise ConfigError(f"{where}: unknown key (known: {', '.join(sorted(names))})")
    kwargs = {}
    for k, given in doc.items():
        key = f"{prefix}.{k}" if prefix else k
        value = given
        if key in _MERGED_MAPS and isinstance(given, dict):
            value = {**getattr(cls(), k), **given}  # over the section's default map
        kwargs[k] = _convert(value, hints[k], key)
    try:
        return cls(**kwargs)
    except EngineError as e:  # EngineSettings validates itself, naming `engines.<key>`
        raise ConfigError(str(e)) from None
    except (ConfigError, ValueError) as e:  # a section's checks name its keys: prefix the section
        raise ConfigError(f"{prefix}.{e}" if prefix else str(e)) from None


def _positive(value: float) -> bool:
    return math.isfinite(value) and value > 0


def _validate(cfg: NodeConfig) -> None:
    checks = [
        (cfg.sync.window_ms > 0, "sync.window_ms", "must be > 0"),
        (cfg.sync.timeout_ms > 0, "sync.timeout_ms", "must be > 0"),
        (
            # 0 took a fix only at the sweep's very stamp: no bundle had one (no ego pose, no
            # global positions), and nothing said why.
            cfg.sync.gnss_window_ms > 0,
            "sync.gnss_window_ms",
            "must be > 0 (0: a fix joins a bundle only at the sweep's very stamp, i.e. never)",
        ),
        (
            0 < cfg.sync.queue_size <= _MAX_SYNC_QUEUE,
            "sync.queue_size",
            f"must be from 1 to {_MAX_SYNC_QUEUE}",
        ),
        (cfg.sync.queue_bytes > 0, "sync.queue_bytes", "must be > 0"),
        (
            cfg.sync.policy in ("collector", "approximate_time"),
            "sync.policy",
            "must be 'collector' or 'approximate_time'",
        ),
        (cfg.sync.age_penalty >= 0, "sync.age_penalty", "must be >= 0"),
        (
            all(w > 0 for w in cfg.sync.camera_windows_ms.values()),
            "sync.camera_windows_ms",
            "every window must be > 0",
        ),
        (len(cfg.inputs.endpoints) > 0, "inputs.endpoints", "needs at least one endpoint"),
        (len(cfg.inputs.camera_topics) > 0, "inputs.camera_topics", "needs at least one camera"),
        (
            len(cfg.inputs.camera_topics) <= _MAX_CAMERAS,
            "inputs.camera_topics",
            f"at most {_MAX_CAMERAS} cameras, got {len(cfg.inputs.camera_topics)}",
        ),
        (
            0 < cfg.inputs.high_water_mark <= MAX_C_INT,
            "inputs.high_water_mark",
            f"must be from 1 to {MAX_C_INT} (a ZeroMQ socket option: a C int)",
        ),
        (
            0 < cfg.outputs.high_water_mark <= MAX_C_INT,
            "outputs.high_water_mark",
            f"must be from 1 to {MAX_C_INT} (a ZeroMQ socket option: a C int)",
        ),
        (_positive(cfg.inputs.default_rate_hz), "inputs.default_rate_hz", "must be > 0"),
        (cfg.inputs.dead_after_periods >= 1, "inputs.dead_after_periods", "must be >= 1"),
        (
            cfg.calibration_monitor.every_n_sweeps >= 1,
            "calibration_monitor.every_n_sweeps",
            "must be >= 1",
        ),
        (
            math.isfinite(cfg.calibration_monitor.object_margin_m)
            and cfg.calibration_monitor.object_margin_m >= 0,
            "calibration_monitor.object_margin_m",
            "must be >= 0",
        ),
        (
            math.isfinite(cfg.calibration_monitor.budget_ms_per_sweep)
            and cfg.calibration_monitor.budget_ms_per_sweep >= 0,
            "calibration_monitor.budget_ms_per_sweep",
            "must be >= 0 (0: no bound)",
        ),
        (
            _positive(cfg.calibration_monitor.budget_burst_ms),
            "calibration_monitor.budget_burst_ms",
            "must be > 0",
        ),
        (
            0 <= cfg.calibration_monitor.thread_nice <= 19,
            "calibration_monitor.thread_nice",
            "must be 0..19",
        ),
        (_positive(cfg.clocks.max_offset_ms), "clocks.max_offset_ms", "must be > 0"),
        (_positive(cfg.clocks.jump_threshold_ms), "clocks.jump_threshold_ms", "must be > 0"),
        (
            _positive(cfg.clocks.max_delay_ms)
            and cfg.clocks.max_delay_ms >= cfg.clocks.jump_threshold_ms,
            "clocks.max_delay_ms",
            "must be >= clocks.jump_threshold_ms",
        ),
        (
            1 <= cfg.clocks.jump_confirm <= _CLOCK_WINDOW,
            "clocks.jump_confirm",
            f"must be from 1 to {_CLOCK_WINDOW} (the messages a clock's estimate holds)",
        ),
        (cfg.clocks.jump_confirm_ms >= 0, "clocks.jump_confirm_ms", "must be >= 0"),
        (
            2 <= cfg.clocks.warmup_messages <= _CLOCK_WINDOW,
            "clocks.warmup_messages",
            f"must be from 2 to {_CLOCK_WINDOW} (the messages a clock's estimate holds)",
        ),
        (cfg.clocks.max_drift_ppm >= 1, "clocks.max_drift_ppm", "must be >= 1"),
        (
            # An empty path named the current folder, which the engine then refused as ": is
            # a folder".
            bool(cfg.camera_model.path.strip()),
            "camera_model.path",
            "must not be empty (an ONNX file or a registered model name)",
        ),
        (
            0.0 <= cfg.camera_model.score_threshold <= 1.0,
            "camera_model.score_threshold",
            "must be in [0, 1]",
        ),
        (0.0 < cfg.camera_model.nms_iou <= 1.0, "camera_model.nms_iou", "must be in (0, 1]"),
        (
            0 <= cfg.camera_model.num_threads <= MAX_THREADS,
            "camera_model.num_threads",
            f"must be from 0 to {MAX_THREADS}",
        ),
        (
            1 <= cfg.camera_model.batch <= _MAX_CAMERA_BATCH,
            "camera_model.batch",
            f"must be from 1 to {_MAX_CAMERA_BATCH} (cameras per engine call)",
        ),
        (cfg.budgets.end_to_end_ms > 0, "budgets.end_to_end_ms", "must be > 0"),
        (
            all(0 <= c <= _MAX_CPU for c in cfg.realtime.cpu_affinity),
            "realtime.cpu_affinity",
            f"CPU numbers must be from 0 to {_MAX_CPU} (Linux's most CPUs)",
        ),
        (
            cfg.realtime.nice is None or -20 <= cfg.realtime.nice <= 19,
            "realtime.nice",
            "must be in [-20, 19]",
        ),
        (
            cfg.realtime.fifo_priority is None or 1 <= cfg.realtime.fifo_priority <= 99,
            "realtime.fifo_priority",
            "must be in [1, 99]",
        ),
    ]
    for ok, key, problem in checks:
        if not ok:
            raise ConfigError(f"{key}: {problem}")
    _check_topics(cfg.inputs, cfg.outputs)
    _check_stage_budgets(cfg.budgets.stages_ms)
    for key, per_camera in (
        ("sync.camera_offsets_ms", cfg.sync.camera_offsets_ms),
        ("sync.camera_windows_ms", cfg.sync.camera_windows_ms),
    ):
        for topic in per_camera:
            # The synchroniser looks its cameras up by topic: one not subscribed (a typo, a
            # camera of another rig) was never used, and its camera matched at offset 0.
            if topic not in cfg.inputs.camera_topics:
                raise ConfigError(
                    f"{key}.{topic}: not a camera topic of inputs.camera_topics (known: "
                    f"{', '.join(cfg.inputs.camera_topics)})"
                )
    sensors = (cfg.inputs.lidar_topic, *cfg.inputs.camera_topics, cfg.inputs.gnss_topic)
    for topic, rate in cfg.inputs.rates_hz.items():
        if topic not in sensors:
            raise ConfigError(
                f"inputs.rates_hz.{topic}: not a sensor topic (known: {', '.join(sensors)})"
            )
        if not _positive(rate):
            raise ConfigError(f"inputs.rates_hz.{topic}: must be a finite rate > 0, got {rate}")
    # Liveness keeps each sensor's period in integer nanoseconds, and declares it dead after
    # `dead_after_periods` of them: both must make a duration the node can hold (see
    # MAX_DURATION_S), and a period under a nanosecond would be zero (every sensor dead).
    for key, rate in (
        ("inputs.default_rate_hz", cfg.inputs.default_rate_hz),
        *((f"inputs.rates_hz.{t}", r) for t, r in cfg.inputs.rates_hz.items()),
    ):
        if not _MIN_RATE_HZ <= rate <= _MAX_RATE_HZ:
            raise ConfigError(
                f"{key}: must be from {_MIN_RATE_HZ:g} to {_MAX_RATE_HZ:g} Hz (a period from "
                f"1 ns to {MAX_DURATION_S:.0f} s), got {rate}"
            )
    lidar_hz = cfg.inputs.rates_hz.get(cfg.inputs.lidar_topic, cfg.inputs.default_rate_hz)
    if cfg.tracking.max_gap_s * lidar_hz <= 1.0:
        # The tracker starts over when sweeps lie further apart than this: at every sweep, and
        # no track was ever confirmed (exit 0, no TrackList with a track, nothing said).
        raise ConfigError(
            f"tracking.max_gap_s: {cfg.tracking.max_gap_s:g} s is not more than the lidar's "
            f"period ({1.0 / lidar_hz:g} s at {lidar_hz:g} Hz, inputs.rates_hz or "
            "default_rate_hz): the tracker would start over at every sweep"
        )
    if cfg.inputs.dead_after_periods > _MAX_DEAD_AFTER_PERIODS:
        raise ConfigError(
            f"inputs.dead_after_periods: must be at most {_MAX_DEAD_AFTER_PERIODS:.0f}, got "
            f"{cfg.inputs.dead_after_periods}"
        )
    connected = set(cfg.inputs.endpoints)  # the node connects to its inputs, binds its outputs
    for ep in (*cfg.inputs.endpoints, cfg.outputs.endpoint):
        if not ep.startswith(("ipc://", "tcp://", "inproc://")):
            raise ConfigError(f"endpoint {ep!r}: scheme must be ipc://, tcp:// or inproc://")
        if "{runtime}" in ep and not ep.startswith("ipc://"):
            raise ConfigError(f"endpoint {ep!r}: {{runtime}} is a folder, for ipc:// only")
        if ep == "ipc://":
            # Shown as valid by `config show`, refused only when `run` bound or connected it.
            raise ConfigError(
                f"endpoint {ep!r}: an ipc endpoint names a socket file, e.g. ipc://{{runtime}}/name"
            )
        fault = endpoint_problem(ep, connect=ep in connected)
        if fault is not None:
            raise ConfigError(f"endpoint {ep!r}: {fault}")
    for i, ep in enumerate(cfg.inputs.endpoints):
        if _same_endpoint(ep, cfg.outputs.endpoint):
            raise ConfigError(
                f"inputs.endpoints[{i}]: {ep!r} is outputs.endpoint {cfg.outputs.endpoint!r} "
                "(the node would listen to itself)"
            )
    if cfg.security.curve:
        if cfg.security.secret_key is None:
            raise ConfigError("security.secret_key: required when security.curve is true")
        if cfg.security.allowed_clients is None and cfg.outputs.endpoint.startswith("tcp://"):
            raise ConfigError(
                "security.allowed_clients: required when security.curve is true and the node "
                "binds a tcp outputs.endpoint (the clients it admits)"
            )
        tcp = [ep.startswith("tcp://") for ep in cfg.inputs.endpoints]
        if any(tcp) and not all(tcp):
            # One SUB socket per topic connects to every input endpoint, and CURVE is a
            # property of the socket: it cannot speak CURVE to some peers and not others.
            raise ConfigError(
                "inputs.endpoints: with security.curve, the inputs must be all tcp:// or none"
            )


#: The messages a sensor clock's estimate holds (perception.sync.clock.ClockEstimator's
#: window): more warm-up messages than that are never reached, and every message of every stream
#: was dropped; a jump confirmed by more, never confirmed.
_CLOCK_WINDOW = 256
#: The most messages buffered per stream: the GNSS fixes kept, five times as many, made a buffer
#: beyond what a C size holds (an OverflowError when the node started).
_MAX_SYNC_QUEUE = 1_000_000
#: The highest CPU number Linux has (NR_CPUS is at most 8192); Python refuses much larger ones
#: with an OverflowError rather than the OSError of a CPU this machine lacks.
_MAX_CPU = 8191
#: Sensor rates: a period of at most MAX_DURATION_S, at least a nanosecond.
_MIN_RATE_HZ, _MAX_RATE_HZ = 1.0 / MAX_DURATION_S, 1e9
_MAX_DEAD_AFTER_PERIODS = 1e6


def _check_topics(inputs: InputConfig, outputs: OutputConfig) -> None:
    """Every topic named, each once per side, none longer than a subscription may name: an
    empty one is, as a ZeroMQ prefix, every topic, and a topic given two roles (two cameras, a
    camera and the lidar) feeds one stream twice."""
    sides = (
        (
            ("inputs.lidar_topic", inputs.lidar_topic),
            *((f"inputs.camera_topics[{i}]", t) for i, t in enumerate(inputs.camera_topics)),
            ("inputs.gnss_topic", inputs.gnss_topic),
            ("inputs.rig_topic", inputs.rig_topic),
        ),
        (
            ("outputs.detections_topic", outputs.detections_topic),
            ("outputs.tracks_topic", outputs.tracks_topic),
            ("outputs.diagnostics_topic", outputs.diagnostics_topic),
        ),
    )
    for side in sides:
        seen: dict[str, str] = {}
        for key, topic in side:
            if not topic:
                raise ConfigError(f"{key}: must not be empty")
            size = topic_bytes(topic)
            if size > MAX_TOPIC_BYTES:
                # A publisher drops the connection of a longer subscription: the node would
                # wait for ever on the topic.
                raise ConfigError(
                    f"{key}: {size} bytes long; a topic may be at most {MAX_TOPIC_BYTES}"
                )
            if topic in seen:
                raise ConfigError(f"{key}: {topic!r} is already {seen[topic]}")
            seen[topic] = key


def _budget_stages() -> frozenset[str]:
    from perception.pipeline.timing import (  # noqa: PLC0415 (perception.pipeline imports us)
        ENGINE_STAGES,
        STAGES,
    )

    # The DetectionList's stages, the TrackList's own, and the engines' `<stage>_gpu` timings.
    return frozenset((*STAGES, "tracking", *(f"{s}_gpu" for s in ENGINE_STAGES)))


def _check_stage_budgets(stages_ms: dict[str, float]) -> None:
    defaults = BudgetConfig().stages_ms
    if all(name in defaults for name in stages_ms):
        return  # the defaults' stages are known (and importing the pipeline takes 0.1 s)
    known = _budget_stages()
    for name in stages_ms:
        if name not in known:
            raise ConfigError(
                f"budgets.stages_ms.{name}: not a stage (known: {', '.join(sorted(known))})"
            )


_LOCAL_HOSTS = ("*", "0.0.0.0", "localhost", "::1", "[::1]", "[::]", "::")


def _same_endpoint(connect: str, bind: str) -> bool:
    """Whether a socket connecting to `connect` reaches one bound at `bind` on this host."""
    if connect == bind:
        return True
    scheme, _, c_rest = connect.partition("://")
    b_scheme, _, b_rest = bind.partition("://")
    if scheme != b_scheme:
        return False
    if scheme == "ipc":
        return os.path.normpath(c_rest) == os.path.normpath(b_rest)
    if scheme != "tcp":
        return False
    c_host, _, c_port = c_rest.rpartition(":")
    b_host, _, b_port = b_rest.rpartition(":")
    if c_port != b_port:
        return False
    c_local = c_host in _LOCAL_HOSTS or c_host.startswith("127.")
    b_local = b_host in _LOCAL_HOSTS or b_host.startswith("127.")
    return c_host == b_host or (c_local and b_local)


def _duration_unit(field_path: str, name: str) -> str | None:
    if field_path in _DURATION_UNITS:
        return _DURATION_UNITS[field_path]
    for unit in ("ms", "s"):
        if name.endswith(f"_{unit}"):
            return unit
    return None


def _check_numbers(value: Any, key: str, field_path: str, name: str) -> None:
    """Rules for every number of the config, after the sections' own checks (whose messages
    say more): each float finite, each duration from 0 (an offset: from minus the most) to
    MAX_DURATION_S. `field_path` is the dotted field `value` belongs to (without map keys)."""
    if is_dataclass(value):
        for f in fields(value):
            path = f"{field_path}.{f.name}" if field_path else f.name
            _check_numbers(getattr(value, f.name), path, path, f.name)
    elif isinstance(value, dict):
        for k, v in value.items():
            _check_numbers(v, f"{key}.{k}", field_path, name)
    elif isinstance(value, tuple):
        for i, v in enumerate(value):
            _check_numbers(v, f"{key}[{i}]", field_path, name)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigError(f"{key}: must be a finite number, got {value}")
        unit = _duration_unit(field_path, name)
        if unit is None:
            return
        most = MAX_DURATION_S * (1e3 if unit == "ms" else 1.0)
        least = -most if field_path in _SIGNED_DURATIONS else 0.0
        if not least <= value <= most:
            raise ConfigError(
                f"{key}: must be a duration from {least:.0f} to {most:.0f} {unit}, got {value}"
            )


def parse_config(doc: dict[str, Any] | None, source: str = "config") -> NodeConfig:
    """Build and validate a NodeConfig from a parsed document; ConfigError names source + key."""
    try:
        cfg = _build(NodeConfig, doc or {}, "")
        _validate(cfg)
        _check_numbers(cfg, "", "", "")
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None
    return cfg


def _relative_to(base: Path, path: str | None) -> str | None:
    if path is None or Path(path).expanduser().is_absolute():
        return path
    return str(base / path)


def load_config(path: Path) -> NodeConfig:
    """Read a YAML node configuration. Relative paths inside it resolve against its folder.

    Raises ConfigError naming the file when it cannot be read, is not UTF-8 text or not YAML,
    and naming the key for an invalid value."""
    doc = load_yaml(read_text(path, "config", ConfigError), path, "invalid YAML", ConfigError)
    if doc is not None and not isinstance(doc, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    cfg = parse_config(doc, str(path))
    # Absolute: `config show` printed `sub/m.onnx` for `m.onnx` in sub/c.yaml, which, read back
    # from sub/ as a config, named sub/sub/m.onnx.
    base = path.parent.absolute()
    model = cfg.camera_model
    if not Path(model.path).expanduser().is_absolute() and model.path.endswith(".onnx"):
        model = CameraModelConfig(**{**model.__dict__, "path": str(base / model.path)})
    fusion = cfg.pipeline.fusion
    if not Path(fusion.model).expanduser().is_absolute() and fusion.model.endswith(".onnx"):
        # Read from the folder the node ran in, unlike every other path of the config.
        fusion = replace(fusion, model=str(base / fusion.model))
    rig = cfg.rig
    if rig is not None and not Path(rig).expanduser().is_absolute():
        rig = str(base / rig)
    sec = cfg.security
    security = SecurityConfig(
        curve=sec.curve,
        secret_key=_relative_to(base, sec.secret_key),
        server_key=_relative_to(base, sec.server_key),
        allowed_clients=_relative_to(base, sec.allowed_clients),
    )
    pipeline = replace(cfg.pipeline, fusion=fusion)
    return NodeConfig(
        **{
            **cfg.__dict__,
            "camera_model": model,
            "rig": rig,
            "security": security,
            "pipeline": pipeline,
        }
    )
