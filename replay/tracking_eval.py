"""Multi-object tracking quality: the tracker's TrackLists against ground truth with object ids.

The protocol is the detection quality's (`replay.evaluation`), frame by frame and per class:
ground-truth objects within `QUALITY_RANGE_M` (BEV, from the vehicle), at least half unoccluded
and, with a camera, at least half in its image count (`quality_counted`); a track of the class
within the range plus the match distance (and, with a camera, at least half in its image: the
objects elsewhere do not count, so neither do the tracks there) takes part, and matches an
object within the class's BEV centre distance (`CLASS_MATCH_DISTANCE_M`: 1 m cars, 0.5 m
pedestrians and cyclists). A track on an object that does not count (far, hidden, out of view)
or on one of a neighbouring class (`NEIGHBOUR_LABELS`: a Car track on a Van) is neither a hit
nor a false positive: such tracks are set aside each frame by an optimal matching over every
nearby object first, as the MOTChallenge tools set aside tracks on distractors. A track labelled
`unknown` belongs to no class. The CLEAR MOT and identity measures are py-motmetrics' (one
accumulator per class and sequence), the distance its matching minimises the BEV centre distance
in metres.

Motion quality on the matched pairs (velocities over the ground in the vehicle axes, headings in
the vehicle frame): the RMS of the velocity error vector over objects moving faster than
`MOVING_SPEED_MPS`, the 95th percentile of the tracked speed over objects slower than
`STATIC_SPEED_MPS` (parked cars while the ego drives) and the median heading error over the
moving ones (degrees in [0, 180]: a moving track's heading has a front). The library prints
nothing; `format_tracking_report` gives the text the CLI prints.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import motmetrics  # type: ignore[import-untyped]
import numpy as np
import numpy.typing as npt
from scipy.optimize import linear_sum_assignment

from calibration import Rig
from perception.msgs.types import Track, TrackList
from replay.evaluation import (
    CLASS_MATCH_DISTANCE_M,
    MIN_IN_IMAGE,
    NEIGHBOUR_LABELS,
    QUALITY_RANGE_M,
    ReferenceBox,
    quality_counted,
    visible_fraction,
)
from replay.synth.world import CAMERA_NAME, GroundTruthFrame

__all__ = [
    "CLASSES",
    "MOVING_SPEED_MPS",
    "STATIC_SPEED_MPS",
    "TrackingEvaluator",
    "TrackingResult",
    "TrackingStats",
    "evaluate_tracks",
    "format_tracking_report",
    "merge_tracking",
    "relative_note",
    "tracking_table",
]

FloatArray = npt.NDArray[np.float64]

#: The classes scored, here and by the demo (perception demo, benchmarks).
CLASSES: tuple[str, ...] = ("Car", "Pedestrian", "Cyclist")
#: An object faster than this over the ground (m/s) is moving: velocity and heading errors.
MOVING_SPEED_MPS = 1.0
#: An object slower than this (m/s) stands still: the tracked speed should be ~0.
STATIC_SPEED_MPS = 0.1

# The match events of py-motmetrics: a SWITCH is a match with another track than before.
_MATCHED = ("MATCH", "SWITCH")


@dataclass(frozen=True)
class TrackingStats:
    """One class's tracking quality over one or more sequences: the counts of py-motmetrics
    (over counted object-frames) and the raw values of the motion errors, so that results of
    several drives merge exactly (`merge_tracking`); the measures are properties (None when
    undefined)."""

    label: str
    objects: int = 0
    """Counted object-frames (ground-truth boxes over all frames)."""
    gt_tracks: int = 0
    """Distinct ground-truth objects counted in at least one frame."""
    matches: int = 0
    """Matched object-frames (ID switches included)."""
    misses: int = 0
    false_positives: int = 0
    id_switches: int = 0
    fragmentations: int = 0
    idtp: int = 0
    idfp: int = 0
    idfn: int = 0
    distance_sum_m: float = 0.0
    """Sum of the matched pairs' BEV centre distances (m)."""
    velocity_errors_mps: tuple[float, ...] = ()
    """Norm of the velocity error of each matched pair on a moving object."""
    static_speeds_mps: tuple[float, ...] = ()
    """Tracked speed of each matched pair on a standing object."""
    heading_errors_deg: tuple[float, ...] = ()
    """Heading error of each matched pair on a moving object, [0, 180]."""

    @property
    def mota(self) -> float | None:
        """1 - (misses + false positives + ID switches) / objects."""
        if not self.objects:
            return None
        return 1.0 - (self.misses + self.false_positives + self.id_switches) / self.objects

    @property
    def motp_m(self) -> float | None:
        """Mean BEV centre distance of the matches (m)."""
        return self.distance_sum_m / self.matches if self.matches else None

    @property
    def idf1(self) -> float | None:
        """Identity F1: 2 IDTP / (2 IDTP + IDFP + IDFN)."""
        n = 2 * self.idtp + self.idfp + self.idfn
        return 2 * self.idtp / n if n else None

    @property
    def recall(self) -> float | None:
        return self.matches / self.objects if self.objects else None

    @property
    def precision(self) -> float | None:
        n = self.matches + self.false_positives
        return self.matches / n if n else None

    @property
    def id_switches_per_100(self) -> float | None:
        """ID switches per 100 ground-truth tracks."""
        return 100.0 * self.id_switches / self.gt_tracks if self.gt_tracks else None

    @property
    def velocity_rmse_mps(self) -> float | None:
        """RMS velocity error (vector) of the matches on moving objects, m/s."""
        e = self.velocity_errors_mps
        return math.sqrt(sum(v * v for v in e) / len(e)) if e else None

    @property
    def static_speed_p95_mps(self) -> float | None:
        """95th percentile of the tracked speed of the matches on standing objects, m/s."""
        s = self.static_speeds_mps
        return float(np.percentile(np.asarray(s), 95)) if s else None

    @property
    def median_heading_error_deg(self) -> float | None:
        """Median heading error of the matches on moving objects, degrees."""
        h = self.heading_errors_deg
        return statistics.median(h) if h else None


