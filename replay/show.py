"""A run looked at frame by frame (`perception show`, `perception replay --show`): one picture
per DetectionList (replay.pictures: the 3D boxes on the camera image and in a bird's-eye view
of the lidar points, the references or ground truth in green) and an index page (HTML) of the
frames with their scores.

Sources:
- a KITTI object folder: the DetectionList with `header.seq` i is frame i (as
  `perception eval` reads a run); the references are a folder of per-frame files (KITTI
  `label_2`, by default the folder's own, or PointPillars boxes), matched as `perception eval`
  matches them with its defaults (replay.datasets.kitti_eval.score_kitti_frame);
- a drive: a DetectionList is drawn on the sweep with its stamp and the first frame of the
  camera after it (within the time to the next DetectionList); a synthetic drive's ground
  truth (beside it, or its ground-truth channel) is scored by the demo's protocol
  (replay.evaluation.score_truth_frame).

Frames without references are drawn with their detections and listed unscored. A drawing
that stops after its first picture (interrupted, or an error) still writes the index of the
pictures drawn, marked partial at its top with the reason.
"""

from __future__ import annotations

import bisect
import html
import itertools
import logging
import os
import urllib.parse
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import numpy.typing as npt

from calibration import CalibrationError, Rig
from perception.msgs.types import CameraFrame, DetectionList, LidarSweep, RigMessage
from perception.ratelimit import RateLimitedLogger
from replay.datasets.kitti_eval import (
    check_run_of_folder,
    frame_references,
    read_references,
    score_kitti_frame,
)
from replay.datasets.kitti_object import KittiObjectFolder, read_image, read_kitti_scan
from replay.drive import DriveReader
from replay.errors import ReplayError
from replay.evaluation import (
    CLASS_MATCH_DISTANCE_M,
    POINTPILLARS_CLASSES,
    QUALITY_RANGE_M,
    MatchResult,
    ReferenceBox,
    drive_ground_truth,
    merge_results,
    score_truth_frame,
)
from replay.mcap_player import check_sensor_drive, checked_messages
from replay.output import OutputError, atomic_output, check_output_dir, check_outputs_not_inputs
from replay.pictures import (
    BGR,
    CAMERA_BOX_BGR,
    REFERENCE_BGR,
    UNSCORED_BGR,
    DrawnBox,
    class_colour,
    frame_picture,
    write_picture,
)
from replay.synth.world import drive_files

__all__ = [
    "KITTI_MIN_REFERENCE_SCORE",
    "ShowProgress",
    "ShowReport",
    "ShownFrame",
    "check_drive_ground_truth",
    "check_kitti_references",
    "check_pictures_folder",
    "score_line",
    "show_drive",
    "show_kitti",
]

log = logging.getLogger(__name__)

#: progress(pictures written, pictures in all).
ShowProgress = Callable[[int, int], None]

#: `perception eval`'s defaults, which the KITTI scores follow: reference score at least...
KITTI_MIN_REFERENCE_SCORE = 0.5
#: ...BEV centre distance of a match (m) and range of the references (m).
KITTI_MATCH_DISTANCE_M = 1.5
KITTI_RANGE_M = 40.0
#: Ground truth farther than this (m) is not drawn (the view ends at 50 m).
_DRAWN_RANGE_M = 60.0
INDEX_NAME = "index.html"
#: The folders of a KITTI object folder that `show_kitti` reads.
_KITTI_INPUT_FOLDERS = ("image_2", "calib", "velodyne", "velodyne_reduced", "label_2")


@dataclass(frozen=True)
class ShownFrame:
    """One picture: the frame's name, the picture's path, the DetectionList's stamp (ns), its
    detection count and its scores (None: no references for this frame)."""

    name: str
    picture: Path
    stamp_ns: int
    detections: int
    result: MatchResult | None


@dataclass(frozen=True)
class ShowReport:
    """What was written: the index page, the frames (in the run's order), the scores over every
    scored frame (None: none was), how they were scored (in words), the DetectionLists
    left out because the source has no frame for them, and the pictures drawn on a black
    image because the drive has no frame of the rig's camera drawn on (`camera`) for them."""

    index: Path
    frames: tuple[ShownFrame, ...]
    total: MatchResult | None
    protocol: str
    left_out: int = 0
    no_image: int = 0
    #: The rig's camera drawn on (a drive's run; "" for a KITTI folder's).
    camera: str = ""


