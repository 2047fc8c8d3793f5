"""Tracking quality of the fusion kinds on synthetic drives: the tracking tables of
benchmarks/RESULTS.md.

    python -m benchmarks.tracking_quality --seeds 0 1 2 --out perception-tracking \
        [--scene rich --seconds 5] [--fusion geometric learned ensemble] \
        [--kitti ../shared/data/kitti_object/training --model DETECTOR.onnx]

Each seed runs `perception demo`'s `run_demo` with every fusion kind (the node core: pipeline,
then tracker, with the node's default tracking config); each kind's TrackLists are scored
against the drive's ground truth (`replay.tracking_eval`: objects within 40 m at least half
unoccluded and in the image, a match within 1 m for cars, 0.5 m for pedestrians and cyclists),
merged over the seeds and printed as Markdown with the issue's targets for cars checked.
`--kitti` also runs the KITTI sanity check (`kitti_headings`): each KITTI object frame held for a
second, the tracked cars' headings against the detections', both scored against PointPillars.
Tune on seeds 20-25; report on seeds the tuning never saw (0, 1, 2). Prints progress (a
script).
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from benchmarks.fusion_quality import _fmt
from replay.synth.demo import ensure_synthetic_drive, run_demo
from replay.tracking_eval import CLASSES, TrackingResult, TrackingStats, merge_tracking

#: The issue's targets for cars within 40 m on unseen seeds: (name, measure, limit, at least?).
CAR_TARGETS: tuple[tuple[str, Callable[[TrackingStats], float | None], float, bool], ...] = (
    ("MOTA >= 0.90", lambda s: s.mota, 0.90, True),
    ("IDF1 >= 0.90", lambda s: s.idf1, 0.90, True),
    ("ID switches <= 2 per 100 GT tracks", lambda s: s.id_switches_per_100, 2.0, False),
    ("velocity RMSE <= 0.5 m/s (moving)", lambda s: s.velocity_rmse_mps, 0.5, False),
    ("parked p95 speed <= 0.2 m/s", lambda s: s.static_speed_p95_mps, 0.2, False),
    ("median heading error <= 2 deg (moving)", lambda s: s.median_heading_error_deg, 2.0, False),
)


def table(results: dict[str, TrackingResult]) -> list[str]:
    lines = [
        "| class | fusion | MOTA | MOTP m | IDF1 | ID switches | per 100 GT tracks | "
        "fragmentations | GT tracks | tracked / objects | FP | velocity RMSE m/s | "
        "static p95 m/s | median heading deg |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for label in CLASSES:
        for kind, result in results.items():
            s = result.stats(label)
            lines.append(
                f"| {label} | {kind} | {_fmt(s.mota, '.3f')} | {_fmt(s.motp_m, '.2f')} | "
                f"{_fmt(s.idf1, '.3f')} | {s.id_switches} | "
                f"{_fmt(s.id_switches_per_100, '.1f')} | {s.fragmentations} | {s.gt_tracks} | "
                f"{s.matches} / {s.objects} | {s.false_positives} | "
                f"{_fmt(s.velocity_rmse_mps, '.2f')} | {_fmt(s.static_speed_p95_mps, '.2f')} | "
                f"{_fmt(s.median_heading_error_deg, '.1f')} |"
            )
    return lines


def targets(results: dict[str, TrackingResult]) -> list[str]:
    """Per fusion kind, the car targets met and missed."""
    lines = []
    for kind, result in results.items():
        s = result.stats("Car")
        met: list[str] = []
        missed: list[str] = []
        for name, measure, limit, at_least in CAR_TARGETS:
            value = measure(s)
            ok = value is not None and (value >= limit if at_least else value <= limit)
            (met if ok else missed).append(f"{name} ({_fmt(value, '.3g')})")
        lines.append(
            f"- {kind}: met {len(met)} of {len(CAR_TARGETS)}"
            + (f"; missed: {', '.join(missed)}" if missed else "")
        )
    return lines


#: Sweeps each KITTI object frame is held for in the sanity check (the ego standing still).
HOLD_SWEEPS = 10


@dataclass(frozen=True)
class KittiHeadings:
    """Heading errors (degrees, modulo 180: a box's outline does not tell front from back)
    against the reference objects, of the last held sweep's detections and confirmed tracks
    of their class, and how many reference objects there were."""

    kind: str
    references: int
    detection_errors_deg: tuple[float, ...]
    track_errors_deg: tuple[float, ...]
    resets: int


def _yaw_error_deg(a: float, b: float) -> float:
    return math.degrees(abs(math.remainder(a - b, math.pi)))


def kitti_headings(
    folder_path: Path, references_dir: Path, model: Path, kind: str
) -> KittiHeadings:
    """The issue's KITTI sanity check. The KITTI object frames are single frames of unrelated
    scenes: each is held for HOLD_SWEEPS sweeps at 10 Hz (the same scan and image each sweep, as
    if the ego stood still) and the frames are stamped further apart than the tracker's
    `max_gap_s`, so that it starts over at each (as `perception replay kitti-object` does).
    Against the PointPillars reference objects (cars, pedestrians, cyclists; score >= 0.5,
    within 40 m, in the image; the frames that have a reference file), the heading of the
    nearest detection of its class (within 1.5 m) in each frame's last sweep is compared with
    that of the nearest confirmed track."""
    from app.models import build_pipeline
    from perception.config import NodeConfig
    from perception.msgs.types import TrackList
    from perception.node import NodeCore
    from replay.datasets.kitti_eval import frame_references
    from replay.datasets.kitti_object import KittiObjectFolder
    from replay.offline import Received, run_core

    folder = KittiObjectFolder(folder_path)
    base = NodeConfig()
    config = replace(
        base,
        camera_model=replace(base.camera_model, path=str(model)),
        pipeline=replace(base.pipeline, fusion=replace(base.pipeline.fusion, kind=kind)),
    )
    scene_ns = round((config.tracking.max_gap_s + 1.0 + HOLD_SWEEPS * 0.1) * 1e9)
    sweep_ns = 100_000_000

    def received() -> Iterator[Received]:
        for i in range(len(folder)):
            for k in range(HOLD_SWEEPS):
                for m in folder.frame_messages(i, i * scene_ns + k * sweep_ns):
                    yield Received(m.header.stream, m.header.stamp_ns, message=m)

    core = NodeCore(config, build_pipeline(config))
    tracks: dict[int, TrackList] = {}
    detections = {
        dl.header.stamp_ns: dl
        for dl in run_core(
            core, received(), on_tracks=lambda t: tracks.update({t.header.stamp_ns: t})
        )
    }
    n_refs = 0
    det_errors: list[float] = []
    track_errors: list[float] = []
    for i in range(len(folder)):
        refs = frame_references(folder, i, references_dir)
        if refs is None:
            continue
        last = i * scene_ns + (HOLD_SWEEPS - 1) * sweep_ns
        n_refs += len(refs)
        for ref in refs:
            for boxes, errors in (
                (detections[last].detections, det_errors),
                (tracks[last].tracks, track_errors),
            ):
                near = [
                    b
                    for b in boxes
                    if b.label == ref.label and math.dist(b.center[:2], ref.center[:2]) <= 1.5
                ]
                if near:
                    best = min(near, key=lambda b: math.dist(b.center[:2], ref.center[:2]))
                    errors.append(_yaw_error_deg(best.yaw, ref.yaw))
    return KittiHeadings(kind, n_refs, tuple(det_errors), tuple(track_errors), core.tracker.resets)


def kitti_line(h: KittiHeadings) -> str:
    def summary(errors: tuple[float, ...]) -> str:
        if not errors:
            return "none found"
        return (
            f"{len(errors)} / {h.references} found, median {statistics.median(errors):.1f}, "
            f"max {max(errors):.1f} deg"
        )

    return (
        f"- {h.kind}: detections {summary(h.detection_errors_deg)}; tracks "
        f"{summary(h.track_errors_deg)} (tracker resets: {h.resets})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--out", type=Path, default=Path("perception-tracking"))
    parser.add_argument("--fusion", nargs="+", default=["geometric", "learned", "ensemble"])
    parser.add_argument("--scene", choices=["simple", "rich"], default="simple")
    parser.add_argument("--kitti", type=Path, help="also replay this KITTI object folder")
    parser.add_argument("--model", type=Path, help="the camera detector for --kitti")
    parser.add_argument(
        "--references",
        type=Path,
        help="PointPillars boxes for --kitti (default: kitti_pointpillars/reference_pred_velo "
        "beside the KITTI object folder's parent)",
    )
    args = parser.parse_args()
    if args.kitti is not None and args.model is None:
        parser.error("--kitti needs --model (the camera detector)")
    merged: dict[str, list[TrackingResult]] = {k: [] for k in args.fusion}
    t0 = time.perf_counter()
    for seed in args.seeds:
        out = args.out / f"{args.scene}-seed{seed}"
        out.mkdir(parents=True, exist_ok=True)
        drive = args.out / f"synth_{args.scene}_seed{seed}_{args.seconds:g}s.mcap"
        ensure_synthetic_drive(drive, seed=seed, seconds=args.seconds, scene=args.scene)
        report = run_demo(drive, out_dir=out, fusion=args.fusion)
        for run in report.runs:
            if run.tracking is not None:
                merged[run.kind].append(run.tracking)
        print(f"seed {seed}: {report.frames} sweeps", flush=True)
    wall = time.perf_counter() - t0
    results = {k: merge_tracking(v) for k, v in merged.items()}
    print(
        f"\n### {args.scene} world (seeds {', '.join(map(str, args.seeds))}, "
        f"{args.seconds:g} s each; {math.ceil(wall)} s)\n"
    )
    print("\n".join(table(results)))
    print("\nCar targets:\n")
    print("\n".join(targets(results)), flush=True)
    if args.kitti is not None:
        references = args.references or (
            args.kitti.parent.parent / "kitti_pointpillars" / "reference_pred_velo"
        )
        print(f"\nKITTI {args.kitti}, heading error against PointPillars:\n")
        for kind in args.fusion:
            h = kitti_headings(args.kitti, references, args.model, kind)
            print(kitti_line(h), flush=True)


if __name__ == "__main__":
    main()