@dataclass(frozen=True)
class TrackingResult:
    """Tracking quality per class over one or more drives: `frames` paired (a TrackList and a
    ground-truth frame of the same stamp), `unpaired` ground-truth frames without a TrackList
    (sweeps the node dropped or did not track; not scored), `untruthed` TrackLists without a
    ground-truth frame (a run cut short of the drive's truth, or of another drive; not
    scored), `relative` paired frames tracked in the vehicle frame (no ego pose: no GNSS),
    whose velocities, relative to the moving vehicle, are not scored (nor headings and static
    speeds, which follow from them)."""

    per_class: Mapping[str, TrackingStats] = field(default_factory=dict)
    frames: int = 0
    unpaired: int = 0
    untruthed: int = 0
    relative: int = 0

    def stats(self, label: str) -> TrackingStats:
        """The stats of `label` (empty when it was not scored)."""
        return self.per_class.get(label, TrackingStats(label))


@dataclass
class _Truth:
    box: ReferenceBox
    velocity: tuple[float, float]


class TrackingEvaluator:
    """Scores a sequence (one drive) frame by frame: `add` each TrackList with the ground truth
    of its stamp, then `result()`. Frames must come in time order (identity switches are
    counted along the sequence).

    Raises (from `add`):
        ValueError: the ground truth has no object ids or velocities (written before they
            were recorded), or not one visibility flag per box.
    """

    def __init__(
        self,
        *,
        classes: Sequence[str] = CLASSES,
        range_m: float = QUALITY_RANGE_M,
        match_distance_m: Mapping[str, float] = CLASS_MATCH_DISTANCE_M,
    ) -> None:
        self.classes = tuple(dict.fromkeys(classes))
        self.range_m = range_m
        self.match_distance_m = dict(match_distance_m)
        self._frames = 0
        self._accumulators = {c: motmetrics.MOTAccumulator(auto_id=False) for c in self.classes}
        # Per class and frame: the counted objects and the scored tracks, by id, to look the
        # matched pairs up again from py-motmetrics' events.
        self._seen: dict[str, dict[int, tuple[dict[int, _Truth], dict[int, Track]]]] = {
            c: {} for c in self.classes
        }
        # Frames tracked in the vehicle frame (no ego pose: a drive without GNSS): their
        # velocities are relative to the moving vehicle, and scored against the ground's they
        # read as the ego's own speed (6.1 m/s of error on the demo drive).
        self._relative: set[int] = set()

    @property
    def frames(self) -> int:
        return self._frames

    def add(
        self,
        tracks: TrackList,
        truth: GroundTruthFrame,
        counted: Sequence[bool],
        in_view: Sequence[bool] | None = None,
    ) -> None:
        """One frame: the TrackList and the ground truth of its stamp; `counted`, per box,
        whether the protocol counts it (`quality_counted`); `in_view`, per track, whether it
        lies where objects count (None: everywhere; the range is checked here)."""
        boxes = truth.boxes
        if boxes and (len(truth.ids) != len(boxes) or len(truth.velocities) != len(boxes)):
            raise ValueError(
                f"ground truth of sweep {truth.seq}: no object ids or velocities (ground truth "
                "written before they were recorded; generate the drive again)"
            )
        if len(counted) != len(boxes):
            raise ValueError(f"counted: {len(counted)} flags for {len(boxes)} boxes")
        if in_view is not None and len(in_view) != len(tracks.tracks):
            raise ValueError(f"in_view: {len(in_view)} flags for {len(tracks.tracks)} tracks")
        viewed = in_view if in_view is not None else (True,) * len(tracks.tracks)
        frame = self._frames
        self._frames += 1
        if tracks.world_frame != "enu":
            self._relative.add(frame)
        for label in self.classes:
            d = self.match_distance_m.get(label, 1.0)
            near = self.range_m + 2 * d
            neighbours = NEIGHBOUR_LABELS.get(label, ())
            scored: dict[int, _Truth] = {}
            nearby: list[tuple[float, float]] = []
            nearby_scored: list[int | None] = []  # the object id, None when set aside
            for i, box in enumerate(boxes):
                if box.label == label and counted[i] and box.range_m <= self.range_m:
                    scored[truth.ids[i]] = _Truth(box, truth.velocities[i])
                    nearby.append((box.center[0], box.center[1]))
                    nearby_scored.append(truth.ids[i])
                elif (box.label == label or box.label in neighbours) and box.range_m <= near:
                    nearby.append((box.center[0], box.center[1]))
                    nearby_scored.append(None)
            taking = [
                t
                for t, seen in zip(tracks.tracks, viewed, strict=True)
                if seen
                and t.label == label
                and math.hypot(t.center[0], t.center[1]) <= self.range_m + d
            ]
            distance = _distances(taking, nearby)
            aside = _set_aside(distance, d, nearby_scored)
            kept = [i for i in range(len(taking)) if i not in aside]
            columns = [j for j, ident in enumerate(nearby_scored) if ident is not None]
            sub = distance[np.ix_(columns, kept)] if columns and kept else None
            dists = np.full((len(columns), len(kept)), np.nan)
            if sub is not None:
                dists = np.where(sub <= d, sub, np.nan)
            oids = [nearby_scored[j] for j in columns]
            hids = [taking[i].track_id for i in kept]
            self._accumulators[label].update(oids, hids, dists, frameid=frame)
            self._seen[label][frame] = (scored, {taking[i].track_id: taking[i] for i in kept})

    def result(self) -> TrackingResult:
        """The quality of the frames added so far."""
        per_class = {label: self._stats(label) for label in self.classes}
        return TrackingResult(per_class, self._frames, relative=len(self._relative))

    def _stats(self, label: str) -> TrackingStats:
        acc = self._accumulators[label]
        if self._frames == 0:
            return TrackingStats(label)
        names = [
            "num_objects",
            "num_unique_objects",
            "num_detections",
            "num_misses",
            "num_false_positives",
            "num_switches",
            "num_fragmentations",
            "idtp",
            "idfp",
            "idfn",
        ]
        summary = motmetrics.metrics.create().compute(acc, metrics=names, name=label)
        value = {n: summary[n].iloc[0] for n in names}
        events = acc.mot_events
        matched = events[events["Type"].isin(_MATCHED)]
        distance_sum = 0.0
        velocity_errors: list[float] = []
        static_speeds: list[float] = []
        heading_errors: list[float] = []
        seen = self._seen[label]
        frames = matched.index.get_level_values("FrameId").tolist()
        for frame, oid, hid, dist in zip(
            frames,
            matched["OId"].tolist(),
            matched["HId"].tolist(),
            matched["D"].tolist(),
            strict=True,
        ):
            distance_sum += float(dist)
            if int(frame) in self._relative:
                continue
            objects, taken = seen[int(frame)]
            truth, track = objects[int(oid)], taken[int(hid)]
            speed = math.hypot(*truth.velocity)
            if speed > MOVING_SPEED_MPS:
                velocity_errors.append(
                    math.hypot(
                        track.velocity_mps[0] - truth.velocity[0],
                        track.velocity_mps[1] - truth.velocity[1],
                    )
                )
                heading_errors.append(_heading_error_deg(track.yaw, truth.box.yaw))
            elif speed < STATIC_SPEED_MPS:
                static_speeds.append(math.hypot(*track.velocity_mps))
        return TrackingStats(
            label=label,
            objects=int(value["num_objects"]),
            gt_tracks=int(value["num_unique_objects"]),
            matches=int(value["num_detections"]),
            misses=int(value["num_misses"]),
            false_positives=int(value["num_false_positives"]),
            id_switches=int(value["num_switches"]),
            fragmentations=int(value["num_fragmentations"]),
            idtp=int(value["idtp"]),
            idfp=int(value["idfp"]),
            idfn=int(value["idfn"]),
            distance_sum_m=distance_sum,
            velocity_errors_mps=tuple(velocity_errors),
            static_speeds_mps=tuple(static_speeds),
            heading_errors_deg=tuple(heading_errors),
        )