def _totals(result: MatchResult) -> tuple[int, int, int]:
    return len(result.matches), len(result.missed), len(result.false_positives)


def _ratio(num: int, den: int) -> str:
    return "-" if den == 0 else f"{num / den:.2f}"


def _score_text(result: MatchResult | None) -> str:
    if result is None:
        return "no references"
    tp, fn, fp = _totals(result)
    return (
        f"matched {tp}, missed {fn}, false {fp}; recall {_ratio(tp, tp + fn)}, "
        f"precision {_ratio(tp, tp + fp)}"
    )


def _boxes(
    dl: DetectionList,
    references: Iterable[ReferenceBox],
    result: MatchResult | None,
    camera_name: str,
) -> list[DrawnBox]:
    """The references (scored ones green, labelled when missed; the rest dim) and the
    detections (by class, false positives labelled so), with the 2D boxes of the camera
    `camera_name` drawn on."""
    scored = set() if result is None else {m.reference for m in result.matches}
    missed = set() if result is None else set(result.missed)
    false = set() if result is None else {id(d) for d in result.false_positives}
    out = []
    for r in references:
        if r in missed:
            out.append(DrawnBox(r, REFERENCE_BGR, f"missed {r.label}"))
        else:
            out.append(DrawnBox(r, REFERENCE_BGR if r in scored else UNSCORED_BGR))
    for d in dl.detections:
        text = f"{d.label} {d.score:.2f}" + (" FP" if id(d) in false else "")
        # Another camera's 2D box is in its pixels, not in those of the image drawn on.
        box = (
            d.camera_box
            if d.camera_box is not None and d.camera_box.camera == camera_name
            else None
        )
        out.append(DrawnBox(d, class_colour(d.label), text, camera_box=box))
    return out


def _legend(references: str) -> tuple[tuple[str, BGR], ...]:
    return (
        (f"{references} (scored)", REFERENCE_BGR),
        (f"{references} (not scored)", UNSCORED_BGR),
        ("car", class_colour("Car")),
        ("pedestrian", class_colour("Pedestrian")),
        ("cyclist", class_colour("Cyclist")),
        ("lidar only (unknown)", class_colour("unknown")),
        ("camera 2D box", CAMERA_BOX_BGR),
        ("FP: false positive; missed: a scored reference no detection matched", (240, 240, 240)),
    )


def _draw(
    path: Path,
    image: npt.NDArray[np.uint8],
    points_vehicle: npt.NDArray[np.float64],
    rig: Rig,
    camera_name: str,
    *,
    title: str,
    boxes: Sequence[DrawnBox],
    legend: Sequence[tuple[str, BGR]],
) -> None:
    picture = frame_picture(
        image,
        points_vehicle,
        rig.cameras[camera_name],
        rig.transform(f"camera/{camera_name}", "vehicle"),
        boxes,
        title=title,
        legend=legend,
    )
    write_picture(path, picture)


def _stopped_by(error: BaseException) -> str:
    """Why a drawing stopped, in one line, for the top of a partial index."""
    if isinstance(error, KeyboardInterrupt):  # SIGINT, and SIGTERM as the CLI raises it
        return "interrupted"
    return " ".join(str(error).split()) or type(error).__name__


def _finish_partial(
    out_dir: Path,
    frames: Sequence[ShownFrame],
    protocol: str,
    run_name: str,
    *,
    of: int,
    error: BaseException,
    no_image: int = 0,
) -> None:
    """The index of the pictures drawn before `error` stopped the drawing (nothing when none
    was: a failed drawing leaves no folder behind, `replay.output.output_dir`). A failure to
    write it is dropped: the caller re-raises `error`, which says what went wrong first."""
    if not frames:
        return
    why = f"{len(frames)} of {of} frames drawn; the drawing stopped: {_stopped_by(error)}"
    try:
        _finish(out_dir, frames, protocol, run_name, left_out=0, no_image=no_image, partial=why)
    except (OutputError, OSError) as e:
        log.info("%s: partial index not written: %s", out_dir, e)
    else:
        log.info("%s: partial index written (%s)", out_dir / INDEX_NAME, why)


