"""The calibration monitor's figures for benchmarks/RESULTS.md (#16).

    python -m benchmarks.calibration_monitor --drive DRIVE.mcap [--drive ...]
    python -m benchmarks.calibration_monitor --minutes 10 --seeds 300 301 302 303 304
    python -m benchmarks.calibration_monitor --kitti ../shared/data/kitti_object/training
    python -m benchmarks.calibration_monitor --worlds 1 2 3 4 [--frames 75 --report-at 25 50]

`--drive`: synthetic drives (rich world) through the node core as the node runs them (the
default config: one sweep in four to the monitor, after the outputs are published), once with
the drive's exact rig and once per drift: 0.5 degrees about and 5 cm along each vehicle axis,
both signs, given to the monitor as the extrinsic in force. Per drift: when it was first flagged
(seconds of driving), and the estimated correction's error against the truth (the drift's
inverse) at the end of the drive. Also the monitor's cost per processed sweep.

`--minutes`: the true calibration over that many minutes of rich-world driving, split over the
seeds, rendered frame by frame for the frames the monitor uses (every fourth sweep) rather than
written to drives first (ten minutes of drives would take hours to write here). The monitor
sees exactly what the node gives it, with two differences: the ego motion to the camera's
exposure is the world's (the node takes it from GNSS), and the points left out are those in
the ground-truth boxes (the node leaves out its detections'). Counts the flags raised.

`--kitti`: the offline check (`perception calib check --frames`) of all the KITTI object frames
together, with the true calibration and with 1 degree about each axis, both signs.

`--worlds SEED ...`: every drift of `--drive` on the monitor's frames of 10 s (25 frames) of
rich worlds rendered as for `--minutes` (a world made for 41 s, so that its scenery differs from
the 10 s drives'), one world per seed: many scenes at the cost of rendering 25 frames each;
with the share of cases whose errors the reported uncertainty covers. `--max-points N`: the
monitor takes N points a frame; `--frames N`: N frames of each world (the world is made long
enough for them); `--window N`: the monitor pools N frames; `--max-evaluations N`: its search's
budget of window scores; `--report-at N ...`: the must-show's
count after N frames too (a drift counts when flagged within 10 s and then within 0.15 degrees
and, strictly, 2 cm across the optical axis): how the estimate converges on the same drives.

`--landscape SEED`: what the evidence can tell apart. The frames the monitor would use over 10 s
of the rich world (rendered as for `--minutes`), pooled, scored at a grid of pitches and heights
around the truth, and along the optical axis with the camera's stamp taken 10 ms early, on
time and 10 ms late (the ego motion to the exposure computed for the wrong instant).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from app.models import build_pipeline, choose_camera_model
from app.threads import hold_blas_threads
from calibration.monitor import (
    CalibrationMonitor,
    Correction,
    MonitorState,
    apply_correction,
)
from perception.config import NodeConfig
from perception.node.core import NodeCore
from perception.pipeline.pipeline import StepFrame
from replay.calibration_check import Fanout, PerturbedWatch, check_calibrations
from replay.offline import open_source, run_core
from replay.synth.monitor_frames import MonitorFrame, monitor_frames, synth_camera

AXES = ("roll", "pitch", "yaw", "x", "y", "z")


def drifts(degrees: float, metres: float) -> list[tuple[str, Correction]]:
    """0.5 degrees about and 5 cm along each axis (both signs), named."""
    out = []
    for axis, name in enumerate(AXES):
        for sign in (1.0, -1.0):
            rot = [0.0, 0.0, 0.0]
            shift = [0.0, 0.0, 0.0]
            if axis < 3:
                rot[axis] = sign * degrees
                label = f"{name} {sign * degrees:+g} deg"
            else:
                shift[axis - 3] = sign * metres
                label = f"{name} {sign * metres * 100:+g} cm"
            out.append(
                (label, Correction((rot[0], rot[1], rot[2]), (shift[0], shift[1], shift[2])))
            )
    return out


class _Timeline(PerturbedWatch):
    """A perturbed watch that remembers when its camera was first flagged."""

    def __init__(self, config: NodeConfig, perturb: Correction | None) -> None:
        super().__init__(config, perturb, pool=False)
        self.first_flag_ns: int | None = None
        self.start_ns: int | None = None
        self.spent_ns = 0
        self.used = 0

    def observe(self, frame: StepFrame) -> None:
        self.start_ns = frame.stamp_ns if self.start_ns is None else self.start_ns
        t = time.perf_counter_ns()
        super().observe(frame)
        self.spent_ns += time.perf_counter_ns() - t
        self.used += 1
        drifted = any(s.state == MonitorState.DRIFTED for s in self.statuses())
        if drifted and self.first_flag_ns is None:
            self.first_flag_ns = frame.stamp_ns


def drive_table(paths: Sequence[Path]) -> list[str]:
    config = choose_camera_model(NodeConfig(), None, config_given=False, synthetic=True)
    pipeline = build_pipeline(config)
    cases: list[tuple[str, Correction | None]] = [("true rig", None), *drifts(0.5, 0.05)]
    rows: dict[str, list[tuple[float | None, Correction, Correction | None]]] = {}
    costs: list[float] = []
    sweeps = 0
    for path in paths:
        opened = open_source(path, config, topics_from_drive=True)
        core = NodeCore(opened.config, pipeline, opened.default_rig)
        watches = [_Timeline(opened.config, p) for _, p in cases]
        core.calibration = Fanout(opened.config, watches)
        sweeps += sum(1 for _ in run_core(core, opened.received))
        costs.append(watches[0].spent_ns / max(core.counters.published, 1) / 1e6)
        for (name, perturb), watch in zip(cases, watches, strict=True):
            status = watch.statuses()[0]
            first = None
            if watch.first_flag_ns is not None and watch.start_ns is not None:
                first = (watch.first_flag_ns - watch.start_ns) / 1e9 + 0.1
            estimate = Correction(status.rotation_deg, status.translation_m)
            rows.setdefault(name, []).append((first, estimate, perturb))
        print(f"  {path.name}: done", flush=True)
    lines = [
        f"{len(paths)} drive(s) of 10 s, {sweeps} sweeps; flagged at: seconds of driving "
        "(- never); error: estimated correction minus the truth (the drift undone), "
        "rotation (deg) and translation (cm) about / along x, y, z",
        "",
        "| drift | flagged at (s) | error, rotation (deg) | error, translation (cm) |",
        "| --- | --- | --- | --- |",
    ]
    for name, results in rows.items():
        flagged = ", ".join("-" if f is None else f"{f:.1f}" for f, _, _ in results)
        errors = [
            _errors(est, Correction() if perturb is None else perturb.inverse())
            for _, est, perturb in results
        ]
        rot = "; ".join(", ".join(f"{v:+.2f}" for v in r) for r, _ in errors)
        tr = "; ".join(", ".join(f"{v:+.1f}" for v in t) for _, t in errors)
        lines.append(f"| {name} | {flagged} | {rot} | {tr} |")
    lines += [
        "",
        "monitor cost per processed sweep (true rig, its share of the run): "
        + ", ".join(f"{c:.2f} ms" for c in costs),
    ]
    return lines


def minutes_table(minutes: float, seeds: Sequence[int]) -> list[str]:
    """The true calibration over `minutes` of rich-world driving (see the module docstring)."""
    camera, vehicle_from_camera = synth_camera()
    defaults = NodeConfig().calibration_monitor
    every = defaults.every_n_sweeps
    seconds = minutes * 60.0 / len(seeds)
    flags = 0
    used = 0
    worst = np.zeros(6)
    # The largest motion in the image of an estimate (px), and its spread then.
    moved = (0.0, 0.0)
    spent = 0.0
    for seed in seeds:
        monitor = CalibrationMonitor(camera, vehicle_from_camera, defaults.monitor)
        last_state = monitor.estimate().state
        for points, image, odometer, ground in monitor_frames(seed, seconds):
            start = time.perf_counter()
            monitor.add(points, image, travelled_m=odometer, ground=ground)
            spent += time.perf_counter() - start
            used += 1
            estimate = monitor.estimate()
            if estimate.state == MonitorState.DRIFTED and last_state != MonitorState.DRIFTED:
                flags += 1
            last_state = estimate.state
            if estimate.state != MonitorState.COLLECTING:
                if estimate.image_motion_px > moved[0]:
                    moved = (estimate.image_motion_px, estimate.image_motion_sigma_px)
                worst = np.maximum(
                    worst,
                    np.abs(
                        [
                            *estimate.correction.rotation_deg,
                            *np.multiply(estimate.correction.translation_m, 100),
                        ]
                    ),
                )
        print(f"  seed {seed}: {seconds:.0f} s, flags so far {flags}", flush=True)
    return [
        f"{minutes:g} minutes of the rich world (seeds {', '.join(map(str, seeds))}, "
        f"{seconds:.0f} s each), true calibration: {used} frames to the monitor, "
        f"{flags} flag(s) raised; largest estimated correction seen: rotation "
        f"{', '.join(f'{v:.2f}' for v in worst[:3])} deg, translation "
        f"{', '.join(f'{v:.1f}' for v in worst[3:])} cm (x, y, z); largest motion of the "
        f"projection under an estimate {moved[0]:.2f} +- {moved[1]:.2f} px (median; flagged "
        f"beyond {defaults.monitor.flag_pixels:g}); monitor cost "
        f"{spent / max(used, 1) * 1e3:.1f} ms per frame it used, "
        f"{spent / max(used * every, 1) * 1e3:.2f} ms per sweep"
    ]


def _pooled(stream: Iterable[MonitorFrame]) -> CalibrationMonitor:
    """A monitor of the synthetic camera holding all of `stream`'s frames, with no fit yet."""
    frames = list(stream)
    config = replace(
        NodeConfig().calibration_monitor.monitor,
        window_frames=len(frames),
        min_frames=len(frames),
        evaluate_every=10**9,
    )
    monitor = CalibrationMonitor(*synth_camera(), config)
    for points, image, odometer, ground in frames:
        monitor.add(points, image, travelled_m=odometer, ground=ground)
    return monitor