def _box(track: Track) -> ReferenceBox:
    return ReferenceBox(track.label, track.center, track.size, track.yaw)


def _distances(tracks: Sequence[Track], centres: Sequence[tuple[float, float]]) -> FloatArray:
    """BEV centre distances (objects, tracks), m."""
    if not tracks or not centres:
        return np.zeros((len(centres), len(tracks)))
    t = np.array([track.center[:2] for track in tracks], dtype=np.float64)
    o = np.array(centres, dtype=np.float64)
    out: FloatArray = np.hypot(o[:, None, 0] - t[None, :, 0], o[:, None, 1] - t[None, :, 1])
    return out


def _set_aside(distance: FloatArray, d: float, ids: Sequence[int | None]) -> set[int]:
    """The tracks (columns) an optimal matching within `d` over every nearby object pairs
    with an object that does not count (`ids[row]` None): neither hits nor false positives."""
    if distance.size == 0 or all(i is not None for i in ids):
        return set()
    feasible = distance <= d
    # Pairs beyond the distance cost more than any matching of feasible ones could save.
    big = 2.0 * float(distance[feasible].sum()) + 1.0
    rows, cols = linear_sum_assignment(np.where(feasible, distance, big))
    return {int(c) for r, c in zip(rows, cols, strict=True) if feasible[r, c] and ids[r] is None}