# -- KITTI object folders ----------------------------------------------------------------------


def check_pictures_folder(
    out_dir: Path,
    kitti_dir: Path,
    reference_dir: Path | None = None,
    what: str = "the pictures' folder",
) -> None:
    """Refuses a pictures' folder that is one a KITTI run is read from: the folder itself, its
    image, scan, calib and label folders, or `reference_dir` (symbolic links resolved). The pictures
    are named `<frame id>.png`, as the images are, and would replace them.

    Raises:
        replay.output.OutputError: naming `out_dir` and the input folder it is.
    """
    target = Path(out_dir).expanduser().resolve()
    root = Path(kitti_dir).expanduser()
    # The folder itself too: its pictures and index would lie among the data's own folders.
    inputs = [root, *(root / sub for sub in _KITTI_INPUT_FOLDERS)]
    if reference_dir is not None:
        inputs.append(Path(reference_dir).expanduser())
    for folder in inputs:
        if folder.resolve() == target:
            also = "" if Path(out_dir) == folder else f" ({folder})"
            raise OutputError(
                f"{out_dir}: is an input folder{also}; {what} must be another folder, not one "
                "the frames are read from"
            )


def _kitti_reference_dir(folder: KittiObjectFolder, reference_dir: Path | None) -> Path | None:
    """The references' folder `show_kitti` reads: `reference_dir`, else the folder's own
    `label_2` when it has one (None: no references).

    Raises:
        replay.errors.ReplayError: `reference_dir` does not exist.
    """
    if reference_dir is None and (folder.root / "label_2").is_dir():
        reference_dir = folder.root / "label_2"
    if reference_dir is not None and not reference_dir.is_dir():
        raise ReplayError(f"{reference_dir}: reference folder does not exist")
    return reference_dir


def check_kitti_references(
    kitti: Path | KittiObjectFolder,
    reference_dir: Path | None = None,
    seqs: Iterable[int] | None = None,
) -> None:
    """Reads the reference file of each frame `show_kitti` would score (`seqs`: the frames'
    indices, default every frame of the folder) with the parsers that score it, so that a
    malformed one is refused before anything is replayed or drawn: found while drawing, it
    cost the whole replay. `reference_dir` as in `show_kitti`.

    Raises:
        replay.errors.ReplayError: a reference file is malformed (names the file, line and
            field), is no regular file, or its frame's calib file is broken; `kitti` is no
            KITTI object folder; `reference_dir` does not exist.
    """
    folder = kitti if isinstance(kitti, KittiObjectFolder) else KittiObjectFolder(kitti)
    reference_dir = _kitti_reference_dir(folder, reference_dir)
    if reference_dir is None:
        return
    for i in range(len(folder)) if seqs is None else sorted(set(seqs)):
        frame = folder.frames[i]
        ref_path = reference_dir / f"{frame.frame_id}.txt"
        if ref_path.is_file():
            read_references(ref_path, frame.calib_path)
        elif ref_path.exists():
            # Its own refusal of a folder or pipe of that name (before it reads the image).
            frame_references(folder, i, reference_dir)


