"""Which alignment score ranks a camera-lidar extrinsic above its small perturbations, and over
how many frames: the measurement behind the calibration monitor (#16) in benchmarks/RESULTS.md.

    python -m benchmarks.calibration_scores --drive DRIVE.mcap [--frames 100] \
        [--kitti ../shared/data/kitti_object/training]

Scores compared: mutual information of lidar intensity and grey level (calibration.check,
summed over the frames) and depth edges against image edges (calibration.alignment, weighted
over the frames). Candidates: the drive's true extrinsic and its perturbations in the lidar
frame (0.5 degrees about each axis, 5 cm along each, both signs); for each window length (and
the whole drive as one window), the share of windows in which the truth scores above each
perturbation. `--kitti`: all the KITTI object frames together, against 1-degree rotations about
each axis. Prints progress (a script).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import numpy.typing as npt

from calibration import RigidTransform
from calibration.alignment import EdgeAlignment, depth_edges
from calibration.check import alignment_score
from perception.msgs.types import CameraFrame, LidarSweep
from replay.datasets.kitti_object import KittiObjectFolder, read_image
from replay.drive import DriveReader

FloatArray = npt.NDArray[np.float64]
#: Camera frames further than this from a sweep's stamp are not paired with it.
MAX_PAIRING_NS = 60_000_000


def perturbations(degrees: float, metres: float | None) -> list[tuple[str, RigidTransform]]:
    """The identity ("truth"), then rotations of `degrees` about x, y, z and translations of
    `metres` along them (None: none), both signs: corrections in the lidar frame."""
    out = [("truth", RigidTransform.identity())]
    for axis, name in enumerate("xyz"):
        for sign in (1.0, -1.0):
            rotvec = [0.0, 0.0, 0.0]
            rotvec[axis] = math.radians(sign * degrees)
            out.append((f"rot {name} {sign * degrees:+g} deg", RigidTransform.from_rotvec(rotvec)))
    if metres is not None:
        for axis, name in enumerate("xyz"):
            for sign in (1.0, -1.0):
                shift = [0.0, 0.0, 0.0]
                shift[axis] = sign * metres
                out.append(
                    (
                        f"{name} {sign * metres * 100:+g} cm",
                        RigidTransform.from_rotvec([0, 0, 0], shift),
                    )
                )
    return out


def _pairs(drive: Path, frames: int) -> list[tuple[LidarSweep, npt.NDArray[np.uint8]]]:
    reader = DriveReader(drive)
    sweeps: dict[int, LidarSweep] = {}
    images: dict[int, npt.NDArray[np.uint8]] = {}
    for rec in reader.messages():
        msg = rec.message
        if isinstance(msg, LidarSweep):
            sweeps[msg.header.stamp_ns] = msg
        elif isinstance(msg, CameraFrame) and msg.image is not None:
            images[msg.header.stamp_ns] = msg.image
    stamps = np.array(sorted(images), dtype=np.int64)
    out = []
    for stamp in sorted(sweeps):
        if stamps.size == 0:
            break
        j = int(np.argmin(np.abs(stamps - stamp)))
        if abs(int(stamps[j]) - stamp) < MAX_PAIRING_NS:
            out.append((sweeps[stamp], images[int(stamps[j])]))
    return out[:frames]


def drive_ranking(drive: Path, frames: int, windows: list[int]) -> list[str]:
    """Markdown lines: per window length, the share of windows in which the truth beats each
    perturbation, for both scores."""
    rig = DriveReader(drive).rig
    if rig is None:
        return [f"{drive}: no rig (calibration) in the drive"]
    camera = rig.cameras["front"]
    candidates = perturbations(0.5, 0.05)
    transforms = [t for _, t in candidates]
    pairs = _pairs(drive, frames)
    if not pairs:
        return [f"{drive}: no lidar sweep with a camera frame"]
    truth = rig.transform("camera/front", pairs[0][0].header.frame_id)
    # Windows no longer than the drive, and the whole drive as one.
    windows = sorted({w for w in windows if w < len(pairs)} | {len(pairs)})
    wins: dict[int, list[tuple[FloatArray, FloatArray]]] = {w: [] for w in windows}
    edges_acc = {w: EdgeAlignment(transforms) for w in windows}
    mi_acc = {w: np.zeros(len(transforms)) for w in windows}
    for k, (sweep, image) in enumerate(pairs):
        edges = depth_edges(sweep.points)
        mi = np.array(
            [alignment_score(camera, truth @ t, sweep.points, image)[0] for t in transforms]
        )
        for w in windows:
            edges_acc[w].add(edges, image, camera, truth)
            mi_acc[w] += mi
            if edges_acc[w].frames == w:
                wins[w].append((edges_acc[w].scores(), mi_acc[w].copy()))
                edges_acc[w] = EdgeAlignment(transforms)
                mi_acc[w] = np.zeros(len(transforms))
        print(f"  frame {k + 1} / {len(pairs)}", end="\r", flush=True)
    lines = [
        f"{drive.name}, {len(pairs)} frames: the share of windows in which the true extrinsic "
        "scores above each perturbation (edges / MI)",
        "",
        "| perturbation | " + " | ".join(f"{w} frames" for w in windows) + " |",
        "| --- | " + " | ".join("---" for _ in windows) + " |",
    ]
    for i, (name, _) in enumerate(candidates[1:], start=1):
        cells = []
        for w in windows:
            if not wins[w]:
                cells.append("-")
                continue
            e = np.mean([s[0] > s[i] for s, _ in wins[w]])
            m = np.mean([s[0] > s[i] for _, s in wins[w]])
            cells.append(f"{e:.2f} / {m:.2f} ({len(wins[w])})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def kitti_ranking(folder_path: Path) -> list[str]:
    """Markdown lines: both scores over all the KITTI object frames together, the truth against
    1-degree rotations about each axis."""
    folder = KittiObjectFolder(folder_path)
    candidates = perturbations(1.0, None)
    transforms = [t for _, t in candidates]
    edges_acc = EdgeAlignment(transforms)
    mi = np.zeros(len(transforms))
    for i, frame in enumerate(folder.frames):
        image = read_image(frame.image_path)
        rig = folder.rig(frame, image)
        sweep = next(m for m in folder.frame_messages(i, 0) if isinstance(m, LidarSweep))
        camera = rig.cameras["front"]
        truth = rig.transform("camera/front", sweep.header.frame_id)
        edges_acc.add(depth_edges(sweep.points), image, camera, truth)
        mi += np.array(
            [alignment_score(camera, truth @ t, sweep.points, image)[0] for t in transforms]
        )
    edges = edges_acc.scores()
    lines = [
        f"KITTI object frames ({len(folder)} together): scores of the truth and of 1-degree "
        "rotations",
        "",
        "| candidate | edges | MI (sum, nats) |",
        "| --- | --- | --- |",
    ]
    lines += [
        f"| {name} | {edges[i]:.4f} | {mi[i]:.3f} |" for i, (name, _) in enumerate(candidates)
    ]
    lines.append("")
    lines.append(
        f"truth above every rotation: edges {bool(np.all(edges[0] > edges[1:]))}, "
        f"MI {bool(np.all(mi[0] > mi[1:]))}"
    )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--drive", type=Path, action="append", default=[])
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument(
        "--windows", type=int, nargs="+", default=[1, 10], help="and the whole drive as one"
    )
    parser.add_argument("--kitti", type=Path)
    args = parser.parse_args()
    for drive in args.drive:
        print("\n".join(drive_ranking(drive, args.frames, args.windows)) + "\n", flush=True)
    if args.kitti is not None:
        print("\n".join(kitti_ranking(args.kitti)), flush=True)


if __name__ == "__main__":
    main()