def _heading_error_deg(a: float, b: float) -> float:
    """|a - b| in degrees, wrapped to [0, 180]."""
    d = math.degrees(a - b) % 360.0
    return min(d, 360.0 - d)


def merge_tracking(results: Iterable[TrackingResult]) -> TrackingResult:
    """One result over several drives (sums of counts, pooled error values; classes in
    first-seen order)."""
    merged: dict[str, TrackingStats] = {}
    frames = unpaired = untruthed = relative = 0
    for result in results:
        frames += result.frames
        unpaired += result.unpaired
        untruthed += result.untruthed
        relative += result.relative
        for label, s in result.per_class.items():
            m = merged.get(label)
            merged[label] = s if m is None else _add(m, s)
    return TrackingResult(merged, frames, unpaired, untruthed, relative)


def _add(a: TrackingStats, b: TrackingStats) -> TrackingStats:
    return TrackingStats(
        label=a.label,
        objects=a.objects + b.objects,
        gt_tracks=a.gt_tracks + b.gt_tracks,
        matches=a.matches + b.matches,
        misses=a.misses + b.misses,
        false_positives=a.false_positives + b.false_positives,
        id_switches=a.id_switches + b.id_switches,
        fragmentations=a.fragmentations + b.fragmentations,
        idtp=a.idtp + b.idtp,
        idfp=a.idfp + b.idfp,
        idfn=a.idfn + b.idfn,
        distance_sum_m=a.distance_sum_m + b.distance_sum_m,
        velocity_errors_mps=a.velocity_errors_mps + b.velocity_errors_mps,
        static_speeds_mps=a.static_speeds_mps + b.static_speeds_mps,
        heading_errors_deg=a.heading_errors_deg + b.heading_errors_deg,
    )