def show_kitti(
    lists: Sequence[DetectionList],
    kitti_dir: Path,
    out_dir: Path,
    *,
    reference_dir: Path | None = None,
    progress: ShowProgress | None = None,
    run_name: str = "",
    inputs: Sequence[Path] = (),
) -> ShowReport:
    """The pictures and index of a KITTI object folder's run (see the module docstring) in
    `out_dir` (created): `<frame id>.png` per DetectionList and `index.html`.
    `reference_dir`: the references' folder (default: the folder's `label_2`, when it has
    one). `run_name` titles the index page. `inputs`: other files read (the run's file), which
    no picture may replace.

    Raises:
        replay.errors.ReplayError: a DetectionList's seq has no frame in the folder, or a
            frame's files or reference file are missing or broken (names the path; a broken
            reference file before any picture, `check_kitti_references`).
        replay.output.OutputError: `out_dir` is an input folder (`check_pictures_folder`), or
            it or a file in it cannot be written.
    """
    check_pictures_folder(out_dir, kitti_dir, reference_dir)
    folder = KittiObjectFolder(kitti_dir)
    reference_dir = _kitti_reference_dir(folder, reference_dir)
    check_run_of_folder(lists, folder, run_name or "the run")
    check_kitti_references(folder, reference_dir, (dl.header.seq for dl in lists))
    out_dir = check_output_dir(out_dir, "the pictures' folder")
    # A picture or the index linked to a frame's file, or named as the run's, would replace it.
    folders = [folder.root / sub for sub in _KITTI_INPUT_FOLDERS]
    if reference_dir is not None:
        folders.append(reference_dir)
    pictures = [out_dir / f"{folder.frames[dl.header.seq].frame_id}.png" for dl in lists]
    outs = [*pictures, out_dir / INDEX_NAME]
    check_outputs_not_inputs(outs, inputs, "a picture or the index", folders=folders)
    legend = _legend("references")
    protocol = (
        f"references: {reference_dir} (score at least {KITTI_MIN_REFERENCE_SCORE:g}), "
        f"matched as `perception eval` matches them: per class ({', '.join(POINTPILLARS_CLASSES)}"
        f"), a detection within {KITTI_MATCH_DISTANCE_M:g} m (BEV centre) of a reference; "
        f"references within {KITTI_RANGE_M:g} m and in the camera image count"
        if reference_dir is not None
        else f"no references ({folder.root} has no label_2/): detections only"
    )
    run_name = run_name or str(folder.root)
    frames: list[ShownFrame] = []
    try:
        _draw_kitti(
            lists,
            folder,
            reference_dir=reference_dir,
            out_dir=out_dir,
            frames=frames,
            legend=legend,
            progress=progress,
        )
    except BaseException as e:
        # Pictures without their page: the page of those drawn, saying it is partial and why.
        _finish_partial(out_dir, frames, protocol, run_name, of=len(lists), error=e)
        raise
    return _finish(out_dir, frames, protocol, run_name, left_out=0)


def _draw_kitti(
    lists: Sequence[DetectionList],
    folder: KittiObjectFolder,
    *,
    reference_dir: Path | None,
    out_dir: Path,
    frames: list[ShownFrame],
    legend: Sequence[tuple[str, BGR]],
    progress: ShowProgress | None,
) -> None:
    """`show_kitti`'s pictures, each appended to `frames` once written."""
    for i, dl in enumerate(lists):
        frame = folder.frames[dl.header.seq]
        image = read_image(frame.image_path)
        rig = folder.rig(frame, image)
        points = rig.transform("vehicle", "lidar").apply(read_kitti_scan(frame.lidar_path)[:, :3])
        result = None
        references: list[ReferenceBox] = []
        if reference_dir is not None:
            result = score_kitti_frame(
                folder,
                dl,
                reference_dir,
                max_center_distance_m=KITTI_MATCH_DISTANCE_M,
                max_range_m=KITTI_RANGE_M,
                min_reference_score=KITTI_MIN_REFERENCE_SCORE,
            )
            if result is not None:
                ref_path = reference_dir / f"{frame.frame_id}.txt"
                references = [
                    r
                    for r in read_references(ref_path, frame.calib_path)
                    if r.score >= KITTI_MIN_REFERENCE_SCORE
                ]
        path = out_dir / f"{frame.frame_id}.png"
        title = f"frame {frame.frame_id}: {len(dl.detections)} detections; {_score_text(result)}"
        boxes = _boxes(dl, references, result, "front")
        _draw(path, image, points, rig, "front", title=title, boxes=boxes, legend=legend)
        frames.append(ShownFrame(frame.frame_id, path, dl.header.stamp_ns, len(dl.detections),
                                 result))  # fmt: skip
        if progress is not None:
            progress(i + 1, len(lists))


# -- drives ------------------------------------------------------------------------------------


def _camera_name(rig: Rig, drive: Path) -> str:
    if not rig.cameras:
        raise ReplayError(f"{drive}: the drive's rig has no camera to draw on")
    return "front" if "front" in rig.cameras else next(iter(rig.cameras))


