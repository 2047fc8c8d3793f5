"""One synced bundle in, one DetectionList out: preprocess -> engines -> fusion -> postprocess.

`Pipeline.step` is deterministic given its inputs (timings aside): the live node, offline replay
and the tests all call it, so a recorded drive re-run through it gives the same detections.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from calibration import CameraModel, LocalTangentPlane, Rig, RigidTransform, vehicle_pose_from_gnss
from calibration.images import encoded_image_size
from engines.camera.detector import Box2D, CameraDetector, Letterbox
from engines.engine import Engine
from engines.factory import EngineFactory, create_node_engines
from engines.fusion.config import FusionEngineConfig
from engines.fusion.learned_runner import LearnedFusionRunner
from engines.fusion.runner import FusionEngineRunner
from engines.lidar.config import OBSTACLE_CONFIG
from engines.lidar.runner import LidarEncoderRunner
from engines.settings import EngineSettings
from perception.config import CameraModelConfig, PipelineConfig
from perception.msgs.types import (
    CameraBox,
    CameraFrame,
    Detection3D,
    DetectionList,
    GnssFix,
    Header,
    SyncedBundle,
)
from perception.pipeline.boxes import suppress_duplicates
from perception.pipeline.camera_health import image_problem, measure_image
from perception.pipeline.deskew import deskew_sweep, ego_twist, vehicle_motion
from perception.pipeline.ensemble import learned_detections, merge_ensemble
from perception.pipeline.ground import GroundPlane, estimate_ground
from perception.pipeline.learned_model import load_learned_model
from perception.pipeline.lidar_objects import LidarClusters, LidarObjects
from perception.pipeline.painting import PaintView, paint_points
from perception.pipeline.timing import StageTimer, overlap_ns
from perception.ratelimit import RateLimitedLogger

__all__ = [
    "CameraEncoding",
    "Pipeline",
    "PipelineConfig",
    "StepFrame",
    "build_detector",
    "camera_detector",
    "frame_image",
]

log = logging.getLogger(__name__)
#: Consecutive sweeps on the prior ground before it is said (one sweep with few ground returns
#: is no fault).
_PRIOR_GROUND_SWEEPS = 10


def camera_detector(model: CameraModelConfig, engine: Engine) -> CameraDetector:
    """The 2D detector of `model` (its head, score threshold, NMS) around the camera encoder
    `engine`."""
    return CameraDetector(
        engine, kind=model.kind, score_threshold=model.score_threshold, nms_iou=model.nms_iou
    )


def build_detector(
    model: CameraModelConfig, model_path: Path | None = None, engines: EngineSettings | None = None
) -> CameraDetector:
    """The camera encoder alone, as `Pipeline.from_config` builds it (the engine factory, the
    model's batch and threads) with its 2D detector: for what times or runs only the camera.

    Raises as `Pipeline.from_config` does for the camera model."""
    factory = EngineFactory(engines or EngineSettings())
    engine = factory.camera_encoder(
        model_path or model.path, batch=model.batch, threads=model.num_threads or None
    )
    return camera_detector(model, engine)


@dataclass(frozen=True, eq=False)
class StepFrame:
    """What one `Pipeline.step` worked on, for consumers off the hot path (the calibration
    monitor): the sweep's points in the vehicle frame at its stamp (deskewed, N x 4), each fit
    camera's image with the vehicle's motion from the sweep stamp to its exposure
    (``vehicle(exposure)_from_vehicle(sweep)``), the rig, the ego twist over the sweep (None
    without GNSS), the detections and the ground plane fitted to the sweep."""

    stamp_ns: int
    points: npt.NDArray[np.float32]
    images: dict[str, tuple[npt.NDArray[np.uint8], RigidTransform]]
    rig: Rig
    twist: tuple[tuple[float, float, float], float] | None
    detections: tuple[Detection3D, ...]
    ground: GroundPlane | None = None


@dataclass(frozen=True, eq=False)
class _LidarBranch:
    """The lidar branch's results: the ground plane, the lidar-only clusters, and its times:
    the ground and the lidar encoder's (wall, and on the GPU where the engine can tell), the
    clusters', and when it ended (`time.perf_counter_ns`)."""

    ground: GroundPlane
    clusters: LidarClusters
    encoder_ns: int
    objects_ns: int
    gpu_ns: int | None
    end_ns: int


@dataclass(frozen=True, eq=False)
class CameraEncoding:
    """One camera frame through the camera branch (`Pipeline.encode_camera`): the frame and
    the camera model it was encoded with, its image, what makes it unfit (None if fit; no boxes
    then), its 2D boxes, and the time its encoder took."""

    frame: CameraFrame
    camera: CameraModel
    image: npt.NDArray[np.uint8]
    problem: str | None
    boxes: tuple[Box2D, ...]
    encoder_ns: int = 0


def frame_image(frame: CameraFrame) -> npt.NDArray[np.uint8]:
    """A camera frame's image (H x W x 3 BGR), decoded when it travels encoded.

    Raises:
        ValueError: encoded data that does not decode (names the stream).
    """
    if frame.image is not None:
        return frame.image
    assert frame.data is not None
    # The wire judged the size its header gives (max_image_pixels); one that gives none is
    # not decoded at all: what it would decode to is unknown.
    if encoded_image_size(frame.data) is None:
        raise ValueError(f"{frame.header.stream}: {frame.encoding} image header gives no size")
    image = cv2.imdecode(np.frombuffer(frame.data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"{frame.header.stream}: cannot decode {frame.encoding} image")
    return np.asarray(image, dtype=np.uint8)


def _closed_thresholds(
    model: CameraModelConfig, learned: LearnedFusionRunner | None
) -> tuple[str, ...]:
    """A line for each score threshold of 1, which the config allows but which keeps (almost)
    nothing: the camera keeps a box scoring above its threshold, so at 1 the cameras find
    nothing to fuse; the learned engine keeps a detection scoring at least its class's, so at 1
    only saturated scores pass."""
    notes = []
    if model.score_threshold >= 1.0:
        notes.append(
            "camera_model.score_threshold 1: no camera box scores above it, so the cameras add "
            "nothing to the detections"
        )
    if learned is not None:
        closed = [c for c, t in zip(learned.config.classes, learned.thresholds, strict=True)
                  if t >= 1.0]  # fmt: skip
        if closed:
            notes.append(
                f"learned fusion score threshold 1 for {', '.join(closed)}: only scores of "
                "exactly 1 pass, so almost none of them is detected"
            )
    return tuple(notes)


class Pipeline:
    """The node's library object: one `step()` per synced bundle.

    Stages: preprocess (lidar to the vehicle frame; each camera image checked for darkness and
    blur, an unfit one -- or one whose data does not decode -- left out as if missing and listed
    as degraded (camera_health); undistortion
    of distorted cameras, letterbox),
    camera encoder (2D boxes per camera), lidar encoder (the ground plane, then the BEV grid of the
    returns above it), fusion (the compiled fusion engine per camera: boxes + the points in that
    camera's view -> 3D boxes; then the BEV clusters no camera box explains -> `unknown` objects
    with `sources=("lidar",)`), postprocess (BEV duplicate suppression across cameras, global
    positions from GNSS).

    Args:
        detector: the camera encoder.
        config: tunables.
        fusion: the fusion engine (default: the packaged export on ONNX Runtime, CPU).
        lidar_objects: the lidar-only branch with its lidar encoder (default: likewise).
        notes: what runs other than configured (the engine factory's fallback notes), for
            :attr:`notes`.
    """

    def __init__(
        self,
        detector: CameraDetector,
        config: PipelineConfig | None = None,
        fusion: FusionEngineRunner | None = None,
        lidar_objects: LidarObjects | None = None,
        *,
        learned: LearnedFusionRunner | None = None,
        notes: Sequence[str] = (),
        detections_stream: str = "detections",
    ) -> None:
        self.detector = detector
        self.config = config or PipelineConfig()
        self.fusion = fusion or FusionEngineRunner(EngineFactory().fusion_engine())
        self.lidar_objects = lidar_objects or LidarObjects(self.config.lidar_objects)
        if self.config.fusion.kind != "geometric" and learned is None:
            raise ValueError(
                f"pipeline.fusion.kind {self.config.fusion.kind} needs the learned engine"
            )
        self.learned = learned
        self.detections_stream = detections_stream
        self._notes = tuple(notes)
        self._camera_log = RateLimitedLogger(log)
        # The level plane at the prior, which the ground fit falls back to; the consecutive
        # sweeps whose ground was it, and their bounded-rate line.
        self._prior_ground = GroundPlane.horizontal(self.config.ground.ground_prior_z_m)
        self._prior_sweeps = 0
        self._ground_log = RateLimitedLogger(log)
        #: What the last `step` worked on (None before the first).
        self.last_frame: StepFrame | None = None
        # One worker for the lidar branch (`parallel_branches`); its thread ends with the
        # pipeline (the executor's weak reference) or at interpreter exit.
        self._branches = (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="lidar-branch")
            if self.config.parallel_branches
            else None
        )

    @classmethod
    def from_config(
        cls,
        model: CameraModelConfig,
        model_path: Path | None = None,
        engines: EngineSettings | None = None,
        config: PipelineConfig | None = None,
        *,
        detections_stream: str = "detections",
    ) -> Pipeline:
        """The pipeline with the configured camera encoder; `model_path` overrides the file.
        A registered model name (engines.registry) is fetched into the model cache when absent;
        `model.batch` > 1 runs that many cameras per engine call (engines.camera.batching).
        `config` holds the pipeline's tunables (the node config's `pipeline` section);
        `detections_stream` names the DetectionLists' stream (the node's detections topic).
        `engines` (the node config's `engines` section) chooses where every engine runs; all
        three are built by the engine factory (engines.factory.create_node_engines), TensorRT
        ones through the engine cache.
        Raises engines.errors.ModelError when the model is missing or invalid, EngineError when
        it cannot be batched, built or loaded, or the backend or device cannot run here (one
        line; unless `engines.fallback` allows a fallback, reported in `notes`)."""
        fusion_config = FusionEngineConfig()
        config = config or PipelineConfig()
        engines = engines or EngineSettings()
        # Beside the camera encoder the lidar encoder takes one intra-op thread, the camera
        # keeps the default (one per core): the camera's is the longer branch, and two pools of
        # a thread per core each on the same cores only take turns.
        lidar_threads = 1 if config.parallel_branches and not engines.threads else None
        # Read before any engine is built: a bad learned model config fails at once.
        learned_model = None
        if config.fusion.kind != "geometric":
            learned_model = load_learned_model(config.fusion.model)
        built = create_node_engines(
            engines,
            model_path or model.path,
            camera_batch=model.batch,
            camera_threads=model.num_threads or None,
            lidar_threads=lidar_threads,
            lidar_config=OBSTACLE_CONFIG,
            fusion_config=fusion_config,
            learned_model=learned_model,
        )
        detector = camera_detector(model, built.camera)
        encoder = LidarEncoderRunner(built.lidar, OBSTACLE_CONFIG)
        learned = None
        if built.learned is not None:
            learned = LearnedFusionRunner.for_model(*built.learned, config.fusion.score_threshold)
        closed = _closed_thresholds(model, learned)
        for note in closed:
            log.warning("%s", note)
        return cls(
            detector,
            config,
            fusion=FusionEngineRunner(built.fusion, fusion_config),
            lidar_objects=LidarObjects(config.lidar_objects, encoder=encoder),
            learned=learned,
            notes=(*built.notes, *closed),
            detections_stream=detections_stream,
        )

    @property
    def notes(self) -> tuple[str, ...]:
        """What runs other than configured, one human-readable line each (e.g. "engines.backend
        tensorrt: TensorRT 10 is not installed (...); running onnxruntime on cpu"), for the
        node's diagnostics; empty when every engine runs as configured."""
        return self._notes

    def engines(self) -> tuple[tuple[str, Engine], ...]:
        """The engines the pipeline runs, by stage: camera encoder, lidar encoder, fusion, and
        the learned fusion engine when `pipeline.fusion.kind` uses it."""
        stages: tuple[tuple[str, Engine], ...] = (
            ("camera_encoder", self.detector.engine),
            ("lidar_encoder", self.lidar_objects.encoder.engine),
            ("fusion", self.fusion.engine),
        )
        if self.learned is not None:
            stages += (("learned_fusion", self.learned.engine),)
        return stages

    def describe_engines(self) -> tuple[str, ...]:
        """One line per engine: its stage, backend, device and precision as in use (not as
        requested) and the model, e.g. "camera_encoder: onnxruntime cpu fp32
        yolox_nano_coco_416.onnx"."""
        lines = []
        for stage, engine in self.engines():
            d = engine.describe()
            lines.append(f"{stage}: {d.backend} {d.device} {d.precision} {d.model}".rstrip())
        return tuple(lines)

    def warm_up(self, image_shape: tuple[int, int, int] = (375, 1242, 3)) -> None:
        """Runs every engine once on blank inputs, and makes the lidar encoder of every point
        bucket, the fusion engine of every bucket shape and the learned engine of every pillar
        count: the first ONNX Runtime call of a session allocates its buffers, and a bucket's
        engine made on its first use (150-190 ms on this project's 2-core CPU) would stall that
        frame."""
        tensor, _ = self.detector.preprocess(np.zeros(image_shape, dtype=np.uint8))
        self.detector.infer(tensor)
        blank = np.zeros((1, 4), dtype=np.float32)
        self.lidar_objects.encode(blank, self._prior_ground)
        self.lidar_objects.encoder.make_all()
        self.fusion.make_all()
        k = np.array([[500.0, 0, 320], [0, 500, 240], [0, 0, 1]])
        self.fusion.run(
            blank,
            np.array([[0, 0, 10, 10, 0.5, 0]], dtype=np.float32),
            np.eye(4),
            k,
            (640, 480),
            (*self._prior_ground.normal, self._prior_ground.offset),
        )
        if self.learned is not None:
            self.learned.make_all()
            self.learned.run(np.zeros((1, 4 + len(self.learned.config.classes) + 1), np.float32))

    def step(
        self,
        bundle: SyncedBundle,
        seq: int,
        ahead: Mapping[str, Future[CameraEncoding]] | None = None,
    ) -> DetectionList:
        """Detections of one bundle, stamped with the sweep's stamp, in the vehicle frame.

        `ahead`: camera encodings started as the frames arrived (`encode_camera`), by stream
        (the live node's `camera_ahead`). The step then waits for them (`camera_wait`, on the
        frame's path; `camera_encoder` is their compute, off it) and encodes any frame without
        one itself; the detections are those of encoding in line."""
        timer = StageTimer()
        timer.add("decode", bundle.decode_ns)
        timer.add("sync_wait", bundle.sync_wait_ns)
        rig: Rig = bundle.rig
        sweep = bundle.lidar

        kind = self.config.fusion.kind
        with timer.stage("preprocess"):
            points = self._points_in_vehicle(bundle)
            cameras, unknown = self._cameras_by_name(bundle)
            twist = ego_twist(bundle.ego_pose, bundle.ego_pose_end)
        # The lidar branch runs beside the camera branch: ONNX Runtime and most of numpy
        # release the GIL, so the two share the cores instead of taking turns. It takes the
        # lidar's work that needs no camera box: the ground (handed over as soon as it is
        # known, for the camera boxes' fusion), the lidar encoder and the lidar-only clusters.
        ground_known: Future[GroundPlane] = Future()
        pending = None
        lidar = None
        if self._branches is None:
            lidar = self._lidar_branch(points, ground_known)
        else:
            pending = self._branches.submit(self._lidar_branch, points, ground_known)
        motions: dict[str, RigidTransform] = {}
        views: dict[str, tuple[npt.NDArray[np.float32], RigidTransform]] = {}
        if ahead is None:
            encodings = self._encode_inline(cameras, rig, timer)
        else:
            if kind != "learned":
                # A camera still being encoded holds the frame up anyway: its points in view,
                # which need no box, are found meanwhile (kept if the camera finds boxes).
                with timer.stage("fusion"):
                    for name, frame in cameras.items():
                        future = ahead.get(frame.header.stream)
                        if future is not None and not future.done():
                            motions[name] = self._camera_motion(frame, sweep.header.stamp_ns, twist)
                            views[name] = self._view_points(name, points, rig, motions[name])
            # Encoded as each frame arrived; this frame's path only waits for what is not done.
            with timer.stage("camera_wait"):
                encodings = {
                    name: self._encoding_ahead(frame, rig.cameras[name], ahead)
                    for name, frame in cameras.items()
                }
            timer.add("camera_encoder", sum(e.encoder_ns for e in encodings.values()))
        boxes: dict[str, list[Box2D]] = {}
        unfit: list[str] = list(unknown)
        raw_images: dict[str, npt.NDArray[np.uint8]] = {}
        for name, encoding in encodings.items():
            if encoding.problem is not None:
                # Fused as if missing: a blind camera's silence is no evidence.
                del cameras[name]
                stream = encoding.frame.header.stream
                unfit.append(stream)
                self._camera_log.warning(stream, f"{stream}: image {encoding.problem}; left out")
                continue
            raw_images[name] = encoding.image
            boxes[name] = list(encoding.boxes)
        detections: list[Detection3D] = []
        # The camera boxes are fused while the lidar branch still clusters (each camera's
        # points in view, then the fusion engine, need only the ground).
        with timer.stage("fusion"):
            # Found here, not before the lidar branch started: it needs none of this, so the
            # motions are off the frame's path while the branch runs.
            for name, frame in cameras.items():
                if name not in motions:
                    motions[name] = self._camera_motion(frame, sweep.header.stamp_ns, twist)
            if kind != "learned":
                # The points in view need no ground: found while the lidar branch fits it.
                views = {
                    name: views[name]
                    if name in views
                    else self._view_points(name, points, rig, motions[name])
                    for name, camera_boxes in boxes.items()
                    if camera_boxes
                }
                ground = ground_known.result()
                for name, view in views.items():
                    detections += self._fuse(name, boxes[name], view, rig, ground)
                    if self.fusion.last_gpu_ns is not None:
                        # Torch on CUDA: what the GPU spent, from CUDA events.
                        timer.add("fusion_gpu", self.fusion.last_gpu_ns)
            if kind != "geometric":
                learned = self._learned(points, boxes, rig, motions)
                detections = learned if kind == "learned" else merge_ensemble(detections, learned)
        start = time.perf_counter_ns()
        locate = self._global_positions(bundle.gnss, rig)
        placed_early = False
        if pending is None:
            timer.add("postprocess", time.perf_counter_ns() - start)
        else:
            # A detection's position is its own (suppression reads none): the camera boxes'
            # are placed while the lidar branch still runs. Once it has ended they are placed
            # with its objects below, in one call: the geodesy's cost is mostly per call.
            if locate is not None and not pending.done():
                detections = locate(detections)
                placed_early = True
            placed = time.perf_counter_ns()
            lidar = pending.result()
            # On the frame's path from here the lidar branch, up to its end: placing that
            # overlapped it cost the frame nothing (`branch_wait`); any beyond its end did.
            hidden = overlap_ns(start, placed, lidar.end_ns)
            timer.add("branch_wait", time.perf_counter_ns() - placed + hidden)
            timer.add("postprocess", placed - start - hidden)
        assert lidar is not None
        timer.add("lidar_encoder", lidar.encoder_ns)
        timer.add("lidar_objects", lidar.objects_ns)
        if lidar.gpu_ns is not None:
            timer.add("lidar_encoder_gpu", lidar.gpu_ns)
        with timer.stage("fusion"):
            lidar_only = self.lidar_objects.select(lidar.clusters, detections)
        with timer.stage("postprocess"):
            if locate is None:
                found = detections + lidar_only
            elif placed_early:
                found = detections + locate(lidar_only)
            else:
                found = locate(detections + lidar_only)
            detections = suppress_duplicates(found)
        self.last_frame = StepFrame(
            stamp_ns=sweep.header.stamp_ns,
            points=points,
            images={name: (raw_images[name], motions[name]) for name in boxes},
            rig=rig,
            twist=twist,
            detections=tuple(detections),
            ground=lidar.ground,
        )
        return DetectionList(
            header=Header(self.detections_stream, seq, sweep.header.stamp_ns, "vehicle"),
            detections=tuple(detections),
            timings_ns=timer.timings_ns,
            degraded=(*bundle.missing, *unfit),
            valid=not bundle.missing and not unfit,
        )

    @staticmethod
    def _camera_motion(
        frame: CameraFrame,
        sweep_stamp_ns: int,
        twist: tuple[tuple[float, float, float], float] | None,
    ) -> RigidTransform:
        """The vehicle's motion from the sweep stamp to the camera's: the camera saw the scene
        at its own stamp, the vehicle having moved since the sweep stamp. Points are projected
        through it so that boxes and points line up, while the fused boxes stay in the vehicle
        frame at the sweep stamp. Identity without a twist."""
        if twist is None:
            return RigidTransform.identity()
        return RigidTransform(vehicle_motion(twist, frame.header.stamp_ns - sweep_stamp_ns))

    def camera_name(self, frame: CameraFrame, rig: Rig) -> str | None:
        """The rig camera a frame is from: its frame id's (`camera/front` -> `front`), else its
        stream's; None when the rig has neither."""
        for key in (frame.header.frame_id, frame.header.stream):
            name = key.removeprefix("camera/")
            if name in rig.cameras:
                return name
        return None

    def encode_camera(self, frame: CameraFrame, camera: CameraModel) -> CameraEncoding:
        """One camera frame through the camera branch on its own (the live node's camera
        encoding ahead of the sweep): its image checked, undistorted, letterboxed and run
        through the camera encoder. Identical to what `step` finds for it in line.

        Raises:
            EngineError: the camera encoder failed.
        """
        image, problem, tensor = self._prepare(frame, camera)
        if tensor is None:
            return CameraEncoding(frame, camera, image, problem, ())
        start = time.perf_counter_ns()
        raw = self.detector.infer_batch([tensor[0]])[0]
        boxes = tuple(self.detector.decode(raw, tensor[1]))
        return CameraEncoding(frame, camera, image, None, boxes, time.perf_counter_ns() - start)

    def _prepare(
        self, frame: CameraFrame, camera: CameraModel
    ) -> tuple[npt.NDArray[np.uint8], str | None, tuple[np.ndarray, Letterbox] | None]:
        """A frame's image, what makes it unfit (None if fit), and its encoder input (None
        when unfit). Encoded data that does not decode is unfit too (an empty image): one
        corrupt frame costs its camera's boxes for that sweep, not the lidar's objects."""
        try:
            image = self._image(frame)
        except ValueError:
            empty = np.zeros((0, 0, 3), np.uint8)
            return empty, f"does not decode as {frame.encoding}", None
        height, width = image.shape[:2]
        if (width, height) != camera.size:
            # Its boxes would go through another image's intrinsics, to wrong places.
            size = "x".join(map(str, camera.size))
            return image, f"is {width}x{height}, the rig's camera is {size}", None
        problem = image_problem(measure_image(image), self.config.camera_health)
        if problem is not None:
            return image, problem, None
        # The engines assume a pinhole image: undistort with the same K.
        pinhole = camera.undistort_image(image) if camera.has_distortion else image
        return image, None, self.detector.preprocess(pinhole)

    def _encode_inline(
        self, cameras: dict[str, CameraFrame], rig: Rig, timer: StageTimer
    ) -> dict[str, CameraEncoding]:
        """Every camera of the bundle encoded here, `batch` cameras per engine call."""
        prepared = {}
        with timer.stage("preprocess"):
            for name, frame in cameras.items():
                prepared[name] = self._prepare(frame, rig.cameras[name])
        fit = {name: p[2] for name, p in prepared.items() if p[2] is not None}
        encodings = {}
        with timer.stage("camera_encoder"):
            raws = self.detector.infer_batch([tensor for tensor, _ in fit.values()])
            found = {
                name: tuple(self.detector.decode(raw, letterbox))
                for (name, (_, letterbox)), raw in zip(fit.items(), raws, strict=True)
            }
        for name, (image, problem, _) in prepared.items():
            camera = rig.cameras[name]
            encodings[name] = CameraEncoding(
                cameras[name], camera, image, problem, found.get(name, ())
            )
        return encodings

    def _encoding_ahead(
        self, frame: CameraFrame, camera: CameraModel, ahead: Mapping[str, Future[CameraEncoding]]
    ) -> CameraEncoding:
        """The encoding of `frame` made ahead, or made now when there is none for this very
        frame and camera model (the bundle matched another frame, or the rig changed)."""
        future = ahead.get(frame.header.stream)
        if future is not None:
            try:
                encoding = future.result()
            except CancelledError:
                pass  # overtaken by a newer frame before it started
            else:
                if encoding.frame is frame and encoding.camera is camera:
                    return encoding
        return self.encode_camera(frame, camera)

    def _lidar_branch(
        self, points: npt.NDArray[np.float32], ground_known: Future[GroundPlane]
    ) -> _LidarBranch:
        """The lidar's work of one sweep that needs no camera box, timed (on whichever thread
        runs it): the ground plane (also set on ``ground_known`` at once), the lidar encoder's
        grids and the lidar-only clusters."""
        start = time.perf_counter_ns()
        try:
            ground = estimate_ground(points, self.config.ground)
        except BaseException as e:
            ground_known.set_exception(e)
            raise
        ground_known.set_result(ground)
        self._say_prior_ground(ground, len(points))
        obstacle, bev = self.lidar_objects.encode(points, ground)
        gpu_ns = self.lidar_objects.encoder.last_gpu_ns
        encoded = time.perf_counter_ns()
        clusters = self.lidar_objects.clusters(obstacle, bev, ground)
        end = time.perf_counter_ns()
        return _LidarBranch(ground, clusters, encoded - start, end - encoded, gpu_ns, end)

    def _say_prior_ground(self, ground: GroundPlane, returns: int) -> None:
        """Logs (at a bounded rate) a ground that is the prior's sweep after sweep: with
        `ground_prior_z_m` 1.73 instead of -1.73 (the lidar's height, its sign wrong) no plane
        was ever found, every return lay below the ground, and a replay wrote its
        DetectionLists without a single detection, exit 0, saying nothing. `returns`: the
        sweep's, within `max_range_m`."""
        cfg = self.config.ground
        if ground != self._prior_ground:
            self._prior_sweeps = 0
            return
        self._prior_sweeps += 1
        if self._prior_sweeps >= _PRIOR_GROUND_SWEEPS:
            self._ground_log.warning(
                "prior",
                f"ground: no plane of at least {cfg.ransac_min_inliers} returns near "
                f"pipeline.ground.ground_prior_z_m ({cfg.ground_prior_z_m:g} m; from "
                f"{cfg.ground_band_below_m:g} m below it to {cfg.ground_band_above_m:g} m above) "
                f"in the last {self._prior_sweeps} sweeps ({returns} returns within "
                f"pipeline.max_range_m, {self.config.max_range_m:g} m, in this one): the level "
                "plane at the prior is used (is the prior the ground's height in the vehicle "
                "frame?)",
            )

    def _view_points(
        self, name: str, points: npt.NDArray[np.float32], rig: Rig, motion: RigidTransform
    ) -> tuple[npt.NDArray[np.float32], RigidTransform]:
        """The points camera ``name`` sees (at most the fusion engine's ``n_max``, evenly
        strided) and its camera_from_vehicle through ``motion`` (the vehicle frame at the sweep
        stamp to the one at the camera's stamp)."""
        cfg = self.fusion.config
        camera = rig.cameras[name]
        camera_from_vehicle = rig.transform(f"camera/{name}", "vehicle") @ motion
        # Only points in this camera's view can fall in its boxes; they fit the static shape.
        seen, _ = camera.in_view(camera_from_vehicle.apply_rows(points).T)
        in_view = np.take(points, seen, axis=0)
        if len(in_view) > cfg.n_max:
            in_view = in_view[:: -(-len(in_view) // cfg.n_max)]
        return in_view, camera_from_vehicle

    def _learned(
        self,
        points: npt.NDArray[np.float32],
        boxes: dict[str, list[Box2D]],
        rig: Rig,
        motions: dict[str, RigidTransform],
    ) -> list[Detection3D]:
        """The learned engine's detections: the points painted with every camera's boxes
        (each camera at its own stamp), pillarized and run in one call."""
        assert self.learned is not None  # the constructor refuses a learned kind without it
        views = [
            PaintView(
                rig.cameras[name].undistorted(),
                (rig.transform(f"camera/{name}", "vehicle") @ motions[name]).matrix,
                camera_boxes,
            )
            for name, camera_boxes in boxes.items()
        ]
        runner = self.learned
        painted = paint_points(points, views, runner.config.classes)
        result = runner.run(painted)
        return learned_detections(
            result.rows,
            result.camera_free_score,
            runner.config.classes,
            camera_seen=bool(views),
            camera_contribution=self.config.fusion.camera_contribution,
        )

    def _fuse(
        self,
        name: str,
        boxes: list[Box2D],
        view: tuple[npt.NDArray[np.float32], RigidTransform],
        rig: Rig,
        ground: GroundPlane,
    ) -> list[Detection3D]:
        """3D boxes of one camera's 2D boxes through the fusion engine; ``view``: the points
        the camera sees and its camera_from_vehicle (`_view_points`)."""
        if not boxes:
            return []
        cfg = self.fusion.config
        boxes = sorted(boxes, key=lambda b: -b.score)[: cfg.b_max]
        camera = rig.cameras[name]
        in_view, camera_from_vehicle = view
        table = np.array(
            [[b.x1, b.y1, b.x2, b.y2, b.score, cfg.class_index(b.label)] for b in boxes],
            dtype=np.float32,
        )
        out = self.fusion.run(
            in_view,
            table,
            camera_from_vehicle.matrix,
            camera.k,
            (camera.width, camera.height),
            (*ground.normal, ground.offset),
        )
        detections = []
        for box, row, ok, score in zip(boxes, out.boxes3d, out.valid, out.fused_score, strict=True):
            if not ok:
                continue
            cx, cy, cz, length, width, height, yaw = (float(v) for v in row)
            detections.append(
                Detection3D(
                    label=box.label,
                    score=float(score),
                    center=(cx, cy, cz),
                    size=(length, width, height),
                    yaw=yaw,
                    sources=("camera", "lidar"),
                    camera_box=CameraBox(name, box.x1, box.y1, box.x2, box.y2),
                )
            )
        return detections

    def _cameras_by_name(self, bundle: SyncedBundle) -> tuple[dict[str, CameraFrame], list[str]]:
        """Camera frames keyed by rig camera name (`camera/front` stream -> `front`), and the
        streams of the frames no rig camera is named for: they are left out, and listed as
        degraded (used silently, a sweep without its camera looked whole)."""
        out: dict[str, CameraFrame] = {}
        unknown: list[str] = []
        for stream, frame in sorted(bundle.cameras.items()):
            name = self.camera_name(frame, bundle.rig)
            if name is not None:
                out[name] = frame
                continue
            unknown.append(stream)
            self._camera_log.warning(
                stream,
                f"{stream}: no camera of the rig is named for its frames (frame id "
                f"{frame.header.frame_id!r}; the rig has "
                f"{', '.join(sorted(bundle.rig.cameras)) or 'no camera'}); left out",
            )
        return out, unknown

    @staticmethod
    def _image(frame: CameraFrame) -> npt.NDArray[np.uint8]:
        return frame_image(frame)

    def _points_in_vehicle(self, bundle: SyncedBundle) -> npt.NDArray[np.float32]:
        """The sweep in the vehicle frame, deskewed to its stamp when it has per-point times and
        GNSS gives the ego motion, without returns beyond `max_range_m`."""
        sweep = bundle.lidar
        vehicle_from_lidar = bundle.rig.transform("vehicle", sweep.header.frame_id)
        out, _ = deskew_sweep(
            sweep,
            bundle.ego_pose,
            bundle.ego_pose_end,
            vehicle_from_lidar.matrix,
            max_range_m=self.config.max_range_m,
        )
        return out

    @staticmethod
    def _global_positions(
        fix: GnssFix | None, rig: Rig
    ) -> Callable[[list[Detection3D]], list[Detection3D]] | None:
        """What sets the latitude/longitude of detections' centres from the fix, its heading and
        the rig's antenna lever arm (ENU tangent plane at the fix); None without a fix with a
        heading."""
        if fix is None or fix.heading_rad is None:
            return None
        origin = LocalTangentPlane(fix.latitude_deg, fix.longitude_deg, fix.altitude_m)
        enu_from_vehicle = vehicle_pose_from_gnss(
            origin,
            fix.latitude_deg,
            fix.longitude_deg,
            fix.altitude_m,
            float(fix.heading_rad),
            lever_arm_m=rig.gnss_lever_arm_m,
        )

        def locate(detections: list[Detection3D]) -> list[Detection3D]:
            if not detections:
                return detections
            centres = np.array([d.center for d in detections], dtype=np.float64).reshape(-1, 3)
            geodetic = origin.enu_to_geodetic(enu_from_vehicle.apply(centres))
            # A position that cannot be computed (an implausible fix) is left out, not NaN.
            finite = np.logical_and(np.isfinite(geodetic[:, 0]), np.isfinite(geodetic[:, 1]))
            return [
                replace(d, latitude_deg=lat, longitude_deg=lon) if ok else d
                for d, lat, lon, ok in zip(
                    detections,
                    geodetic[:, 0].tolist(),
                    geodetic[:, 1].tolist(),
                    finite.tolist(),
                    strict=True,
                )
            ]

        return locate
