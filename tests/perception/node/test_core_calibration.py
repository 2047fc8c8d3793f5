"""The calibration monitor in the node core: fed after the outputs are published, one sweep in
`every_n_sweeps`, its verdict on the diagnostics (and a note when drifted), its cost counted,
its failures counted and survived."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from app.models import build_pipeline, choose_camera_model
from calibration.monitor import MonitorConfig
from perception.config import CalibrationMonitorConfig, MetricsConfig, NodeConfig
from perception.msgs import wire
from perception.msgs.types import Diagnostics
from perception.node.calibration import BLIND_AFTER_FRAMES, CalibrationWatch
from perception.node.core import NodeCore
from perception.node.metrics import NodeMetrics
from perception.pipeline.pipeline import StepFrame
from replay.offline import open_source, run_core
from replay.synth.demo import write_calibration_pictures
from tests.conftest import RIG_DRIFT_YAW_DEG
from tests.scrape import scrape


def _config(every: int = 1) -> NodeConfig:
    # A 2 s drive: fits after 8 frames and every 4, so that the hysteresis can act within it.
    monitor = MonitorConfig(min_frames=8, evaluate_every=4, flag_after=2)
    base = choose_camera_model(NodeConfig(), None, config_given=False, synthetic=True)
    return replace(
        base, calibration_monitor=CalibrationMonitorConfig(every_n_sweeps=every, monitor=monitor)
    )


def _run(
    drive: Path,
    config: NodeConfig,
    watch: CalibrationWatch | None = None,
    *,
    keep_views: bool = False,
) -> tuple[NodeCore, list[Diagnostics]]:
    opened = open_source(drive, config, topics_from_drive=True)
    core = NodeCore(opened.config, build_pipeline(config), opened.default_rig)
    if watch is not None:
        core.calibration = watch
    if core.calibration is not None:
        core.calibration.keep_views = keep_views
    diagnostics: list[Diagnostics] = []
    outputs = list(run_core(core, opened.received, on_diagnostics=diagnostics.append))
    assert len(outputs) == 20
    return core, diagnostics


def test_a_drifted_camera_is_flagged_on_the_diagnostics(
    drifted_rich_drive: Path, tmp_path: Path
) -> None:
    """The drive's rig has the camera turned 0.5 degrees in yaw; its images do not."""
    core, diagnostics = _run(drifted_rich_drive, _config(), keep_views=True)
    last = diagnostics[-1]
    (status,) = last.calibration
    assert status.camera == "front" and status.state == "drifted", status
    assert status.rotation_deg[2] == pytest.approx(-RIG_DRIFT_YAW_DEG, abs=0.15)
    # An honest uncertainty: the score's own error at least, and the translation along the
    # camera's optical axis (the vehicle's x) not observed.
    assert min(status.rotation_sigma_deg) >= 0.08 and status.translation_sigma_m[0] == -1.0
    assert min(status.translation_sigma_m[1:]) >= 0.02
    assert any("calibration: camera front drifted" in note for note in last.notes)
    assert last.counters["calibration_sweeps"] == 20 and last.counters["calibration_errors"] == 0
    assert last.counters["calibration_ns"] > 0
    # CPU time on the one thread that ran it: never more than the wall time it took.
    assert 0 < last.counters["calibration_cpu_ns"] <= last.counters["calibration_ns"]
    # No flag before the hysteresis allowed one: two fits (frames 8 and 12) at the earliest.
    first = next(
        i
        for i, d in enumerate(diagnostics)
        if d.calibration and d.calibration[0].state == "drifted"
    )
    assert diagnostics[first].calibration[0].frames >= 12
    # The status travels on the wire as every diagnostics field does.
    _, decoded = wire.decode(wire.encode(last))
    assert isinstance(decoded, Diagnostics) and decoded.calibration == last.calibration
    # And a fleet's alerting sees it on the Prometheus endpoint, scraped over HTTP.
    metrics = NodeMetrics(MetricsConfig(enabled=True, port=0))
    metrics.start()
    try:
        metrics.update(last)
        got = scrape(metrics.url)
    finally:
        metrics.close()
    front = (("camera", "front"),)
    for state in ("collecting", "aligned", "drifted"):
        key = ("perception_calibration_state", (*front, ("state", state)))
        assert got[key] == (state == "drifted"), (state, got[key])
    yaw = got[("perception_calibration_correction_degrees", (("axis", "z"), *front))]
    assert yaw == pytest.approx(status.rotation_deg[2])
    along = ("perception_calibration_correction_sigma_meters", (("axis", "x"), *front))
    assert math.isnan(got[along])
    sideways = ("perception_calibration_correction_sigma_meters", (("axis", "y"), *front))
    assert got[sideways] == pytest.approx(status.translation_sigma_m[1])
    assert got[("perception_calibration_frames_total", front)] == status.frames
    assert got[("perception_calibration_skipped_frames_total", front)] == status.skipped
    assert got[("perception_calibration_information_nats", front)] == pytest.approx(status.score)
    # The demo's picture of a drifted camera: its last frame used, drawn with the rig given
    # above and corrected below; none for an aligned camera, and none left from before.
    assert core.calibration is not None
    view = core.calibration.view_of("front")
    assert view is not None and view.image.shape == (375, 1242, 3)
    # The pipeline's ground plane came with every frame: its points were counted apart.
    monitor = core.calibration.monitors()["front"]
    bins = monitor.config.bins
    assert all(0 < np.mean(f.level >= bins) < 1 for f, _ in monitor._window)
    (path,) = write_calibration_pictures(core.calibration, last.calibration, tmp_path)
    assert path == tmp_path / "calibration-front.png"
    picture = cv2.imread(str(path))
    assert picture is not None and picture.shape == (750, 1242, 3)
    assert not np.array_equal(picture[:375], picture[375:])
    aligned = (replace(status, state="aligned"),)
    assert write_calibration_pictures(core.calibration, aligned, tmp_path) == ()
    assert not path.exists()


