"""The synthetic drive through the node pipeline (`perception demo`), scored against ground truth.

`run_demo` generates (or reuses) a synthetic drive (`replay.synth.world`), runs it through
`Pipeline` (the self-trained camera detector `engines/models/synth_detector.onnx`, YOLOX
decoding, and the default fusion engine, all on ONNX Runtime) with `replay.offline.run_core`,
and returns the per-stage latencies and the detection quality against ground truth. It writes the
detections (JSON Lines) and a picture (camera image with boxes beside a bird's-eye view).

Scoring: cars within `EVAL_RANGE_M` of the vehicle, at least half of the box in the camera image
and at least half of its silhouette unoccluded in the rendered frame (a KITTI-"moderate"-like
filter) are the references; a detection within `MATCH_DISTANCE_M` (BEV centre distance) of one
is a true positive. Detections up to `EVAL_RANGE_M` + `MATCH_DISTANCE_M` take part (as in
`replay.datasets.kitti_eval`); those that match a car outside that set (far, occluded, out of
view) are ignored rather than counted as false positives. The node core's tracker runs after
the pipeline on every sweep; its TrackLists are scored the same way (`replay.tracking_eval`:
MOTA, IDF1, ID switches, velocity errors) and drawn in the picture (track ids, and where each
confirmed track was over the last `TRAIL_NS`). The library prints nothing;
`format_demo_report` gives the text the CLI prints.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from calibration import Rig
from calibration.monitor import Correction, MonitorState
from engines.camera.detector import CameraDetector
from engines.factory import EngineFactory
from engines.fusion.learned_runner import LearnedFusionRunner
from engines.registry import PACKAGED_MODELS_DIR
from perception.config import FUSION_KINDS, FusionConfig, NodeConfig, PipelineConfig, SyncConfig
from perception.msgs.jsonl import write_jsonl_line
from perception.msgs.types import (
    CalibrationStatus,
    CameraFrame,
    DetectionList,
    LidarSweep,
    Track,
    TrackList,
)
from perception.node import NodeCore
from perception.node.calibration import CalibrationWatch
from perception.pipeline import Pipeline
from perception.pipeline.learned_model import load_learned_model
from perception.pipeline.timing import step_ns
from replay.drive import DriveReader
from replay.errors import ReplayError
from replay.evaluation import (
    CLASS_MATCH_DISTANCE_M,
    QUALITY_RANGE_M,
    MatchResult,
    ReferenceBox,
    average_precision,
    merge_results,
    score_truth_frame,
)
from replay.mcap_player import checked_messages, drive_contents
from replay.offline import Received, run_core
from replay.output import (
    atomic_output,
    check_free_space,
    check_not_an_input,
    check_output_dir,
    check_outputs_not_inputs,
)
from replay.pictures import (
    CAMERA_BOX_BGR,
    REFERENCE_BGR,
    DrawnBox,
    TrackMark,
    class_colour,
    frame_picture,
    write_picture,
)
from replay.synth.world import (
    CAMERA_NAME,
    CAMERA_OFFSET_NS,
    CAMERA_STREAM,
    DRIVE_BYTES_PER_S,
    LIDAR_STREAM,
    GroundTruthFrame,
    calibration_caveat,
    check_world_options,
    drive_files,
    generate_drive,
    ground_truth_path,
    has_ground_truth,
    read_ground_truth,
)
from replay.tracking_eval import CLASSES, TrackingResult, evaluate_tracks, relative_note
from replay.training.fusion_data import beam_mask

__all__ = [
    "CLASSES",
    "DEGRADATIONS",
    "DEGRADATION_LEVELS",
    "DEMO_SECONDS",
    "EVAL_RANGE_M",
    "MATCH_DISTANCE_M",
    "SYNTH_DETECTOR_PATH",
    "TRAIL_NS",
    "DemoProgress",
    "DemoReport",
    "KindRun",
    "StageLatency",
    "degradation",
    "ensure_synthetic_drive",
    "format_demo_report",
    "run_demo",
    "tracking_lines",
]

#: progress(stage, done, total): stage "generate" (sweeps of the drive written) or "replay"
#: (sweeps through the pipeline).
DemoProgress = Callable[[str, int, int], None]

#: The length of the drive a demo generates by default, s (its file name says no other).
DEMO_SECONDS = 10.0
#: The packaged detector trained on synthetic renders (replay.training.train_detector).
SYNTH_DETECTOR_PATH = PACKAGED_MODELS_DIR / "synth_detector.onnx"
#: The classes the demo scores are tracking_eval's CLASSES; range and match distances are
#: `replay.evaluation`'s protocol.
EVAL_RANGE_M = QUALITY_RANGE_M
MATCH_DISTANCE_M = CLASS_MATCH_DISTANCE_M["Car"]


@dataclass(frozen=True)
class StageLatency:
    """Latency of one stage over the run (milliseconds)."""

    stage: str
    median_ms: float
    p90_ms: float
    max_ms: float


@dataclass(frozen=True)
class KindRun:
    """One fusion kind's run of the drive: its detection lists, the match result over every
    class and its per-stage latencies; the tracker's TrackLists and their tracking quality
    (`replay.tracking_eval`)."""

    kind: str
    lists: tuple[DetectionList, ...]
    result: MatchResult
    latency: tuple[StageLatency, ...]
    tracks: tuple[TrackList, ...] = ()
    tracking: TrackingResult | None = None


@dataclass(frozen=True)
class DemoReport:
    """The demo's outcome: files written, frame count, car recall/precision (None if undefined),
    counts, median BEV centre error (m), per-stage latencies and the full match result, of the
    first fusion kind; `runs` holds every kind's run; `without` the sensor removed or degraded."""

    drive: Path
    detections: Path
    picture: Path
    frames: int
    recall: float | None
    precision: float | None
    true_positives: int
    false_negatives: int
    false_positives: int
    median_center_error_m: float | None
    latency: tuple[StageLatency, ...]
    result: MatchResult
    runs: tuple[KindRun, ...] = ()
    without: str | None = None
    calibration: tuple[CalibrationStatus, ...] = ()
    #: Why the calibration verdict does not check the rig on this drive (None: it does).
    calibration_caveat: str | None = None
    #: Per drifted camera, its picture: the last frame the monitor used, drawn with the rig
    #: the node was given and with it corrected.
    calibration_pictures: tuple[Path, ...] = ()


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def _latencies(lists: list[DetectionList]) -> tuple[StageLatency, ...]:
    """Per stage, then `processing` (the computing stages of a frame, summed) and `end_to_end`
    (`latency_ns`: from the sweep stamp, the start of the sweep, to the output)."""
    stages: dict[str, list[float]] = {}
    for dl in lists:
        for name, ns in dl.timings_ns.items():
            stages.setdefault(name, []).append(ns / 1e6)
        processing = step_ns(dl.timings_ns)
        stages.setdefault("processing", []).append(processing / 1e6)
        stages.setdefault("end_to_end", []).append(dl.latency_ns / 1e6)
    return tuple(
        StageLatency(name, statistics.median(v), _percentile(v, 90), max(v))
        for name, v in stages.items()
    )