def landscape_table(seed: int, frames: int = 25) -> list[str]:
    """The pooled score around the truth (see the module docstring)."""
    # The world of 1.1 s more than the frames span, as these figures were first measured.
    seconds = frames * NodeConfig().calibration_monitor.every_n_sweeps / 10.0 + 1.0
    monitor = _pooled(monitor_frames(seed, seconds, limit=frames))
    steps = (-4, -2, -1, 0, 1, 2, 4)
    lines = [
        f"rich world, seed {seed}: {monitor.frames} frames pooled (every "
        f"{NodeConfig().calibration_monitor.every_n_sweeps}th sweep); MI (nats) at pitch "
        "(rows, degrees) and height (columns, cm) corrections of the true extrinsic",
        "",
        "| pitch, height (cm) | " + " | ".join(f"{2.5 * k:+.1f}" for k in steps) + " |",
        "| --- |" + " ---: |" * len(steps),
    ]
    for p in steps:
        row = [
            monitor.score_at(Correction((0.0, 0.25 * p, 0.0), (0.0, 0.0, 0.025 * k))) for k in steps
        ]
        lines.append(f"| {0.25 * p:+.2f} | " + " | ".join(f"{v:.4f}" for v in row) + " |")
    along = (-12, -8, -4, -2, 0, 2, 4, 8, 12)
    lines += [
        "",
        "MI along the optical axis (x, cm) with the camera's instant taken wrong by (ms):",
        "",
        "| time error | " + " | ".join(f"{2.5 * k:+.0f}" for k in along) + " | peak |",
        "| --- |" + " ---: |" * (len(along) + 1),
    ]
    on_time = monitor
    for error_ms in (-10, 0, 10):
        monitor = on_time
        if error_ms:
            late = monitor_frames(seed, seconds, error_ms * 1_000_000, limit=frames)
            monitor = _pooled(late)
        row = [monitor.score_at(Correction((0.0, 0.0, 0.0), (0.025 * k, 0.0, 0.0))) for k in along]
        peak = 2.5 * along[int(np.argmax(row))]
        lines.append(
            f"| {error_ms:+d} | " + " | ".join(f"{v:.4f}" for v in row) + f" | {peak:+.1f} cm |"
        )
    return lines


