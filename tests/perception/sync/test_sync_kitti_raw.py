"""The collector on the real timestamps of KITTI raw drive 2011_09_26_0001: 108 velodyne
sweeps, four cameras, OXTS (kitti_raw in the data corpus, README section 3).

KITTI triggers the cameras when the spinning lidar faces forward, about half a sweep after the
sweep start (the lidar stamp here), plus a fixed per-camera delay: the offsets below. Arrival
is simulated: a sweep arrives 5 ms after its end, a camera frame 30 ms after exposure, an OXTS
fix 5 ms after its stamp, in arrival order."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from calibration import Rig
from perception.msgs.types import CameraFrame, GnssFix, Header, LidarSweep
from perception.sync import Bundler, CollectorPolicy, Filed
from perception.sync.phase import CameraPhases

MS = 1_000_000
DRIVE = "kitti_raw/2011_09_26/2011_09_26_drive_0001_sync"
CAMERAS = ("image_00", "image_01", "image_02", "image_03")
OFFSETS_NS = {"image_00": 68 * MS, "image_01": 68 * MS, "image_02": 62 * MS, "image_03": 62 * MS}

TIMEOUT_NS = 100 * MS


@pytest.fixture(scope="module")
def drive(data_dir: Path) -> Path:
    path = data_dir / DRIVE
    if not path.is_dir():
        pytest.skip(f"KITTI raw timestamps not present ({path})")
    return path


def _stamps(drive: Path, name: str) -> list[int]:
    out = []
    for line in (drive / name).read_text().splitlines():
        whole, frac = line.strip().split(".")
        base = datetime.strptime(whole, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
        out.append(int(base.timestamp()) * 10**9 + int(frac.ljust(9, "0")))
    return out


def test_every_kitti_sweep_gets_four_cameras_and_a_fix(drive: Path) -> None:
    starts = _stamps(drive, "velodyne_points/timestamps_start.txt")
    ends = _stamps(drive, "velodyne_points/timestamps_end.txt")
    events: list[tuple[int, CameraFrame | LidarSweep | GnssFix]] = []
    points = np.zeros((1, 4), np.float32)
    for i, (start, end) in enumerate(zip(starts, ends, strict=True)):
        events.append((end + 5 * MS, LidarSweep(Header("velodyne", i, start, "velo"), points)))
    image = np.zeros((1, 1, 3), np.uint8)
    for cam in CAMERAS:
        for i, t in enumerate(_stamps(drive, f"{cam}/timestamps.txt")):
            events.append((t + 30 * MS, CameraFrame(Header(cam, i, t, cam), image=image)))
    for i, t in enumerate(_stamps(drive, "oxts/timestamps.txt")):
        fix = GnssFix(Header("oxts", i, t, "imu"), 49.015, 8.434, 116.4)
        events.append((t + 5 * MS, fix))
    events.sort(key=lambda e: e[0])

    policy = CollectorPolicy(
        CAMERAS, window_ns=10 * MS, timeout_ns=TIMEOUT_NS, queue_size=20, offsets_ns=OFFSETS_NS
    )
    # The bundler only passes the rig through: an empty one stands for KITTI's.
    sync = Bundler(CAMERAS, policy, gnss_window_ns=80 * MS, queue_size=20, default_rig=Rig())
    bundles = []
    for receive, msg in events:
        assert sync.add(msg, receive_ns=receive).filed is Filed.ACCEPTED
        bundles += sync.poll(receive)
    bundles += sync.flush()

    assert len(bundles) == 108
    assert [b.lidar.header.seq for b in bundles] == list(range(108))
    assert all(b.missing == () and set(b.cameras) == set(CAMERAS) for b in bundles)
    assert all(b.gnss is not None for b in bundles)
    # Cameras pair with the sweep of the same index (KITTI's own association).
    assert all(f.header.seq == b.lidar.header.seq for b in bundles for f in b.cameras.values())
    skews = {s: np.array([b.skews_ns[s] for b in bundles]) / MS for s in (*CAMERAS, "oxts")}
    report = {s: (v.min(), float(np.median(v)), v.max()) for s, v in skews.items()}
    print("\nKITTI 0001 skews vs sweep start, ms (min, median, max):")
    for s, (lo, med, hi) in report.items():
        print(f"  {s}: {lo:.2f} {med:.2f} {hi:.2f}")
    for cam in CAMERAS:
        assert np.all(np.abs(skews[cam] - OFFSETS_NS[cam] / MS) < 3.0)
    assert np.all(np.abs(skews["oxts"]) <= 80.0)
    # Complete bundles go out when the last member arrives, never at the timeout.
    assert max(b.sync_wait_ns for b in bundles) < TIMEOUT_NS
    assert sync.stats.late_messages == 0 and sync.stats.degraded_bundles == 0


def test_the_cameras_phases_name_their_offsets(drive: Path) -> None:
    """Left at the default 0, each camera's offset pairs a sweep with the frame exposed during
    the sweep before it (about 40 ms off): the note names the offsets KITTI's trigger gives,
    and with those offsets nothing is said."""
    phases = CameraPhases()
    events = [(s, "") for s in _stamps(drive, "velodyne_points/timestamps_start.txt")]
    for camera in CAMERAS:
        events += [(t, camera) for t in _stamps(drive, f"{camera}/timestamps.txt")]
    for stamp, camera in sorted(events):
        if camera:
            phases.on_frame(camera, stamp)
        else:
            phases.on_sweep(stamp)
    notes = phases.notes({}, CAMERAS)
    assert list(notes) == list(CAMERAS)
    for camera, note in notes.items():
        expected = round(OFFSETS_NS[camera] / MS)
        assert note.endswith(f"Set sync.camera_offsets_ms: {{{camera}: {expected}}}"), note
    configured = {c: offset / MS for c, offset in OFFSETS_NS.items()}
    assert phases.notes(configured, CAMERAS) == {}