def _evaluate(
    dl: DetectionList,
    refs: tuple[ReferenceBox, ...],
    unoccluded: tuple[float, ...],
    rig: Rig,
) -> MatchResult:
    """One frame, every class: objects within the range, at least half in the camera image and
    at least half unoccluded count (see the module docstring)."""
    camera = rig.cameras[CAMERA_NAME]
    cam_from_vehicle = rig.transform(f"camera/{CAMERA_NAME}", "vehicle")
    return score_truth_frame(
        dl.detections, refs, unoccluded, camera, cam_from_vehicle, classes=CLASSES
    )


#: The picture's track trails: where each confirmed track was over this long before the frame.
TRAIL_NS = 2_000_000_000


@dataclass(frozen=True)
class _Trail:
    """A confirmed track at the picture's frame and its past centres (K, 2), oldest first, in
    the vehicle frame of that frame (so they show where it went over the ground)."""

    track: Track
    points: npt.NDArray[np.float64]


def _trails(track_lists: Sequence[TrackList], stamp_ns: int) -> tuple[_Trail, ...]:
    """The tracks of the TrackList at `stamp_ns` with their centres over the `TRAIL_NS`
    before it."""
    current = next((t for t in track_lists if t.header.stamp_ns == stamp_ns), None)
    if current is None or not current.tracks:
        return ()
    # The tracker's world frame differs from the vehicle frame by the ego's planar pose,
    # which every track carries twice (in both frames): any one of them gives it.
    ref = current.tracks[0]
    ego_yaw = ref.yaw_world - ref.yaw
    c, s = math.cos(ego_yaw), math.sin(ego_yaw)
    rotation = np.array([[c, -s], [s, c]])
    origin = np.array(ref.center_world[:2]) - rotation @ np.array(ref.center[:2])
    history: dict[int, list[tuple[float, float]]] = {}
    for tl in track_lists:
        if stamp_ns - TRAIL_NS < tl.header.stamp_ns <= stamp_ns:
            for t in tl.tracks:
                history.setdefault(t.track_id, []).append((t.center_world[0], t.center_world[1]))
    out = []
    for t in current.tracks:
        world = np.array(history.get(t.track_id, [t.center_world[:2]]), dtype=np.float64)
        # vehicle_from_world as row vectors: (p - origin) R is R^T (p - origin).
        out.append(_Trail(t, (world - origin) @ rotation))
    return tuple(out)