def _rig_in_force(
    msg: RigMessage, rig: Rig, camera_name: str, topic: str, bad: RateLimitedLogger
) -> Rig:
    """The rig `msg` carries, or `rig` (said) where it cannot be read or has not the camera
    drawn on."""
    try:
        new = Rig.from_dict(msg.rig, source=f"{topic} message {msg.header.seq}")
    except (CalibrationError, ValueError, TypeError, KeyError) as e:
        bad.warning("rig", f"{e}; drawn with the rig before")
        return rig
    if camera_name not in new.cameras:
        bad.warning(
            "rig",
            f"{topic} message {msg.header.seq}: the rig has no camera {camera_name}; drawn with "
            "the rig before",
        )
        return rig
    return new


def _truth(drive: Path) -> dict[int, tuple[tuple[ReferenceBox, ...], tuple[float, ...]]]:
    """The drive's ground truth by sweep stamp: boxes and their unoccluded fractions."""
    try:
        frames = drive_ground_truth(drive)
    except ValueError as e:
        raise ReplayError(str(e)) from e
    return {f.stamp_ns: (f.boxes, f.camera_visible) for f in frames}


def check_drive_ground_truth(drive: Path) -> None:
    """Reads the drive's ground truth as `show_drive` reads it, so that a malformed one is
    refused before anything is replayed or drawn: found while drawing, it cost the whole
    replay.

    Raises:
        replay.errors.ReplayError: a malformed document or an impossible value (names the
            file and line, or the drive and sweep), or the drive cannot be read.
    """
    _truth(drive)


