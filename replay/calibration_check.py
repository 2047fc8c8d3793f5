"""The calibration check over many frames, offline: `perception calib check --drive | --frames`.

The source (a drive or a KITTI object folder) runs through the node core as in a replay, with
the calibration monitor on every processed sweep (perception.node.calibration: the same
preparation of the points, the same evidence, the same search), and its window holding the
whole source (up to `MAX_FRAMES`). At the end one search over all of it gives the verdict:
drifted when the correction it finds is beyond the thresholds and significant, aligned
otherwise. The frames of a KITTI object folder each carry their own calibration; their evidence
is pooled all the same (candidates are corrections of each frame's extrinsic). The rig checked
against a drive is the one given (`config.rig`, the CLI's RIG) throughout, its recorded rig
messages left out; without one, the drive's own.

No CPU budget binds the monitor offline: where the source has few sweeps, it takes more
points a frame than the live node (`frame_points`), up to a bound on the points pooled, so
that the verdict does not turn on which points it samples.

`perturb` checks the source as if each camera's extrinsic were moved by a correction (the
monitor is told the moved one; the pipeline keeps the rig): what a drift of that size looks
like to the check.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from calibration import Rig
from calibration.monitor import (
    CalibrationEstimate,
    Correction,
    MonitorConfig,
    MonitorState,
    apply_correction,
)
from calibration.rig import VEHICLE_FRAME, camera_frame
from perception.config import NodeConfig
from perception.node.calibration import CalibrationView, CalibrationWatch
from perception.node.core import NodeCore
from perception.pipeline import Pipeline
from perception.pipeline.pipeline import StepFrame
from replay.errors import ReplayError
from replay.offline import open_source, run_core

__all__ = [
    "MAX_FRAMES",
    "MAX_FRAME_POINTS",
    "MAX_POOLED_POINTS",
    "CameraVerdict",
    "Fanout",
    "PerturbedWatch",
    "check_calibration",
    "check_calibrations",
]

log = logging.getLogger(__name__)

#: The most frames one check pools (the newest): about 500 kB of evidence each at the live
#: node's 3,000 points a frame.
MAX_FRAMES = 600
#: The most points a frame one check takes: no CPU budget binds it offline, and where the
#: frames are few, the verdict should not turn on which points it samples (KITTI's eight
#: frames: every 1-degree rotation flagged with 5 of 8 sampling seeds at 3,000 points, with
#: 8 of 8 at 12,000; benchmarks/RESULTS.md).
MAX_FRAME_POINTS = 12_000
#: The most points a camera's monitor pools in one check, over all its frames: the evidence
#: of `MAX_FRAMES` frames at the live node's points a frame.
MAX_POOLED_POINTS = MAX_FRAMES * MonitorConfig().max_points


@dataclass(frozen=True)
class CameraVerdict:
    """One camera's verdict: the estimate (state `aligned` or `drifted`, the correction and
    its uncertainty, frames used and skipped), the rig it was made against, the last frame
    it used (None where every frame was skipped) and the frames skipped by why (the monitor's
    `SKIP_*` reasons)."""

    camera: str
    estimate: CalibrationEstimate
    rig: Rig
    view: CalibrationView | None = None
    skipped_by: tuple[tuple[str, int], ...] = ()
    #: Where the drive's rig changed: the rigs in force before `rig` and the frames checked
    #: against them, which this verdict (of `rig`, over the frames from its change on) leaves
    #: out.
    earlier_rigs: int = 0
    earlier_frames: int = 0

    @property
    def drifted(self) -> bool:
        return self.estimate.state == MonitorState.DRIFTED


class PerturbedWatch(CalibrationWatch):
    """A watch whose monitors are told each camera's extrinsic moved by `perturb` (its
    verdicts' rigs are the moved ones, so that a refined rig corrects what was checked)."""

    def __init__(self, config: NodeConfig, perturb: Correction | None, pool: bool) -> None:
        super().__init__(config.calibration_monitor, pool_rigs=pool, keep_views=True)
        self.perturb = perturb
        # The moved rig of each rig seen (the same object for the same rig, so that a
        # monitor carries on rather than starting over).
        self._moved: dict[int, tuple[Rig, Rig]] = {}

    def observe(self, frame: StepFrame) -> None:
        if self.perturb is not None:
            original, moved = self._moved.get(id(frame.rig), (None, None))
            if original is not frame.rig or moved is None:
                moved = frame.rig
                for name in moved.cameras:
                    shifted = apply_correction(
                        moved.transform(VEHICLE_FRAME, camera_frame(name)), self.perturb
                    )
                    moved = moved.with_vehicle_from(camera_frame(name), shifted)
                self._moved[id(frame.rig)] = (frame.rig, moved)
            frame = replace(frame, rig=moved)
        super().observe(frame)


class Fanout(CalibrationWatch):
    """Several watches fed from one replay, on `config`'s schedule (one sweep in
    `calibration_monitor.every_n_sweeps`)."""

    def __init__(self, config: NodeConfig, watches: Sequence[CalibrationWatch]) -> None:
        super().__init__(config.calibration_monitor)
        self.watches = list(watches)

    def observe(self, frame: StepFrame) -> None:
        for watch in self.watches:
            watch.observe(frame)