#: What the demo picture's colours mean.
_LEGEND = (
    ("ground truth", REFERENCE_BGR),
    ("car", class_colour("Car")),
    ("pedestrian", class_colour("Pedestrian")),
    ("cyclist", class_colour("Cyclist")),
    ("lidar only (unknown)", class_colour("unknown")),
    ("camera 2D box", CAMERA_BOX_BGR),
    (f"#id: track, with its trail over the last {TRAIL_NS / 1e9:g} s (BEV)", (255, 255, 255)),
)


def _picture(
    path: Path,
    image: npt.NDArray[np.uint8],
    sweep: LidarSweep,
    dl: DetectionList,
    refs: tuple[ReferenceBox, ...],
    rig: Rig,
    trails: Sequence[_Trail] = (),
) -> None:
    boxes = [DrawnBox(r, REFERENCE_BGR) for r in refs if r.range_m <= 60.0]
    boxes += [
        DrawnBox(d, class_colour(d.label), f"{d.label} {d.score:.2f}", camera_box=d.camera_box)
        for d in dl.detections
    ]
    tracks = [
        TrackMark(
            t.track.track_id,
            class_colour(t.track.label),
            (t.track.center[0], t.track.center[1], t.track.center[2] + t.track.size[2] / 2),
            t.points,
        )
        for t in trails
    ]
    canvas = frame_picture(
        image,
        rig.transform("vehicle", sweep.header.frame_id).apply(sweep.points[:, :3]),
        rig.cameras[CAMERA_NAME],
        rig.transform(f"camera/{CAMERA_NAME}", "vehicle"),
        boxes,
        tracks=tracks,
        legend=_LEGEND,
    )
    write_picture(path, canvas)


def ensure_synthetic_drive(
    path: Path,
    *,
    seed: int = 0,
    seconds: float = 10.0,
    progress: DemoProgress | None = None,
    scene: str = "simple",
    rig_error: Correction | None = None,
) -> bool:
    """Generate the synthetic drive `path` and its ground truth (`replay.synth.world`) unless
    both exist; returns whether it generated them. Both are written beside their targets and
    renamed when complete, the ground truth first: an interrupted run leaves no half drive that
    a later run would take for a whole one. `scene`: the world (`replay.synth.world.SCENES`).

    Raises:
        ValueError: `seconds` is not positive, an unknown scene.
        replay.output.OutputError: the files cannot be written.
    """
    path = Path(path)
    truth = ground_truth_path(path)
    if path.is_file() and truth.is_file():
        return False
    if scene in DRIVE_BYTES_PER_S and seconds > 0:
        # Refused before it starts, not when the disk is full (--seconds 1e9 would need PB).
        needed = 1.1 * seconds * DRIVE_BYTES_PER_S[scene] + 100e6
        check_free_space(path.parent, needed, f"a {seconds:g} s synthetic drive ({scene} world)")

    def generated(done: int, total: int) -> None:
        if progress is not None:
            progress("generate", done, total)

    with atomic_output(path, "the synthetic drive") as tmp:
        try:
            generate_drive(
                tmp,
                seed=seed,
                seconds=seconds,
                progress=generated,
                scene=scene,
                rig_error=rig_error,
            )
            with atomic_output(truth, "the ground truth") as tmp_truth:
                ground_truth_path(tmp).replace(tmp_truth)
        finally:
            ground_truth_path(tmp).unlink(missing_ok=True)
    return True