def worlds_table(
    seeds: Sequence[int],
    frames: int = 25,
    world_s: float = 41.0,
    *,
    max_points: int | None = None,
    window_frames: int | None = None,
    max_evaluations: int | None = None,
    report_at: Sequence[int] = (),
) -> list[str]:
    """Every drift on `frames` monitor frames of each seed's rich world (module docstring),
    the monitor taking `max_points` points a frame, pooling `window_frames` and searching
    with `max_evaluations` window scores (None: the config's). `report_at`: frame counts
    (below `frames`) after which the estimates are summed up too, as after the last frame:
    how the estimate of the same drive converges."""
    camera, vehicle_from_camera = synth_camera()
    config = NodeConfig().calibration_monitor.monitor
    if max_points is not None:
        config = replace(config, max_points=max_points)
    if window_frames is not None:
        config = replace(config, window_frames=window_frames)
    if max_evaluations is not None:
        config = replace(config, max_evaluations=max_evaluations)
    every = NodeConfig().calibration_monitor.every_n_sweeps
    # A world long enough for the frames asked for (the monitor's frame every `every` sweeps).
    world_s = max(world_s, frames * every / 10.0 + 1.0)
    cases: list[tuple[str, Correction | None]] = [("true rig", None), *drifts(0.5, 0.05)]
    lines = [
        f"rich worlds of {world_s:g} s, seeds {', '.join(map(str, seeds))}: {frames} frames "
        f"each (one sweep in {every}: {frames * every / 10:g} s of driving); flagged at: "
        "seconds (- never); error: the estimated correction minus the truth, rotation (deg) "
        "and translation (cm) about / along x, y, z",
        "",
        "| seed | drift | flagged at (s) | error, rotation (deg) | error, translation (cm) |",
        "| --- | --- | --- | --- | --- |",
    ]
    # Per frame count summed up: (drift's name, when first flagged (s), rotation and shift
    # errors after that many frames).
    outcomes: dict[int, list[tuple[str, float | None, np.ndarray, np.ndarray]]] = {}
    # |error| / sigma per axis, every case: does the reported uncertainty cover the error?
    ratios: list[np.ndarray] = []
    for seed in seeds:
        stream = list(monitor_frames(seed, world_s, limit=frames))
        for name, drift in cases:
            extrinsic = vehicle_from_camera
            if drift is not None:
                extrinsic = apply_correction(vehicle_from_camera, drift)
            monitor = CalibrationMonitor(camera, extrinsic, config)
            truth = Correction() if drift is None else drift.inverse()
            first = None
            for i, (points, image, odometer, ground) in enumerate(stream, 1):
                monitor.add(points, image, travelled_m=odometer, ground=ground)
                if first is None and monitor.estimate().state == MonitorState.DRIFTED:
                    first = i * every / 10.0
                if i in report_at:
                    rot, shift = _errors(monitor.estimate().correction, truth)
                    outcomes.setdefault(i, []).append((name, first, rot, shift))
            believed = monitor.estimate()
            rot, shift = _errors(believed.correction, truth)
            outcomes.setdefault(len(stream), []).append((name, first, rot, shift))
            sigma = np.array([*believed.sigma[:3], *np.multiply(believed.sigma[3:], 100)])
            error = np.abs(np.concatenate([rot, shift]))
            with np.errstate(divide="ignore", invalid="ignore"):
                ratios.append(np.where(np.isfinite(sigma), error / sigma, np.inf))
            lines.append(
                f"| {seed} | {name} | {'-' if first is None else f'{first:.1f}'} | "
                + ", ".join(f"{v:+.2f}" for v in rot)
                + " | "
                + ", ".join(f"{v:+.1f}" for v in shift)
                + " |"
            )
        print(f"  seed {seed}: done", flush=True)
    lines.append("")
    for count in sorted(outcomes):
        lines.append(_tally(outcomes[count], count * every / 10.0))
    lines.append(_coverage(np.array(ratios)))
    return lines