def evaluate_tracks(
    track_lists: Iterable[TrackList],
    truth: Iterable[GroundTruthFrame],
    *,
    rig: Rig | None = None,
    camera: str = CAMERA_NAME,
    classes: Sequence[str] = CLASSES,
) -> TrackingResult:
    """One drive's TrackLists scored against its ground truth, paired by stamp
    (`TrackList.header.stamp_ns` == `GroundTruthFrame.stamp_ns`), in stamp order. With a `rig`
    that has `camera`, an object counts only when at least half of it is in that camera's image
    (the demo's protocol), and a track is scored only then too; without, range and occlusion
    alone decide.

    Raises:
        ValueError: the ground truth has no object ids or velocities.
    """
    frames = {f.stamp_ns: f for f in truth}
    lists = sorted(track_lists, key=lambda t: t.header.stamp_ns)
    evaluator = TrackingEvaluator(classes=classes)
    model = rig.cameras.get(camera) if rig is not None else None
    camera_from_vehicle = None
    if rig is not None and model is not None:
        camera_from_vehicle = rig.transform(f"camera/{camera}", "vehicle")
    paired: set[int] = set()
    untruthed = 0
    for tl in lists:
        frame = frames.get(tl.header.stamp_ns)
        if frame is None or frame.stamp_ns in paired:
            untruthed += 1
            continue
        paired.add(frame.stamp_ns)
        counted = quality_counted(
            frame.boxes,
            frame.camera_visible,
            model if camera_from_vehicle is not None else None,
            camera_from_vehicle,
            range_m=evaluator.range_m,
        )
        in_view = None
        if model is not None and camera_from_vehicle is not None:
            in_view = [
                visible_fraction(_box(t), model, camera_from_vehicle) >= MIN_IN_IMAGE
                for t in tl.tracks
            ]
        evaluator.add(tl, frame, counted, in_view)
    result = evaluator.result()
    return TrackingResult(
        result.per_class, result.frames, len(frames) - len(paired), untruthed, result.relative
    )


def relative_note(result: TrackingResult) -> str:
    """Why motion is not scored on some frames (`result.relative`), one line."""
    return (
        f"motion not scored on {result.relative} of {result.frames} frames: tracked in the "
        "vehicle frame (no ego pose: no GNSS fix), their velocities are relative to the moving "
        "vehicle"
    )


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def tracking_table(results: Mapping[str, TrackingResult]) -> list[str]:
    """Plain-text rows: per class, each named result (e.g. per fusion kind) side by side."""
    lines = [
        f"  {'class':<12}{'run':<11}{'MOTA':>7}{'MOTP m':>8}{'IDF1':>7}{'IDsw':>6}"
        f"{'/100':>6}{'frag':>6}{'GT tr':>7}{'vel rmse':>10}{'static p95':>12}{'head deg':>10}"
    ]
    for label in CLASSES:
        for name, result in results.items():
            s = result.stats(label)
            lines.append(
                f"  {label:<12}{name:<11}{_fmt(s.mota, '.3f'):>7}{_fmt(s.motp_m, '.2f'):>8}"
                f"{_fmt(s.idf1, '.3f'):>7}{s.id_switches:>6}"
                f"{_fmt(s.id_switches_per_100, '.1f'):>6}{s.fragmentations:>6}{s.gt_tracks:>7}"
                f"{_fmt(s.velocity_rmse_mps, '.2f'):>10}{_fmt(s.static_speed_p95_mps, '.2f'):>12}"
                f"{_fmt(s.median_heading_error_deg, '.1f'):>10}"
            )
    return lines


def format_tracking_report(result: TrackingResult, *, title: str = "") -> str:
    """The text `perception eval --tracks` prints: the protocol, the table, the counts."""
    lines = [title] if title else []
    lines += [
        f"{result.frames} frames scored ({result.unpaired} ground-truth frames without a "
        f"TrackList, {result.untruthed} TrackLists without ground truth); objects within "
        f"{QUALITY_RANGE_M:.0f} m, at least half unoccluded (and in the camera image when the "
        "rig has it), matched within 1 m (cars) or 0.5 m (pedestrians, cyclists)",
        *tracking_table({"tracks": result}),
        f"  velocity rmse (m/s) and heading error (median, degrees) over matched objects faster "
        f"than {MOVING_SPEED_MPS:g} m/s; static p95: tracked speed (m/s, 95th percentile) of "
        f"matched objects slower than {STATIC_SPEED_MPS:g} m/s",
    ]
    if result.relative:
        lines.append(f"  {relative_note(result)}")
    for label in CLASSES:
        s = result.stats(label)
        lines.append(
            f"  {label}: {s.matches}/{s.objects} object-frames tracked, {s.misses} missed, "
            f"{s.false_positives} false positives, {s.id_switches} ID switches"
        )
    return "\n".join(lines)