def _ground_truth(drive_path: Path) -> dict[int, GroundTruthFrame]:
    path = ground_truth_path(drive_path)
    if not has_ground_truth(drive_path):
        raise ReplayError(
            f"{drive_path}: no ground truth beside it ({path.name}); the demo scores a "
            "synthetic drive written by `perception demo` (run it without --drive to generate one)"
        )
    try:
        return {f.stamp_ns: f for f in read_ground_truth(path)}
    except ValueError as e:
        raise ReplayError(str(e)) from e
    except OSError as e:
        raise ReplayError(f"{path}: cannot read the ground truth ({e.strerror})") from e


#: What `run_demo`'s `without` takes away: a sensor, or part of what it gives.
DEGRADATIONS = ("camera", "lidar", "lidar-half-beams", "camera-dark", "camera-blur")
#: The default level of the degradations that take one (`camera-dark:0.3`, `camera-blur:4`):
#: the factor every pixel is multiplied by, the Gaussian blur's sigma in pixels.
DEGRADATION_LEVELS = {"camera-dark": 0.15, "camera-blur": 15.0}
_LEVEL_RANGES = {"camera-dark": (0.0, 1.0), "camera-blur": (0.0, 100.0)}


def degradation(without: str) -> tuple[str, float | None]:
    """`without` (a `DEGRADATIONS` name, `camera-dark` or `camera-blur` optionally with
    `:LEVEL`) as (name, level; None for those without a level).

    Raises:
        ValueError: an unknown name, or a level that is not a number in its range.
    """
    name, sep, text = without.partition(":")
    if name not in DEGRADATIONS:
        raise ValueError(f"without: choose among {', '.join(DEGRADATIONS)}, got {without!r}")
    if name not in DEGRADATION_LEVELS:
        if sep:
            raise ValueError(f"without: {name} takes no level, got {without!r}")
        return name, None
    if not sep:
        return name, DEGRADATION_LEVELS[name]
    lo, hi = _LEVEL_RANGES[name]
    try:
        level = float(text)
    except ValueError:
        level = math.nan
    if not lo < level <= hi:
        what = "the brightness factor" if name == "camera-dark" else "the blur sigma in pixels"
        raise ValueError(f"without: {name}:LEVEL takes {what}, in ({lo:g}, {hi:g}]; got {text!r}")
    return name, level


def _degrade(records: Iterable[Any], without: str | None) -> Iterator[Any]:
    """The drive's records with a sensor removed or degraded (see `DEGRADATIONS`): `camera`
    drops every camera frame; `lidar` empties every sweep (the sweeps stay: they are the
    node's clock); `lidar-half-beams` keeps every other beam; `camera-dark` and `camera-blur`
    darken (x 0.15) or blur (15 px Gaussian sigma) every image, or by the level given
    (`degradation`)."""
    name, level = degradation(without) if without is not None else (None, None)
    for rec in records:
        msg = rec.message
        if name is None:
            yield rec
        elif isinstance(msg, CameraFrame) and name.startswith("camera"):
            if name == "camera":
                continue
            image = msg.image
            if image is not None:
                assert level is not None
                if name == "camera-dark":
                    image = (image.astype(np.float32) * level).astype(np.uint8)
                else:
                    image = np.asarray(cv2.GaussianBlur(image, (0, 0), level), np.uint8)
            yield replace(rec, message=replace(msg, image=image))
        elif isinstance(msg, LidarSweep) and name.startswith("lidar"):
            keep = np.zeros(len(msg.points), bool)
            if name == "lidar-half-beams":
                keep = beam_mask(msg.points)
            offsets = msg.point_time_offsets_ns
            yield replace(
                rec,
                message=replace(
                    msg,
                    points=msg.points[keep],
                    point_time_offsets_ns=None if offsets is None else offsets[keep],
                ),
            )
        else:
            yield rec