#: The must-show's time to flag a drift, seconds of driving.
FLAG_WITHIN_S = 10.0


def _errors(estimate: Correction, truth: Correction) -> tuple[np.ndarray, np.ndarray]:
    """The estimate minus the truth: rotation (deg), translation (cm)."""
    rot = np.subtract(estimate.rotation_deg, truth.rotation_deg)
    return rot, np.subtract(estimate.translation_m, truth.translation_m) * 100


def _tally(
    outcomes: Sequence[tuple[str, float | None, np.ndarray, np.ndarray]], driven_s: float
) -> str:
    """The must-show's count over `outcomes` (drift, first flagged (s), errors after
    `driven_s`): flagged within `FLAG_WITHIN_S`, and then within 0.15 degrees after `driven_s`
    of driving; strictly, also within 2 cm across the optical axis (y, z) whatever the drift
    (x is pinned to the rig: the evidence cannot see it)."""
    rotations = rotations_met = rotations_strict = shifts = shifts_flagged = shifts_met = 0
    for name, first, rot, shift in outcomes:
        axis = name.split()[0]
        flagged = first is not None and first <= FLAG_WITHIN_S
        met = flagged and float(np.abs(rot).max()) <= 0.15
        strict = met and float(np.abs(shift[1:]).max()) <= 2.0
        if axis in ("roll", "pitch", "yaw"):
            rotations += 1
            rotations_met += met
            rotations_strict += strict
        elif axis in ("y", "z"):
            shifts += 1
            shifts_flagged += flagged
            shifts_met += strict
    return (
        f"after {driven_s:g} s: rotations flagged within {FLAG_WITHIN_S:g} s and within 0.15 "
        f"deg: {rotations_met} of {rotations} ({rotations_strict} also within 2 cm in y and z);"
        f" shifts across the optical axis (y, z) flagged within {FLAG_WITHIN_S:g} s: "
        f"{shifts_flagged} of {shifts}, of which within 0.15 deg and 2 cm in y and z: "
        f"{shifts_met}"
    )


