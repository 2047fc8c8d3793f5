"""The node and the player as separate processes over real ZeroMQ sockets, on real KITTI frames."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from calibration.kitti import kitti_label_to_velo
from perception.config import load_config
from perception.io.transport import Subscriber
from perception.msgs.types import DetectionList, TrackList
from perception.pipeline import Pipeline
from perception.pipeline.timing import STAGES
from replay.datasets.kitti_object import KittiObjectFolder
from replay.offline import run_messages
from tests.integration.node_harness import (
    collect_outputs,
    node_config,
    running_node,
    start_player,
)

pytestmark = pytest.mark.slow

N_FRAMES = 8


def _pedestrian_label_velo(kitti_dir: Path) -> np.ndarray:
    # label_2/000000.txt: Pedestrian ... h=1.89 w=0.48 l=1.20 x=1.84 y=1.47 z=8.41 (bottom centre)
    fields = (kitti_dir / "label_2" / "000000.txt").read_text().split()
    assert fields[0] == "Pedestrian"
    x, y, z = (float(v) for v in fields[11:14])
    return kitti_label_to_velo(kitti_dir / "calib" / "000000.txt", [x, y, z])


@pytest.fixture(scope="module")
def live_run(tmp_path_factory: pytest.TempPathFactory, kitti_dir: Path, yolox_path: Path):
    tmp = tmp_path_factory.mktemp("live")
    config, sensors, detections = node_config(tmp, yolox_path)
    with (
        running_node(config) as node,
        Subscriber([detections], ["detections", "tracks"]) as sub,
    ):
        player = start_player(kitti_dir, sensors, rate_hz=5.0)
        received, tracks = collect_outputs(sub, N_FRAMES, timeout_s=60.0)
        player_out, _ = player.communicate(timeout=30)
        assert player.returncode == 0, player_out
    assert node.proc.returncode == 0, "".join(node.output)
    return received, "".join(node.output), config, tracks


def test_one_detection_list_per_sweep(live_run) -> None:
    received, log, _, _ = live_run
    assert len(received) == N_FRAMES, log
    assert [d.header.seq for d in received] == list(range(N_FRAMES))
    stamps = [d.header.stamp_ns for d in received]
    assert all(b > a for a, b in itertools.pairwise(stamps))
    for dl in received:
        assert set(dl.timings_ns) == set(STAGES)
        assert dl.latency_ns > 0
        assert dl.degraded == ()
    assert "stopped" in log


def test_one_track_list_per_detection_list(live_run) -> None:
    """Each sweep's tracks go out on `tracks` after its detections. KITTI object frames come
    without GNSS: tracks live in the vehicle frame. (The frames are unrelated scenes; a parked
    car at the same place in three of five may still make a track.)"""
    received, log, _, tracks = live_run
    assert len(tracks) == N_FRAMES, log
    for dl, tl in zip(received, tracks, strict=True):
        assert isinstance(tl, TrackList) and tl.header.stream == "tracks"
        assert (tl.header.seq, tl.header.stamp_ns) == (dl.header.seq, dl.header.stamp_ns)
        assert tl.world_frame == "vehicle"
        # Tracked after the detections went out: their timings and its own.
        assert tl.timings_ns == {**dl.timings_ns, "tracking": tl.timings_ns["tracking"]}
        assert all(t.hits >= 3 for t in tl.tracks)


def test_labelled_pedestrian_detected_live(live_run, kitti_dir: Path) -> None:
    received = live_run[0]
    label = _pedestrian_label_velo(kitti_dir)
    peds = [d for d in received[0].detections if d.label == "Pedestrian"]
    assert peds, received[0].detections
    dist = min(float(np.hypot(d.center[0] - label[0], d.center[1] - label[1])) for d in peds)
    assert dist < 1.0


def _key(dl: DetectionList) -> list[tuple]:
    return [(d.label, d.score, *d.center, *d.size, d.yaw) for d in dl.detections]


def test_replay_gives_the_live_detections(live_run, kitti_dir: Path, yolox_path: Path) -> None:
    received = live_run[0]
    config = load_config(live_run[2])
    pipeline = Pipeline.from_config(config.camera_model)
    folder = KittiObjectFolder(kitti_dir)
    offline = list(run_messages(folder.messages(), pipeline))
    assert len(offline) == len(received)
    for live, replayed in zip(received, offline, strict=True):
        a, b = _key(live), _key(replayed)
        assert [x[0] for x in a] == [x[0] for x in b]
        np.testing.assert_allclose(
            np.array([x[1:] for x in a], dtype=float).reshape(-1, 8),
            np.array([x[1:] for x in b], dtype=float).reshape(-1, 8),
            atol=1e-4,
        )