def _pipeline(kind: str, detector: CameraDetector, learned_model: Path | None) -> Pipeline:
    if kind == "geometric":
        return Pipeline(detector)
    fusion = FusionConfig(kind=kind, model=str(learned_model or "learned_fusion"))
    model = load_learned_model(fusion.model)
    engine = EngineFactory().learned_fusion_engine(model)
    runner = LearnedFusionRunner.for_model(engine, model)
    return Pipeline(detector, PipelineConfig(fusion=fusion), learned=runner)


def run_demo(
    drive_path: Path | None,
    *,
    seed: int = 0,
    seconds: float = DEMO_SECONDS,
    out_dir: Path,
    model_path: Path | None = None,
    num_threads: int | None = None,
    progress: DemoProgress | None = None,
    fusion: Sequence[str] = ("geometric",),
    without: str | None = None,
    learned_model: Path | None = None,
    scene: str = "simple",
    rig_error: Correction | None = None,
) -> DemoReport:
    """Run the demo (see the module docstring). `drive_path` None: the drive
    `<out_dir>/synth_seed<seed>.mcap` (`synth_<scene>_seed<seed>.mcap` for another scene than the
    simple one; `_rigerr_...` added with a `rig_error`: the drive's rig has the camera moved by
    it, the images do not, `generate_drive`; `_<seconds>s` for another length than
    `DEMO_SECONDS`) is generated (`seconds` long) unless it and its ground truth already exist
    (`ensure_synthetic_drive`). The report carries the calibration
    monitor's verdict at the end of the first kind's run. Each fusion kind of `fusion`
    (geometric, learned, ensemble; `learned_model` is the learned engine, default the packaged
    one) runs the drive, with a sensor removed or degraded when `without` names one
    (`DEGRADATIONS`). Writes `<out_dir>/detections.jsonl` (of the first kind) and
    `<out_dir>/demo.png`, each only when complete. `progress` reports the generation and the
    runs (`DemoProgress`).

    Raises:
        ValueError: an unknown fusion kind or degradation, or no kind.
        replay.errors.ReplayError: the drive cannot be read, has no rig or no ground truth
            beside it.
        engines.errors.ModelError: the detector or the learned engine is missing or invalid.
        replay.output.OutputError: `out_dir` is not a folder, or the outputs cannot be written.
    """
    kinds = tuple(dict.fromkeys(fusion))
    bad = [k for k in kinds if k not in FUSION_KINDS]
    if not kinds or bad:
        raise ValueError(f"fusion: choose among {', '.join(FUSION_KINDS)}, got {list(fusion)}")
    if without is not None:
        degradation(without)
    check_world_options(scene)
    out_dir = check_output_dir(Path(out_dir), "the demo's output")
    if drive_path is not None:
        # Before any work: an output named as the drive or its ground truth, or linked to one,
        # would replace it (and the old calibration pictures are removed).
        inputs = drive_files(Path(drive_path))
        for out in (out_dir / "detections.jsonl", out_dir / "demo.png"):
            check_not_an_input(out, inputs, f"the demo's {out.name}")
        olds = out_dir.glob("calibration-*.png")
        check_outputs_not_inputs(olds, inputs, "an old calibration picture (removed by the demo)")
    detector = CameraDetector(
        EngineFactory().camera_encoder(model_path or SYNTH_DETECTOR_PATH, threads=num_threads),
        kind="yolox",
        score_threshold=0.15,
    )
    # Every engine is built before anything else: a missing learned model fails at once.
    pipelines = {kind: _pipeline(kind, detector, learned_model) for kind in kinds}
    if drive_path is None:
        name = "synth" if scene == "simple" else f"synth_{scene}"
        if rig_error is not None:
            values = [*rig_error.rotation_deg, *(v * 100 for v in rig_error.translation_m)]
            name += "_rigerr_" + "_".join(f"{v:g}" for v in values)
        if seconds != DEMO_SECONDS:
            # A drive of another length is another drive: reused, a 0.5 s drive answered every
            # later `--seconds 60` (and a plain `perception demo`) without a word.
            name += f"_{seconds:g}s"
        drive_path = out_dir / f"{name}_seed{seed}.mcap"
        ensure_synthetic_drive(
            drive_path,
            seed=seed,
            seconds=seconds,
            progress=progress,
            scene=scene,
            rig_error=rig_error,
        )
    reader = DriveReader(drive_path)
    caveat = calibration_caveat(Path(drive_path))
    truth = _ground_truth(drive_path)
    rig = reader.rig
    if rig is None:
        raise ReplayError(f"{drive_path}: the drive has no rig")
    sweeps = drive_contents(reader).sweeps
    sync = SyncConfig(
        camera_offsets_ms={CAMERA_STREAM: CAMERA_OFFSET_NS / 1e6},
        camera_windows_ms={CAMERA_STREAM: 20.0},
    )
    config = replace(NodeConfig(), sync=sync)
    runs: dict[str, KindRun] = {}
    calibration: tuple[CalibrationStatus, ...] = ()
    calibration_pictures: tuple[Path, ...] = ()
    # The picture shows the first kind's frame with the most scored objects of every class,
    # among the frames at least a trail's length into the drive (so that the tracks have
    # been confirmed and have trails) when there are any.
    best: tuple[tuple[bool, int], DetectionList] | None = None
    for kind, pipeline in pipelines.items():
        lists: list[DetectionList] = []
        track_lists: list[TrackList] = []
        records = _degrade(checked_messages(reader), without)
        core = NodeCore(config, pipeline, rig)
        if core.calibration is not None:
            core.calibration.keep_views = True  # for the picture of a drifted camera
        received = (Received(r.topic, r.log_time_ns, message=r.message) for r in records)
        for dl in run_core(core, received, on_tracks=track_lists.append):
            lists.append(dl)
            if progress is not None:
                progress(f"replay:{kind}", len(lists), sweeps)
        if kind == kinds[0] and core.calibration is not None:
            calibration = core.calibration.statuses()
            # A "drifted" picture of a verdict that does not check the rig would mislead (the
            # old pictures are removed all the same).
            calibration_pictures = write_calibration_pictures(
                core.calibration, calibration if caveat is None else (), out_dir
            )
        results = []
        for dl in lists:
            frame = truth.get(dl.header.stamp_ns)
            if frame is None:
                continue
            res = _evaluate(dl, frame.boxes, frame.camera_visible, rig)
            results.append(res)
            settled = dl.header.stamp_ns - lists[0].header.stamp_ns >= TRAIL_NS
            score = (settled, len(res.matches) + len(res.missed))
            if kind == kinds[0] and (best is None or score > best[0]):
                best = (score, dl)
        result = merge_results(results) if results else MatchResult(classes=CLASSES)
        tracking = evaluate_tracks(track_lists, truth.values(), rig=rig)
        runs[kind] = KindRun(
            kind, tuple(lists), result, _latencies(lists), tuple(track_lists), tracking
        )
    first = runs[kinds[0]]
    detections_path = out_dir / "detections.jsonl"
    with (
        atomic_output(detections_path, "the detections file") as tmp,
        tmp.open("w", encoding="utf-8") as f,
    ):
        for dl in first.lists:
            write_jsonl_line(f, dl)
    stats = first.result.stats("Car")
    picture = out_dir / "demo.png"
    if best is not None:
        stamp = best[1].header.stamp_ns
        sweep: LidarSweep | None = None
        image = None
        for rec in _degrade(reader.messages(topics=[LIDAR_STREAM, CAMERA_STREAM]), without):
            msg = rec.message
            if isinstance(msg, LidarSweep) and msg.header.stamp_ns == stamp:
                sweep = msg
            elif (
                isinstance(msg, CameraFrame)
                and msg.image is not None
                and abs(msg.header.stamp_ns - stamp - CAMERA_OFFSET_NS) < 10_000_000
            ):
                image = msg.image
            if sweep is not None and image is not None:
                break
        if sweep is not None:
            if image is None:  # the camera removed: a blank image keeps the layout
                camera = rig.cameras[CAMERA_NAME]
                image = np.zeros((camera.height, camera.width, 3), np.uint8)
            trails = _trails(first.tracks, stamp)
            _picture(picture, image, sweep, best[1], truth[stamp].boxes, rig, trails)
    return DemoReport(
        drive=Path(drive_path),
        detections=detections_path,
        picture=picture,
        frames=len(first.lists),
        recall=stats.recall,
        precision=stats.precision,
        true_positives=stats.true_positives,
        false_negatives=stats.false_negatives,
        false_positives=stats.false_positives,
        median_center_error_m=stats.median_center_error_m,
        latency=first.latency,
        result=first.result,
        runs=tuple(runs.values()),
        without=without,
        calibration=calibration,
        calibration_caveat=caveat,
        calibration_pictures=calibration_pictures,
    )