def show_drive(
    lists: Sequence[DetectionList],
    drive: Path,
    out_dir: Path,
    *,
    progress: ShowProgress | None = None,
    run_name: str = "",
    inputs: Sequence[Path] = (),
) -> ShowReport:
    """The pictures and index of a drive's run (see the module docstring) in `out_dir`
    (created): `NNNNN.png` per DetectionList (its place in the run, in stamp order) and
    `index.html`. DetectionLists whose stamp is no sweep of the drive are left out (counted).
    `inputs`: other files read (the run's file), which no picture may replace.

    Raises:
        replay.errors.ReplayError: the drive cannot be read, has no rig, no camera, no lidar
            sweeps, or no sweep with the stamp of any DetectionList (another drive's run).
        replay.output.OutputError: `out_dir` or a file in it cannot be written.
    """
    # A picture or the index named as the drive, its ground truth or the run, or linked to
    # one, would replace it.
    outs = [*(out_dir / f"{i:05d}.png" for i in range(len(lists))), out_dir / INDEX_NAME]
    check_outputs_not_inputs(outs, [*drive_files(drive), *inputs], "a picture or the index")
    reader = DriveReader(drive)
    contents = check_sensor_drive(reader, command="show")
    rig = reader.rig
    if rig is None:
        raise ReplayError(f"{drive}: the drive has no rig (calibration) to draw with")
    camera_name = _camera_name(rig, drive)
    camera_frame_id = f"camera/{camera_name}"
    truth = _truth(drive)
    ordered = sorted(lists, key=lambda dl: dl.header.stamp_ns)
    stamps = [dl.header.stamp_ns for dl in ordered]
    gaps = [b - a for a, b in itertools.pairwise(stamps) if b > a]
    # A camera frame belongs to the DetectionList stamped last before it, within this.
    window_ns = min(gaps, default=1_000_000_000)
    by_stamp = {dl.header.stamp_ns: (i, dl) for i, dl in enumerate(ordered)}
    # Each sweep with the rig in force when it came: a rig re-sent mid-drive (a camera
    # re-calibrated) is what the replay used from then on, and the pictures were drawn with the
    # drive's first.
    sweeps: dict[int, tuple[LidarSweep, Rig]] = {}
    images: dict[int, npt.NDArray[np.uint8]] = {}
    topics = contents.topics_of("LidarSweep", "CameraFrame", "RigMessage")
    out_dir_checked = False
    frames: dict[int, ShownFrame] = {}
    drawn: set[int] = set()  # stamps
    no_images = 0
    legend = _legend("ground truth")
    first_ns = stamps[0] if stamps else 0

    def draw(stamp: int, image: npt.NDArray[np.uint8] | None) -> None:
        nonlocal no_images
        i, dl = by_stamp[stamp]
        sweep, rig = sweeps.pop(stamp)
        drawn.add(stamp)
        # No camera frame: a black image keeps the layout, and the title says why it is black.
        no_image = "; no camera image" if image is None else ""
        if image is None:
            no_images += 1
            camera = rig.cameras[camera_name]
            image = np.zeros((camera.height, camera.width, 3), np.uint8)
        points = rig.transform("vehicle", sweep.header.frame_id).apply(sweep.points[:, :3])
        result = None
        references: tuple[ReferenceBox, ...] = ()
        if stamp in truth:
            references, unoccluded = truth[stamp]
            result = score_truth_frame(
                dl.detections,
                references,
                unoccluded,
                rig.cameras[camera_name],
                rig.transform(camera_frame_id, "vehicle"),
            )
        near = tuple(r for r in references if r.range_m <= _DRAWN_RANGE_M)
        name = f"sweep {i}"
        title = (
            f"{name} (t = {(stamp - first_ns) / 1e9:.1f} s): {len(dl.detections)} detections; "
            f"{_score_text(result)}{no_image}"
        )
        path = out_dir / f"{i:05d}.png"
        boxes = _boxes(dl, near, result, camera_name)
        _draw(path, image, points, rig, camera_name, title=title, boxes=boxes, legend=legend)
        frames[i] = ShownFrame(name, path, stamp, len(dl.detections), result)
        if progress is not None:
            progress(len(frames), len(by_stamp))

    # A damaged part of the drive costs the frames it held a picture, not the others.
    bad = RateLimitedLogger(log)

    def not_drawn(error: ReplayError) -> None:
        bad.warning("unreadable", f"{error}; not drawn")

    protocol = (
        f"ground truth of {drive}, scored as `perception demo` scores it: objects within "
        f"{QUALITY_RANGE_M:g} m, at least half in the camera image and unoccluded; a match "
        f"within {CLASS_MATCH_DISTANCE_M['Car']:g} m for cars, "
        f"{CLASS_MATCH_DISTANCE_M['Pedestrian']:g} m for pedestrians and cyclists"
        if truth
        else f"no ground truth in or beside {drive}: detections only"
    )
    run_name = run_name or str(drive)
    try:
        recorded = checked_messages(reader, topics=topics, on_error=not_drawn)
        for rec in recorded:
            msg = rec.message
            if isinstance(msg, RigMessage):
                rig = _rig_in_force(msg, rig, camera_name, rec.topic, bad)
                continue
            if isinstance(msg, LidarSweep) and msg.header.stamp_ns in by_stamp:
                stamp = msg.header.stamp_ns
                sweeps[stamp] = (msg, rig)
            elif (
                isinstance(msg, CameraFrame)
                and msg.header.frame_id == camera_frame_id
                and msg.image is not None
            ):
                at = bisect.bisect_right(stamps, msg.header.stamp_ns) - 1
                if at < 0 or msg.header.stamp_ns - stamps[at] >= window_ns:
                    continue
                stamp = stamps[at]
                if stamp in images or stamp in drawn:
                    continue  # the first frame after the sweep is its
                images[stamp] = msg.image
            else:
                continue
            if stamp in sweeps and stamp in images:
                if not out_dir_checked:
                    out_dir = check_output_dir(out_dir, "the pictures' folder")
                    out_dir_checked = True
                draw(stamp, images.pop(stamp))
        if not frames and not sweeps:
            raise ReplayError(
                f"{drive}: no sweep has the stamp of a DetectionList of the run: was the run "
                "replayed from another drive?"
            )
        out_dir = check_output_dir(out_dir, "the pictures' folder")
        for stamp in sorted(sweeps):  # sweeps whose camera frame never came
            draw(stamp, images.pop(stamp, None))
    except BaseException as e:
        # Pictures without their page: the page of those drawn, saying it is partial and why.
        drawn_so_far = [frames[i] for i in sorted(frames)]
        _finish_partial(
            out_dir, drawn_so_far, protocol, run_name, of=len(lists), error=e, no_image=no_images
        )
        raise
    shown = [frames[i] for i in sorted(frames)]
    report = _finish(
        out_dir,
        shown,
        protocol,
        run_name,
        left_out=len(lists) - len(shown),
        no_image=no_images,
    )
    return replace(report, camera=camera_name)