def test_the_true_rig_raises_no_flag_and_the_rate_is_kept(rich_drive: Path) -> None:
    core, diagnostics = _run(rich_drive, _config(every=2))
    # The live node holds no frame past its processing (it may be shared memory).
    assert core.calibration is not None and core.calibration.view_of("front") is None
    assert all(s.state != "drifted" for d in diagnostics for s in d.calibration)
    assert diagnostics[-1].calibration[0].state == "aligned"
    assert diagnostics[-1].counters["calibration_sweeps"] == 10  # one sweep in two of 20
    assert not any("calibration" in note for note in diagnostics[-1].notes)


class _Broken(CalibrationWatch):
    def observe(self, frame: StepFrame) -> None:
        raise RuntimeError("monitor bug")


def test_a_lidar_without_intensity_is_noted_as_not_checked(
    rich_drive: Path, tmp_path: Path
) -> None:
    """The drive's sweeps with their intensity zeroed (a lidar or driver that reports none):
    every frame is skipped, the state stays collecting, and once 10 frames in a row held no
    evidence the diagnostics say the camera is not being checked, and why."""
    from perception.msgs.types import LidarSweep
    from replay.drive import RIG_TOPIC, DriveReader, DriveWriter

    path = tmp_path / "no_intensity.mcap"
    reader = DriveReader(rich_drive)
    with DriveWriter(path, rig=None) as writer:
        for rec in reader.messages():
            msg = rec.message
            if rec.topic == RIG_TOPIC:
                assert reader.rig is not None
                writer.write_rig(reader.rig, msg.header.stamp_ns)
                continue
            if isinstance(msg, LidarSweep):
                points = np.array(msg.points, copy=True)
                points[:, 3] = 0.0
                msg = replace(msg, points=points)
            writer.write(msg, rec.log_time_ns, rec.topic)
    _, diagnostics = _run(path, _config())
    (status,) = diagnostics[-1].calibration
    assert status.state == "collecting" and (status.frames, status.skipped) == (0, 20)
    blind = [n for d in diagnostics for n in d.notes if "not checked" in n]
    assert blind[-1] == (
        "calibration: camera front not checked: its last 20 frames held no evidence "
        "(20 no contrast in the lidar's intensity)"
    )
    for d in diagnostics:  # noted exactly once 10 frames in a row held nothing
        skipped = d.calibration[0].skipped if d.calibration else 0
        assert any("not checked" in n for n in d.notes) == (skipped >= BLIND_AFTER_FRAMES)


def test_a_road_with_nothing_beside_it_is_noted_as_not_checked(
    synth_drive: Callable[[int, float], Path],
) -> None:
    """The simple world: frames are used (they have points, contrast, motion), but together
    hold too little above the ground to check a rig; the state stays collecting, and the
    diagnostics say the camera is not being checked, and why."""
    _, diagnostics = _run(synth_drive(2, 2.0), _config())
    (status,) = diagnostics[-1].calibration
    assert status.state == "collecting" and status.frames == 20
    (note,) = [n for n in diagnostics[-1].notes if "not checked" in n]
    assert note.startswith("calibration: camera front not checked: ")
    assert note.endswith(
        "of the points in view stand above the ground (needed: 5%): the road and what moves "
        "on it cannot check a rig"
    )


def test_a_failing_monitor_is_counted_and_the_node_goes_on(rich_drive: Path) -> None:
    config = _config()
    core, diagnostics = _run(rich_drive, config, _Broken(config.calibration_monitor))
    assert core.counters.calibration_errors == 20 and core.counters.calibration_sweeps == 0
    assert diagnostics[-1].calibration == ()


def test_the_monitor_can_be_turned_off() -> None:

    config = replace(_config(), calibration_monitor=CalibrationMonitorConfig(enabled=False))
    core = NodeCore(config, build_pipeline(config))
    assert core.calibration is None
    core.after_publish()  # nothing to do, nothing fails
    assert core.diagnostics(0).calibration == ()