def check_calibration(
    source: Path,
    config: NodeConfig,
    pipeline: Pipeline,
    *,
    perturb: Correction | None = None,
    topics_from_drive: bool = False,
    progress: Callable[[int], None] | None = None,
) -> list[CameraVerdict]:
    """The verdict of each camera over all of `source` (see the module docstring), sorted by
    camera name. `progress(sweeps done)` after each sweep.

    Raises ReplayError for a source that cannot be read or holds no camera frame the pipeline
    could use."""
    (verdicts,) = check_calibrations(
        source,
        config,
        pipeline,
        [perturb],
        topics_from_drive=topics_from_drive,
        progress=progress,
    )
    return verdicts


def check_calibrations(
    source: Path,
    config: NodeConfig,
    pipeline: Pipeline,
    perturbs: Sequence[Correction | None],
    *,
    topics_from_drive: bool = False,
    progress: Callable[[int], None] | None = None,
) -> list[list[CameraVerdict]]:
    """`check_calibration` for each of `perturbs` (None: the rig as it is), from one replay."""
    monitor = replace(
        config.calibration_monitor.monitor,
        window_frames=MAX_FRAMES,
        min_frames=1,
        evaluate_every=10**9,
        min_travel_m=0.0,
    )
    offline = replace(
        config,
        calibration_monitor=replace(
            config.calibration_monitor, enabled=True, every_n_sweeps=1, monitor=monitor
        ),
    )
    # A rig given (`config.rig`) is the one checked: the drive's recorded rig messages would
    # otherwise take over from their stamps and the check would judge the drive's own rig.
    opened = open_source(
        source, offline, topics_from_drive=topics_from_drive, recorded_rigs=config.rig is None
    )
    watched = opened.config.calibration_monitor
    sampled = replace(
        watched.monitor, max_points=frame_points(watched.monitor.max_points, opened.sweeps)
    )
    run_config = replace(opened.config, calibration_monitor=replace(watched, monitor=sampled))
    core = NodeCore(run_config, pipeline, opened.default_rig)
    watches = [PerturbedWatch(run_config, p, pool=source.is_dir()) for p in perturbs]
    core.calibration = Fanout(run_config, watches)
    for done, _ in enumerate(run_core(core, opened.received), start=1):
        if progress is not None:
            progress(done)
    if core.counters.calibration_errors:
        raise ReplayError(
            f"{source}: the calibration monitor failed on {core.counters.calibration_errors} "
            "sweep(s) (see the log)"
        )
    hint = ""
    if config.rig is not None and opened.default_rig is not None:
        # Where nothing is checked, a rig given whose cameras the drive does not have is the
        # likely cause: say so.
        cameras = ", ".join(sorted(opened.default_rig.cameras)) or "none"
        topics = ", ".join(opened.config.inputs.camera_topics)
        hint = f"; the rig given ({config.rig}) has cameras {cameras}, the source's are {topics}"
    processed = core.counters.published
    refused = ""
    if opened.sweeps is not None and processed < opened.sweeps:
        # The node refuses sweeps whose stamps repeat or stray from their receive times, each
        # kind named once in its log among other warnings: a verdict over one sweep of a
        # hundred read as one over the whole drive.
        why = [
            f"{n} {what}"
            for n, what in (
                (core.bundler.stats.duplicate_messages, "repeated a stamp"),
                (core.counters.stamp_faults, "lay far from their receive time"),
            )
            if n
        ]
        refused = f"the node processed {processed} of its {opened.sweeps} sweeps" + (
            f" (of its inputs, {' and '.join(why)})" if why else ""
        )
        hint += f"; {refused}"
    verdicts = [_verdicts(source, watch, hint) for watch in watches]
    if refused:
        log.warning("%s: %s; the verdict is of those it processed", source, refused)
    return verdicts


def frame_points(configured: int, sweeps: int | None) -> int:
    """Points a frame an offline check of a source of `sweeps` sweeps takes (each camera's
    monitor gets a frame a sweep): as many as `MAX_POOLED_POINTS` allows over its window of
    frames, at most `MAX_FRAME_POINTS`, never fewer than `configured` (the config's
    `max_points`); unknown `sweeps`: `configured`."""
    if sweeps is None:
        return configured
    share = MAX_POOLED_POINTS // max(min(sweeps, MAX_FRAMES), 1)
    return max(configured, min(share, MAX_FRAME_POINTS))


def _verdicts(source: Path, watch: CalibrationWatch, hint: str = "") -> list[CameraVerdict]:
    verdicts = []
    for name, mon in sorted(watch.monitors().items()):
        if mon.frames == 0 and mon.skipped == 0:
            # Never given a frame: nothing was checked. A camera whose frames were all skipped
            # (no evidence in them) gets its verdict: none.
            continue
        estimate = mon.verdict()
        rig = watch.rig_of(name)
        assert rig is not None
        skipped_by = tuple(sorted(mon.skipped_by.items()))
        rigs, frames = watch.earlier_of(name)
        verdicts.append(
            CameraVerdict(name, estimate, rig, watch.view_of(name), skipped_by, rigs, frames)
        )
    if not verdicts:
        raise ReplayError(
            f"{source}: no frame to check the calibration with (no camera image the pipeline "
            f"used, or too few lidar points in it){hint}"
        )
    return verdicts
