"""The calibration check over many frames (replay.calibration_check): a rich synthetic drive
with its exact calibration and with drifts, the KITTI frames with 1-degree rotations, and the
drive rendered with an error in its rig."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from app.models import build_pipeline, choose_camera_model
from calibration.monitor import Correction, MonitorState
from perception.config import NodeConfig
from replay.calibration_check import (
    MAX_FRAME_POINTS,
    MAX_FRAMES,
    check_calibration,
    check_calibrations,
    frame_points,
)
from replay.drive import DriveReader
from replay.synth.world import generate_drive, synth_rig


@pytest.fixture(scope="module")
def synthetic_config() -> NodeConfig:
    return choose_camera_model(NodeConfig(), None, config_given=False, synthetic=True)


def test_a_drive_with_its_true_rig_is_aligned_and_drifts_are_flagged(
    rich_drive: Path, synthetic_config: NodeConfig
) -> None:
    """2 s of the rich world (20 frames): the truth is aligned; 0.5 degrees of yaw and 5 cm
    sideways are flagged, each with a correction close to the drift undone."""
    yaw = Correction((0.0, 0.0, -0.5))
    sideways = Correction(translation_m=(0.0, 0.05, 0.0))
    results = check_calibrations(
        rich_drive,
        synthetic_config,
        build_pipeline(synthetic_config),
        [None, yaw, sideways],
        topics_from_drive=True,
    )
    (truth,), (turned,), (shifted,) = results
    assert truth.camera == "front" and truth.estimate.frames == 20
    assert truth.estimate.state == MonitorState.ALIGNED, truth.estimate
    assert max(abs(v) for v in truth.estimate.correction.rotation_deg) < 0.15
    assert turned.estimate.state == MonitorState.DRIFTED
    assert turned.estimate.correction.rotation_deg[2] == pytest.approx(0.5, abs=0.15)
    assert shifted.estimate.state == MonitorState.DRIFTED
    assert shifted.estimate.correction.translation_m[1] == pytest.approx(-0.05, abs=0.02)
    # How far each correction moves the projection: 0.5 degrees of yaw is 6 px at f = 721 px.
    limit = synthetic_config.calibration_monitor.monitor.flag_pixels
    assert truth.estimate.image_motion_px < limit < shifted.estimate.image_motion_px
    assert turned.estimate.image_motion_px == pytest.approx(6.3, abs=1.5)
    assert 0 < turned.estimate.image_motion_sigma_px < limit / 2
    # The verdict's rig is the one checked (the drifted one), so that correcting it refines it.
    drifted = turned.rig.transform("vehicle", "camera/front")
    assert not drifted.almost_equal(synth_rig().transform("vehicle", "camera/front"), 1e-6)
    # The picture of a check: the last frame used, its points drawn with the extrinsic
    # checked (above) and corrected (below). The drift undone exactly draws the truth's
    # picture; the estimated correction draws closer to it than the drifted rig.
    assert truth.view is not None and turned.view is not None
    assert turned.view.image is truth.view.image  # the same frame, checked three ways
    h = truth.view.image.shape[0]
    seen = truth.view.draw("truth")
    assert seen.shape == truth.view.image.shape

    def differing(a: np.ndarray, b: np.ndarray) -> float:
        # Below the titles' box: the share of pixels whose dots differ.
        return float(np.mean(np.any(a[40:] != b[40:], axis=-1)))

    undone = turned.view.draw("drifted", yaw.inverse(), "undone")
    assert undone.shape == (2 * h, *seen.shape[1:])
    assert differing(undone[h:], seen) < 0.001
    estimated = turned.view.draw("drifted", turned.estimate.correction, "corrected")
    # (Dots 2 px wide: the estimate's 0.1 degree or so still moves most of them a pixel.)
    assert differing(estimated[h:], seen) < differing(estimated[:h], seen)


def test_kitti_frames_flag_every_1_degree_rotation_and_not_the_truth(
    kitti_dir: Path, yolox_path: Path
) -> None:
    config = replace(
        NodeConfig(), camera_model=replace(NodeConfig().camera_model, path=str(yolox_path))
    )
    rotations = []
    for axis in range(3):
        for sign in (1.0, -1.0):
            rot = [0.0, 0.0, 0.0]
            rot[axis] = sign
            rotations.append(Correction((rot[0], rot[1], rot[2])))
    results = check_calibrations(kitti_dir, config, build_pipeline(config), [None, *rotations])
    states = [verdicts[0].estimate.state for verdicts in results]
    assert states == [MonitorState.ALIGNED] + [MonitorState.DRIFTED] * 6, states
    assert results[0][0].estimate.frames == 8
    # And each correction undoes at least half of its rotation, the right way (eight frames
    # pin it no better: benchmarks/RESULTS.md).
    for rotation, verdicts in zip(rotations, results[1:], strict=True):
        estimated = np.array(verdicts[0].estimate.correction.rotation_deg)
        axis = int(np.flatnonzero(rotation.rotation_deg)[0])
        assert -estimated[axis] * rotation.rotation_deg[axis] >= 0.5, (rotation, estimated)


@pytest.mark.parametrize(
    ("configured", "sweeps", "expected"),
    [
        (3000, 8, MAX_FRAME_POINTS),  # KITTI's eight frames: as many as a frame may take
        (3000, 300, 6000),  # the pooled bound shared out
        (3000, MAX_FRAMES, 3000),  # as long as the window: the live node's
        (3000, 10**6, 3000),  # longer: the window holds its newest frames
        (20_000, 8, 20_000),  # the config's own, where more
        (3000, 0, MAX_FRAME_POINTS),
        (3000, None, 3000),  # a length unknown
    ],
)
def test_a_short_source_is_checked_on_more_points_a_frame(
    configured: int, sweeps: int | None, expected: int
) -> None:
    """Offline no CPU budget binds the monitor: a source of few sweeps is checked on more
    points a frame (KITTI's verdicts turned on which 3,000 points were sampled), within a
    bound on the points pooled over the whole window."""
    assert frame_points(configured, sweeps) == expected


def test_a_drive_rendered_with_a_rig_error_carries_the_moved_rig(tmp_path: Path) -> None:
    error = Correction((0.0, 0.5, 0.0), (0.0, 0.0, 0.05))
    generate_drive(tmp_path / "a.mcap", seed=3, seconds=0.1, rig_error=error)
    generate_drive(tmp_path / "b.mcap", seed=3, seconds=0.1)
    given = DriveReader(tmp_path / "a.mcap").rig
    true = DriveReader(tmp_path / "b.mcap").rig
    assert given is not None and true is not None
    from calibration.monitor import corrected_rig

    expected = corrected_rig(true, "front", error).transform("vehicle", "camera/front")
    assert given.transform("vehicle", "camera/front").almost_equal(expected, atol=1e-9)
    # Only the rig differs: the images are rendered with the true one.
    a = [m.message for m in DriveReader(tmp_path / "a.mcap").messages() if m.topic != "rig"]
    b = [m.message for m in DriveReader(tmp_path / "b.mcap").messages() if m.topic != "rig"]
    assert len(a) == len(b)


def rewritten(
    drive: Path, out: Path, *, rig_from_sweep: int | None = None, one_lidar_stamp: bool = False
) -> Path:
    """`drive` written again to `out`: with its camera's rig turned 1 degree from the sweep of
    seq `rig_from_sweep` on (a rig message before it), or with every lidar sweep stamped as
    the first."""
    from calibration.monitor import corrected_rig
    from replay.drive import DriveWriter

    reader = DriveReader(drive)
    rig = reader.rig
    assert rig is not None
    records = [r for r in reader.messages() if r.topic != "rig"]
    first = next(r.message.header.stamp_ns for r in records if r.topic == "lidar")
    with DriveWriter(out, rig=rig) as writer:
        for rec in records:
            msg = rec.message
            if rec.topic == "lidar" and msg.header.seq == rig_from_sweep:
                turned = corrected_rig(rig, "front", Correction((0.0, 0.0, 1.0)))
                writer.write_rig(turned, msg.header.stamp_ns)
            if rec.topic == "lidar" and one_lidar_stamp:
                msg = replace(msg, header=replace(msg.header, stamp_ns=first))
            writer.write(msg, rec.log_time_ns, rec.topic)
    return out


def test_a_verdict_over_a_drive_whose_rig_changed_says_what_it_left_out(
    tmp_path: Path, synth_drive, synthetic_config: NodeConfig
) -> None:
    """The monitor starts over with each rig a drive sends: the verdict is of the last one,
    over the frames from its change on, and says how many came before (it read as one over
    the whole drive)."""
    drive = rewritten(synth_drive(3, 0.6), tmp_path / "changed.mcap", rig_from_sweep=3)
    config = synthetic_config
    (verdict,) = check_calibration(drive, config, build_pipeline(config), topics_from_drive=True)
    assert (verdict.earlier_rigs, verdict.earlier_frames) == (1, 3)
    assert verdict.estimate.frames + verdict.estimate.skipped == 3
    (whole,) = check_calibration(
        synth_drive(3, 0.6), config, build_pipeline(config), topics_from_drive=True
    )
    assert (whole.earlier_rigs, whole.earlier_frames) == (0, 0)


def test_sweeps_the_node_refused_are_counted_in_the_check(
    tmp_path: Path, synth_drive, synthetic_config: NodeConfig, caplog: pytest.LogCaptureFixture
) -> None:
    """Sweeps all stamped alike: the node takes the first and refuses the rest as repeats,
    which its log does not say; the check does (it read as a verdict over the drive)."""
    drive = rewritten(synth_drive(3, 0.6), tmp_path / "alike.mcap", one_lidar_stamp=True)
    config = synthetic_config
    with caplog.at_level("WARNING", logger="replay.calibration_check"):
        (verdict,) = check_calibration(
            drive, config, build_pipeline(config), topics_from_drive=True
        )
    assert verdict.estimate.frames + verdict.estimate.skipped == 1
    assert (
        f"{drive}: the node processed 1 of its 6 sweeps (of its inputs, 5 repeated a stamp); "
        "the verdict is of those it processed"
    ) in caplog.messages