def _coverage(ratios: np.ndarray) -> str:
    """How well the reported standard deviations cover the errors (``ratios``: |error| /
    sigma, one row per case, six axes; inf sigma: reported unobserved)."""
    parts = []
    for name, axes in (("rotations", [0, 1, 2]), ("x", [3]), ("y, z", [4, 5])):
        r = ratios[:, axes].ravel()
        observed = r[np.isfinite(r)]
        unobserved = int(np.sum(~np.isfinite(r)))
        if len(observed):
            parts.append(
                f"{name}: within 1 / 2 / 3 sigma {np.mean(observed <= 1):.0%} / "
                f"{np.mean(observed <= 2):.0%} / {np.mean(observed <= 3):.0%} of "
                f"{len(observed)}, median |error| / sigma {np.median(observed):.1f}"
                + (f", {unobserved} unobserved" if unobserved else "")
            )
        else:
            parts.append(f"{name}: unobserved in all {unobserved}")
    return "reported uncertainty against the errors: " + "; ".join(parts)


def kitti_table(folder: Path, model: str | None) -> list[str]:
    config = (
        replace(NodeConfig(), camera_model=replace(NodeConfig().camera_model, path=model))
        if model
        else NodeConfig()
    )
    pipeline = build_pipeline(config)
    cases: list[tuple[str, Correction | None]] = [("true calibration", None)]
    for axis, name in enumerate(AXES[:3]):
        for sign in (1.0, -1.0):
            rot = [0.0, 0.0, 0.0]
            rot[axis] = sign
            cases.append((f"{name} {sign:+g} deg", Correction((rot[0], rot[1], rot[2]))))
    results = check_calibrations(folder, config, pipeline, [p for _, p in cases])
    lines = [
        "| KITTI frames, all together | verdict | estimated rotation (deg) "
        "| estimated translation (cm) |",
        "| --- | --- | --- | --- |",
    ]
    for (name, _), verdicts in zip(cases, results, strict=True):
        e = verdicts[0].estimate
        rot_text = ", ".join(f"{v:+.2f}" for v in e.correction.rotation_deg)
        tr_text = ", ".join(f"{v * 100:+.1f}" for v in e.correction.translation_m)
        lines.append(f"| {name} | {e.state} ({e.frames} frames) | {rot_text} | {tr_text} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--drive", type=Path, action="append", default=[])
    parser.add_argument("--minutes", type=float)
    parser.add_argument("--seeds", type=int, nargs="+", default=[300, 301, 302, 303, 304])
    parser.add_argument("--kitti", type=Path)
    parser.add_argument("--model", help="camera model for --kitti (an ONNX file)")
    parser.add_argument("--landscape", type=int, metavar="SEED")
    parser.add_argument("--worlds", type=int, nargs="+", metavar="SEED")
    parser.add_argument(
        "--max-points", type=int, help="--worlds with this many points a frame to the monitor"
    )
    parser.add_argument(
        "--frames", type=int, default=25, help="--worlds: the monitor's frames of each world"
    )
    parser.add_argument(
        "--window", type=int, help="--worlds: the monitor's window (frames; default: config's)"
    )
    parser.add_argument(
        "--max-evaluations",
        type=int,
        help="--worlds: the monitor's search budget of window scores (default: config's)",
    )
    parser.add_argument(
        "--report-at",
        type=int,
        nargs="+",
        default=[],
        metavar="N",
        help="--worlds: sum up the estimates after N frames too (the same drives, shorter)",
    )
    args = parser.parse_args()
    if any(not 1 <= n < args.frames for n in args.report_at):
        parser.error(f"--report-at: frame counts from 1 to {args.frames - 1} (below --frames)")
    for option, field, value in (
        ("--max-points", "max_points", args.max_points),
        ("--window", "window_frames", args.window),
        ("--max-evaluations", "max_evaluations", args.max_evaluations),
    ):
        if value is not None:
            try:
                replace(NodeConfig().calibration_monitor.monitor, **{field: value})
            except ValueError as e:
                parser.error(f"{option}: {e}")
    hold_blas_threads()  # as every `perception` command does: the monitor's cost as in the node
    if args.worlds:
        table = worlds_table(
            args.worlds,
            args.frames,
            max_points=args.max_points,
            window_frames=args.window,
            max_evaluations=args.max_evaluations,
            report_at=args.report_at,
        )
        print("\n".join(table) + "\n", flush=True)
    if args.landscape is not None:
        print("\n".join(landscape_table(args.landscape)) + "\n", flush=True)
    if args.drive:
        print("\n".join(drive_table(args.drive)) + "\n", flush=True)
    if args.minutes:
        print("\n".join(minutes_table(args.minutes, args.seeds)) + "\n", flush=True)
    if args.kitti is not None:
        print("\n".join(kitti_table(args.kitti, args.model)), flush=True)


if __name__ == "__main__":
    main()