# -- the index page ----------------------------------------------------------------------------


def _class_cell(result: MatchResult | None) -> str:
    if result is None:
        return ""
    parts = []
    for label, s in result.per_class.items():
        if s.true_positives or s.false_negatives or s.false_positives:
            fp = f", {s.false_positives} FP" if s.false_positives else ""
            parts.append(f"{label} {s.true_positives}/{s.true_positives + s.false_negatives}{fp}")
    return "; ".join(parts)


def _row(
    name: str, detections: int, result: MatchResult | None, picture: str | None, cls: str = ""
) -> str:
    # A file name is a URL path here: "#", "?" or "%" in a frame's name broke its links, and
    # one like "javascript:..." would have run as a script. Quoted from its bytes: a Linux
    # name need not be UTF-8.
    href = None if picture is None else urllib.parse.quote(os.fsencode(picture), safe="")
    cells = [html.escape(name)] if href is None else [
        f'<a href="{href}">{html.escape(name)}</a>'
    ]  # fmt: skip
    cells.append(str(detections))
    if result is None:
        cells += ["-", "-", "-", "-", "-", "no references"]
    else:
        tp, fn, fp = _totals(result)
        cells += [str(tp), str(fn), str(fp), _ratio(tp, tp + fn), _ratio(tp, tp + fp)]
        cells.append(html.escape(_class_cell(result)))
    if picture is not None:
        alt = html.escape(picture)
        cells.append(f'<a href="{href}"><img src="{href}" loading="lazy" alt="{alt}"></a>')
    else:
        cells.append("")
    attr = f' class="{cls}"' if cls else ""
    return f"<tr{attr}>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


_STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: right; vertical-align: middle; }
th { background: #eee; }
td:first-child, td:nth-child(8) { text-align: left; }
tr.total { font-weight: bold; background: #f6f6f6; }
p.partial { font-weight: bold; background: #fde2e2; border: 1px solid #c33; padding: 8px; }
img { width: 540px; display: block; }
"""


def _finish(
    out_dir: Path,
    frames: Sequence[ShownFrame],
    protocol: str,
    run_name: str,
    *,
    left_out: int,
    no_image: int = 0,
    partial: str | None = None,
) -> ShowReport:
    """Writes the index page (atomically: a reader never sees half of one). `partial`: why the
    drawing stopped before every frame was drawn, said first on the page."""
    scored = [f.result for f in frames if f.result is not None]
    total = merge_results(scored) if scored else None
    header = (
        "<tr><th>frame</th><th>detections</th><th>matched</th><th>missed</th>"
        "<th>false positives</th><th>recall</th><th>precision</th><th>per class: matched/"
        "scored, false positives</th><th>picture</th></tr>"
    )
    rows = [
        _row(
            f"all {len(frames)} frames ({len(scored)} scored)",
            sum(f.detections for f in frames),
            total,
            None,
            "total",
        )
    ]
    rows += [_row(f.name, f.detections, f.result, f.picture.name) for f in frames]
    title = f"perception show: {run_name}" + (" (partial)" if partial else "")
    note = f"<p>{left_out} DetectionList(s) of the run have no frame in the source.</p>"
    page = "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
            f'<p class="partial">Partial: {html.escape(partial)}.</p>' if partial else "",
            f"<h1>{html.escape(title)}</h1>",
            f"<p>{html.escape(protocol)}.</p>",
            note if left_out else "",
            f"<table>{header}",
            *rows,
            "</table></body></html>",
            "",
        ]
    )
    index = out_dir / INDEX_NAME
    with atomic_output(index, "the index page") as tmp:
        # A path that is not UTF-8 (the run's, a frame's) is shown with a replacement mark.
        tmp.write_text(page, encoding="utf-8", errors="replace")
    return ShowReport(index, tuple(frames), total, protocol, left_out, no_image)


def score_line(report: ShowReport) -> str:
    """The scores over every scored frame, in words (one line)."""
    return _score_text(report.total) if report.total is not None else "no frame had references"