def write_calibration_pictures(
    watch: CalibrationWatch, statuses: Sequence[CalibrationStatus], out_dir: Path
) -> tuple[Path, ...]:
    """`calibration-<camera>.png` for each drifted camera (`CalibrationView.draw`); the
    pictures of an earlier run in `out_dir` are removed, so none outlives its verdict."""
    for old in out_dir.glob("calibration-*.png"):
        old.unlink()
    written = []
    for s in statuses:
        view = watch.view_of(s.camera)
        if s.state != MonitorState.DRIFTED or view is None:
            continue
        rot, cm = _correction_values(s)
        picture = view.draw(
            f"camera {s.camera}: the rig the node was given (drifted)",
            Correction(s.rotation_deg, s.translation_m),
            f"corrected by the monitor's estimate: rotation ({rot}) deg, translation ({cm}) cm",
        )
        path = out_dir / f"calibration-{s.camera}.png"
        write_picture(path, picture, "the calibration picture")
        written.append(path)
    return tuple(written)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _num(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def quality_table(runs: Sequence[KindRun]) -> list[str]:
    """Per class, each fusion kind side by side: recall, precision, BEV AP (R40), median
    centre and yaw errors, counts."""
    lines = [f"  {'class':<12}{'fusion':<11}{'recall':>8}{'precision':>11}{'AP':>7}"
             f"{'centre m':>10}{'yaw deg':>9}   found/objects, false positives"]  # fmt: skip
    for label in CLASSES:
        for run in runs:
            st = run.result.stats(label)
            ap = average_precision(run.result, label)
            lines.append(
                f"  {label:<12}{run.kind:<11}{_pct(st.recall):>8}{_pct(st.precision):>11}"
                f"{_num(ap, '.3f'):>7}{_num(st.median_center_error_m, '.2f'):>10}"
                f"{_num(st.median_yaw_error_deg, '.1f'):>9}   "
                f"{st.true_positives}/{st.true_positives + st.false_negatives}, "
                f"{st.false_positives}"
            )
    return lines


def tracking_lines(runs: Sequence[KindRun], label: str = "Car") -> list[str]:
    """One line per fusion kind: MOTA, IDF1, ID switches and velocity RMSE of `label`."""
    lines = []
    for run in runs:
        if run.tracking is None:
            continue
        st = run.tracking.stats(label)
        per_100 = st.id_switches_per_100
        lines.append(
            f"  {run.kind:<11}MOTA {_num(st.mota, '.3f')}, IDF1 {_num(st.idf1, '.3f')}, "
            f"{st.id_switches} ID switches ("
            + ("n/a" if per_100 is None else f"{per_100:.1f}")
            + f" per 100 of {st.gt_tracks} objects), velocity RMSE "
            + ("n/a" if st.velocity_rmse_mps is None else f"{st.velocity_rmse_mps:.2f} m/s")
        )
        if run.tracking.relative:
            lines.append(f"    ({relative_note(run.tracking)})")
    return lines


def _correction_values(s: CalibrationStatus) -> tuple[str, str]:
    """A status' correction as text: the rotation (degrees) and the translation (cm)."""
    rot = ", ".join(f"{v:+.2f}" for v in s.rotation_deg)
    cm = ", ".join(f"{v * 100:+.1f}" for v in s.translation_m)
    return rot, cm


def calibration_lines(
    statuses: Sequence[CalibrationStatus], caveat: str | None = None
) -> list[str]:
    """The calibration monitor's verdict per camera at the end of the drive and a blank line;
    nothing when it did not run. With a `caveat` (why the verdict does not check the rig on
    this drive) a line per camera saying it is not judged, and why, in place of the verdict:
    on the simple world the verdict hung on luck (one-ulp changes in the points turned the true
    rig's "aligned" into "drifted"), which a line of the README's main job should not."""
    if caveat:
        return [
            *(
                f"calibration monitor, camera {s.camera}: not judged on this drive"
                for s in statuses
            ),
            *([f"  ({caveat})", ""] if statuses else []),
        ]
    lines = []

    def pm(values: Sequence[float], scale: float, digits: int) -> str:
        return ", ".join("unobserved" if v < 0 else f"{v * scale:.{digits}f}" for v in values)

    for s in statuses:
        rot, cm = _correction_values(s)
        lines.append(
            f"calibration monitor, camera {s.camera}: {s.state} after {s.frames} frames; "
            f"estimated correction rotation ({rot}) +- ({pm(s.rotation_sigma_deg, 1.0, 2)}) "
            f"deg, translation ({cm}) +- ({pm(s.translation_sigma_m, 100.0, 1)}) cm"
        )
    return [*lines, ""] if lines else []


def format_demo_report(report: DemoReport) -> str:
    """The text the CLI prints: latency table, quality per class and fusion kind, and the files
    written."""
    runs = report.runs or (KindRun("geometric", (), report.result, report.latency),)
    lines = [f"drive: {report.drive} ({report.frames} sweeps)"]
    if report.without is not None:
        lines.append(f"without: {report.without}")
    lines += ["", f"per-stage latency (ms), {runs[0].kind} fusion:"]
    lines.append(f"  {'stage':<16}{'median':>9}{'p90':>9}{'max':>9}")
    for s in report.latency:
        lines.append(f"  {s.stage:<16}{s.median_ms:9.2f}{s.p90_ms:9.2f}{s.max_ms:9.2f}")
    lines.append(
        "  (end_to_end counts from each sweep's stamp, its start: a sweep takes 100 ms to record)"
    )
    for run in runs[1:]:
        med = {s.stage: s.median_ms for s in run.latency}
        lines.append(
            f"  {run.kind} fusion: fusion {med.get('fusion', 0.0):.2f}, processing "
            f"{med.get('processing', 0.0):.2f}, end_to_end {med.get('end_to_end', 0.0):.2f} "
            "(medians)"
        )
    err = report.median_center_error_m
    lines += [
        "",
        f"cars within {EVAL_RANGE_M:.0f} m, match at {MATCH_DISTANCE_M:.0f} m centre distance "
        f"({runs[0].kind}): recall {_pct(report.recall)} ({report.true_positives}/"
        f"{report.true_positives + report.false_negatives}), precision {_pct(report.precision)} "
        f"({report.false_positives} false positives), median centre error "
        + ("n/a" if err is None else f"{err:.2f} m"),
        "",
        f"detection quality vs ground truth, every class (objects within {EVAL_RANGE_M:.0f} m, "
        "at least half in the image and unoccluded; match at 1 m for cars, 0.5 m for "
        "pedestrians and cyclists):",
        *quality_table(runs),
        "",
        "tracking vs ground truth, cars (the same objects; velocity RMSE of cars moving faster "
        "than 1 m/s):",
        *tracking_lines(runs),
        "",
        *calibration_lines(report.calibration, report.calibration_caveat),
        f"detections: {report.detections}",
        f"picture: {report.picture}",
        *(f"calibration picture: {path}" for path in report.calibration_pictures),
    ]
    return "\n".join(lines)
