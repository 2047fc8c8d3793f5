"""The synthetic drive as a test bed (issue #7): properties real data cannot show, checked
against what the drive *knows* (its stamps, receive times and per-sweep ground truth).

- clock: a known sensor-to-host offset, drift and clock steps are put on the drive's own
  stamps/receive times; ClockMonitor must recover them (to within what its lower-envelope
  estimate can see: offset + the minimum transport delay) and flag the steps at the right message;
- sync: the node's collector, fed the drive in receive order, must give every sweep the camera
  frame rendered for it (known from the stamps), each frame once, with the GNSS fix; a wrong
  camera offset must show (degraded bundles or skews far from the configured offset);
- deskew: with the pipeline's GNSS ego poses, each object's lidar returns must land in its ground
  truth box (moved by the object's own velocity over the point's time), parked cars' returns on
  their box faces, clearly better than the raw sweep;
- latency: the drive played over real sockets into a real `perception run`, restamped to now;
  every sweep gives a DetectionList whose `latency_ns` agrees with the test's own clock.

Expectations come from the drive and its ground truth file (not from counts of the scene), so the
scene may change; the generator's seed and length are fixed.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import yaml

from calibration import Rig
from perception.config import BudgetConfig, SyncConfig
from perception.io.transport import Publisher, Subscriber
from perception.msgs import wire
from perception.msgs.types import (
    CameraFrame,
    DetectionList,
    GnssFix,
    LidarSweep,
    Message,
    RigMessage,
    SyncedBundle,
)
from perception.pipeline.deskew import deskew_sweep, ego_twist
from perception.pipeline.timing import STAGES, serial_ns, step_ns
from perception.sync import Bundler
from perception.sync.clock import ClockMonitor, Verdict
from replay.drive import DriveReader, RecordedMessage
from replay.synth.demo import SYNTH_DETECTOR_PATH
from replay.synth.world import (
    CAMERA_OFFSET_NS,
    CAMERA_STREAM,
    GNSS_STREAM,
    LIDAR_STREAM,
    GroundTruthFrame,
    ground_truth_path,
    lidar_sweep,
    make_world,
    read_ground_truth,
)
from tests.integration.node_harness import running_node

MS = 1_000_000
SEED = 7
SECONDS = 5.0


@dataclass(frozen=True)
class Drive:
    """One generated drive: its messages in receive (log time) order, rig and ground truth."""

    path: Path
    records: tuple[RecordedMessage, ...]
    rig: Rig
    frames: tuple[GroundTruthFrame, ...]
    #: The ground truth lines as written (they also hold each box's `id` and `velocity`).
    truth: tuple[dict[str, Any], ...]

    def stream(self, name: str) -> list[RecordedMessage]:
        return [r for r in self.records if r.message.header.stream == name]

    @property
    def period_ns(self) -> int:
        stamps = [f.stamp_ns for f in self.frames]
        return int(np.median(np.diff(stamps)))

    def sweep_of(self, stamp_ns: int) -> int:
        """Index of the sweep whose interval [stamp, next stamp) holds `stamp_ns` (-1: none)."""
        stamps = [f.stamp_ns for f in self.frames]
        i = int(np.searchsorted(stamps, stamp_ns, side="right")) - 1
        end = stamps[i + 1] if i + 1 < len(stamps) else stamps[-1] + self.period_ns
        return i if i >= 0 and stamp_ns < end else -1


@pytest.fixture(scope="module")
def drive(synth_drive) -> Drive:
    path = synth_drive(SEED, SECONDS)
    reader = DriveReader(path)
    assert reader.rig is not None
    with ground_truth_path(path).open(encoding="utf-8") as f:
        truth = tuple(json.loads(line) for line in f)
    frames = tuple(read_ground_truth(ground_truth_path(path)))
    assert len(frames) == len(truth) == round(SECONDS * 10)
    return Drive(path, tuple(reader.messages()), reader.rig, frames, truth)


# -- clock ----------------------------------------------------------------------------------------

#: Known sensor clocks, as host - sensor (ns): the lidar clock 37.5 ms behind the host, the
#: camera's 12 ms ahead, the GNSS receiver's on host time; and their drifts (ppm: host seconds
#: gained per sensor second, x 1e6): the lidar clock runs 50 ppm slow, the camera's 20 ppm fast.
CLOCK_OFFSETS_NS = {LIDAR_STREAM: 37_500_000, CAMERA_STREAM: -12_000_000, GNSS_STREAM: 0}
DRIFT_PPM = {LIDAR_STREAM: 50.0, CAMERA_STREAM: -20.0, GNSS_STREAM: 0.0}


@dataclass(frozen=True)
class _Sample:
    stream: str
    stamp_ns: int
    log_ns: int


def _clock_samples(drive: Drive) -> list[_Sample]:
    return [
        _Sample(r.message.header.stream, r.message.header.stamp_ns, r.log_time_ns)
        for r in drive.records
        if r.message.header.stream in CLOCK_OFFSETS_NS
    ]


def _transport_floor(samples: list[_Sample]) -> dict[str, int]:
    """The drive's minimum (receive - stamp) per stream: what a lower envelope sees besides the
    clock offset. For the lidar it includes the sweep itself (stamp = sweep start, sent when
    the sweep is complete)."""
    out: dict[str, int] = {}
    for s in samples:
        out[s.stream] = min(out.get(s.stream, 2**62), s.log_ns - s.stamp_ns)
    return out


def _receive_ns(s: _Sample, t0_ns: int, extra_ns: int) -> int:
    """Host receive time of a sample under its stream's known clock offset and drift, plus
    `extra_ns` of added transport delay."""
    drift = round(DRIFT_PPM[s.stream] * 1e-6 * (s.stamp_ns - t0_ns))
    return s.log_ns + CLOCK_OFFSETS_NS[s.stream] + drift + extra_ns


def _expected_offset_ns(stream: str, stamp_ns: int, t0_ns: int, floor: dict[str, int]) -> float:
    drift = DRIFT_PPM[stream] * 1e-6 * (stamp_ns - t0_ns)
    return CLOCK_OFFSETS_NS[stream] + drift + floor[stream]


def _spike_ns(rng: np.random.Generator) -> int:
    """Queueing bursts: 10 % of the messages 5-35 ms late (below the 50 ms jump threshold; for
    spikes just under it see test_single_latency_spike_is_not_a_clock_jump)."""
    return round(rng.uniform(5, 35) * MS) if rng.random() < 0.1 else 0


def test_clock_offset_and_drift_recovered_through_queueing_spikes(drive: Drive) -> None:
    """The drive's transport delay is constant per stream, and bursts only ever add delay, so
    the lower envelope ClockMonitor fits is exact: offset (+ the stream's minimum transport
    delay) and drift come back to within integer-ns rounding. Tolerances: 5 us, 0.5 ppm."""
    samples = _clock_samples(drive)
    floor = _transport_floor(samples)
    t0 = samples[0].stamp_ns
    rng = np.random.default_rng(1)
    mon = ClockMonitor()
    extra = [_spike_ns(rng) for _ in samples]
    extra[len(extra) // 3] = 120 * MS  # one isolated spike above the jump threshold
    verdicts = [mon.observe(s.stream, s.stamp_ns, _receive_ns(s, t0, e)) for s, e in zip(
        samples, extra, strict=True)]  # fmt: skip
    assert set(verdicts) == {Verdict.ACCEPTED}, "latency spikes must not read as clock jumps"
    states = mon.diagnostics()
    assert set(states) == set(CLOCK_OFFSETS_NS)
    for stream in CLOCK_OFFSETS_NS:
        last = max(s.stamp_ns for s in samples if s.stream == stream)
        state = states[stream]
        assert state.jumps == 0
        assert state.offset_ns is not None
        expected = _expected_offset_ns(stream, last, t0, floor)
        assert abs(state.offset_ns - expected) <= 5_000, (stream, state, expected)
        assert state.drift_ppm == pytest.approx(DRIFT_PPM[stream], abs=0.5), (stream, state)
        # A sensor stamp mapped onto the host clock: stamp + offset + minimum transport delay.
        host = mon.to_host_ns(stream, t0)
        assert host is not None
        assert abs(host - (t0 + _expected_offset_ns(stream, t0, t0, floor))) <= 5_000


def test_single_latency_spike_is_not_a_clock_jump(drive: Drive) -> None:
    """One message of the camera stream 45 ms late (under the 50 ms jump threshold), each
    position in turn, on the drive's exact transport: never a clock jump."""
    samples = [s for s in _clock_samples(drive) if s.stream == CAMERA_STREAM]
    t0 = samples[0].stamp_ns
    false_jumps = []
    for k in range(len(samples)):
        mon = ClockMonitor()
        for i, s in enumerate(samples):
            late = 45 * MS if i == k else 0
            if mon.observe(s.stream, s.stamp_ns, _receive_ns(s, t0, late)) is not Verdict.ACCEPTED:
                false_jumps.append((k, i))
    assert false_jumps == []


@pytest.mark.parametrize("seed", range(4))
def test_clock_offset_bias_under_dense_transport_jitter(drive: Drive, seed: int) -> None:
    """Every message also gets an exponential delay (mean 0.5 ms) on top of the drive's. The
    envelope is then the minimum of each chunk of the window, never below the floor and on
    average ~mean / chunk size above it, and the fitted line is extrapolated to the newest
    stamp. Stated tolerance: offset within [-0.1, +0.5] ms (one mean jitter) of offset +
    minimum transport delay (measured over 20 seeds: +9 to +364 us). Drift is *not* asserted
    here: ~50 samples over 5 s cannot pin tens of ppm (50 ppm = 250 us over the drive) under
    0.5 ms jitter (measured over 20 seeds: errors of -31 to +72 ppm)."""
    mean_ms = 0.5
    samples = _clock_samples(drive)
    floor = _transport_floor(samples)
    t0 = samples[0].stamp_ns
    rng = np.random.default_rng(seed)
    mon = ClockMonitor()
    for s in samples:
        extra = round(rng.exponential(mean_ms * MS)) + _spike_ns(rng)
        assert mon.observe(s.stream, s.stamp_ns, _receive_ns(s, t0, extra)) is Verdict.ACCEPTED
    for stream, state in mon.diagnostics().items():
        last = max(s.stamp_ns for s in samples if s.stream == stream)
        assert state.offset_ns is not None
        error = state.offset_ns - _expected_offset_ns(stream, last, t0, floor)
        assert -0.1 * MS <= error <= mean_ms * MS, (stream, error)


def test_clock_steps_flagged_at_the_right_message(drive: Drive) -> None:
    """Mid-drive the lidar clock steps 1 s forward (its messages would arrive before they were
    sent: rejected as implausible until `confirm` = 3 agree, flagged at the third) and the
    camera clock 200 ms back (delivered as late, its stamps stepped: flagged at the third that
    agrees). After the step each estimate follows the new clock (exact, as above); GNSS sees no
    jump."""
    samples = _clock_samples(drive)
    floor = _transport_floor(samples)
    t0 = samples[0].stamp_ns
    lidar_idx = [i for i, s in enumerate(samples) if s.stream == LIDAR_STREAM]
    camera_idx = [i for i, s in enumerate(samples) if s.stream == CAMERA_STREAM]
    lidar_step_at = lidar_idx[len(lidar_idx) // 2]
    camera_step_at = camera_idx[len(camera_idx) // 3]
    steps = {LIDAR_STREAM: (lidar_step_at, 1_000 * MS), CAMERA_STREAM: (camera_step_at, -200 * MS)}
    mon = ClockMonitor()
    flagged: list[int] = []
    rejected: list[int] = []
    for i, s in enumerate(samples):
        stamp = s.stamp_ns
        at, step = steps.get(s.stream, (len(samples), 0))
        if i >= at:
            stamp += step  # the sensor clock now reads `step` more
        receive = _receive_ns(s, t0, 0)
        verdict = mon.observe(s.stream, stamp, receive)
        if verdict is Verdict.JUMPED:
            flagged.append(i)
        elif verdict is Verdict.REJECTED:
            rejected.append(i)
    confirm = 3  # ClockEstimator's default
    camera_flag = camera_idx[camera_idx.index(camera_step_at) + confirm - 1]
    lidar_flag = lidar_idx[lidar_idx.index(lidar_step_at) + confirm - 1]
    assert flagged == sorted([lidar_flag, camera_flag])
    assert rejected == lidar_idx[lidar_idx.index(lidar_step_at) :][: confirm - 1]
    states = mon.diagnostics()
    assert states[LIDAR_STREAM].jumps == 1 and states[CAMERA_STREAM].jumps == 1
    assert states[GNSS_STREAM].jumps == 0
    assert states[LIDAR_STREAM].last_jump_stamp_ns == samples[lidar_flag].stamp_ns + 1_000 * MS
    assert states[CAMERA_STREAM].last_jump_stamp_ns == samples[camera_flag].stamp_ns - 200 * MS
    for stream, (_, step) in steps.items():
        last = max(s.stamp_ns for s in samples if s.stream == stream)
        state = states[stream]
        assert state.offset_ns is not None
        expected = _expected_offset_ns(stream, last, t0, floor) - step
        assert abs(state.offset_ns - expected) <= 5_000, (stream, state, expected)


# -- sync -----------------------------------------------------------------------------------------


def _sync_run(
    drive: Drive, config: SyncConfig, camera_delay_ns: int = 0
) -> tuple[list[tuple[SyncedBundle, int]], Bundler]:
    """The drive through `Bundler.from_config` in receive order (the camera's transport
    delayed by `camera_delay_ns`), polled at every arrival as the node does, flushed at the end.
    Returns each bundle with the host time it came out, and the bundler."""
    sync = Bundler.from_config((CAMERA_STREAM,), config, default_rig=drive.rig)
    arrivals = sorted(
        (r.log_time_ns + (camera_delay_ns if r.topic == CAMERA_STREAM else 0), i, r.message)
        for i, r in enumerate(drive.records)
    )
    out: list[tuple[SyncedBundle, int]] = []
    sweep_receive_ns: dict[int, int] = {}
    for receive_ns, _, msg in arrivals:
        if isinstance(msg, LidarSweep):
            sweep_receive_ns[msg.header.stamp_ns] = receive_ns
        sync.add(msg, receive_ns)
        out += [(b, receive_ns) for b in sync.poll(receive_ns)]
    # What the input left pending comes out at its deadline (its sweep's receive + the wait).
    out += [(b, sweep_receive_ns[b.lidar.header.stamp_ns] + b.sync_wait_ns) for b in sync.flush()]
    return out, sync


def _rendered_frames(drive: Drive) -> dict[int, CameraFrame]:
    """Sweep index -> the camera frame rendered during that sweep (its stamp in the sweep's
    interval), from the stamps alone."""
    out: dict[int, CameraFrame] = {}
    for r in drive.stream(CAMERA_STREAM):
        assert isinstance(r.message, CameraFrame)
        i = drive.sweep_of(r.message.header.stamp_ns)
        assert i >= 0 and i not in out, "one frame rendered per sweep"
        out[i] = r.message
    assert sorted(out) == list(range(len(drive.frames)))
    return out


def _camera_jitter_ns(drive: Drive) -> int:
    """Largest deviation of a rendered frame's stamp from the nominal camera offset."""
    return max(
        abs(f.header.stamp_ns - drive.frames[i].stamp_ns - CAMERA_OFFSET_NS)
        for i, f in _rendered_frames(drive).items()
    )


def _offset_config(offset_ns: int, **kw: Any) -> SyncConfig:
    return SyncConfig(camera_offsets_ms={CAMERA_STREAM: offset_ns / MS}, **kw)


@pytest.mark.parametrize("camera_delay_ms", [0, 80])
def test_every_sweep_gets_the_frame_rendered_for_it(drive: Drive, camera_delay_ms: int) -> None:
    """Camera offset configured as the synthetic camera's. With the drive's own transport the
    frame is in before its sweep; delayed 80 ms it comes after, and the bundle waits for it."""
    delay = camera_delay_ms * MS
    bundles, sync = _sync_run(drive, _offset_config(CAMERA_OFFSET_NS), delay)
    rendered = _rendered_frames(drive)
    fixes = [r.message for r in drive.stream(GNSS_STREAM)]
    receive = {
        (r.message.header.stream, r.message.header.stamp_ns): r.log_time_ns
        + (delay if r.topic == CAMERA_STREAM else 0)
        for r in drive.records
    }
    assert [b.lidar.header.stamp_ns for b, _ in bundles] == [f.stamp_ns for f in drive.frames]
    used: set[int] = set()
    for i, (bundle, emitted_ns) in enumerate(bundles):
        stamp = bundle.lidar.header.stamp_ns
        assert bundle.missing == ()
        frame = bundle.cameras[CAMERA_STREAM]
        assert frame.header.stamp_ns == rendered[i].header.stamp_ns, f"sweep {i}"
        assert frame.header.stamp_ns not in used
        used.add(frame.header.stamp_ns)
        assert bundle.skews_ns[CAMERA_STREAM] == frame.header.stamp_ns - stamp
        # Out the moment its last member arrived.
        last_member = max(
            receive[(LIDAR_STREAM, stamp)], receive[(CAMERA_STREAM, frame.header.stamp_ns)]
        )
        assert emitted_ns == last_member
        assert bundle.sync_wait_ns == emitted_ns - receive[(LIDAR_STREAM, stamp)]
        # GNSS: the fix nearest the sweep stamp among all the drive's fixes, and ego poses.
        nearest = min(fixes, key=lambda f: abs(f.header.stamp_ns - stamp))
        assert bundle.gnss is not None
        assert bundle.gnss.header.stamp_ns == nearest.header.stamp_ns
        assert bundle.skews_ns[GNSS_STREAM] == nearest.header.stamp_ns - stamp
        assert bundle.ego_pose is not None and bundle.ego_pose_end is not None
        assert bundle.ego_pose.stamp_ns == stamp
    assert sync.stats.degraded_bundles == 0 and sync.stats.late_messages == 0
    assert sync.stats.bundles == len(drive.frames)


@pytest.mark.parametrize("error_sign", [-1, 1])
def test_wrong_camera_offset_shows_in_the_bundles(drive: Drive, error_sign: int) -> None:
    """Camera offset configured half a lidar period off. With the default 50 ms window some
    sweeps get the wrong frame or none; every such bundle is marked (camera missing, counted as
    degraded) or carries a camera skew far (> 10x the camera's stamp jitter) from the configured
    offset. With a window that fits the jitter (5x) no wrong frame is ever paired: every bundle
    is degraded."""
    wrong = CAMERA_OFFSET_NS + error_sign * drive.period_ns // 2
    rendered = _rendered_frames(drive)
    jitter = _camera_jitter_ns(drive)
    bundles, sync = _sync_run(drive, _offset_config(wrong))
    assert len(bundles) == len(drive.frames)
    right = missing = 0
    for i, (bundle, _) in enumerate(bundles):
        frame = bundle.cameras.get(CAMERA_STREAM)
        if frame is None:
            missing += 1
            assert bundle.missing == (CAMERA_STREAM,)
            continue
        right += frame.header.stamp_ns == rendered[i].header.stamp_ns
        assert abs(bundle.skews_ns[CAMERA_STREAM] - wrong) > 10 * jitter, f"sweep {i}"
    assert right < len(bundles), "the test bed must be sensitive to the camera offset"
    assert sync.stats.degraded_bundles == missing
    assert sync.stats.per_stream_missing.get(CAMERA_STREAM, 0) == missing

    window_ms = max(5 * jitter, MS) / MS
    config = _offset_config(wrong, camera_windows_ms={CAMERA_STREAM: window_ms})
    bundles, sync = _sync_run(drive, config)
    assert len(bundles) == len(drive.frames)
    assert all(b.missing == (CAMERA_STREAM,) and not b.cameras for b, _ in bundles)
    assert sync.stats.degraded_bundles == len(drive.frames)
    # ... while the right offset with that window pairs every frame.
    bundles, sync = _sync_run(
        drive, _offset_config(CAMERA_OFFSET_NS, camera_windows_ms={CAMERA_STREAM: window_ms})
    )
    assert sync.stats.degraded_bundles == 0
    assert [b.cameras[CAMERA_STREAM].header.stamp_ns for b, _ in bundles] == [
        rendered[i].header.stamp_ns for i in range(len(bundles))
    ]


def test_approximate_time_pairs_the_rendered_frame(drive: Drive) -> None:
    config = _offset_config(CAMERA_OFFSET_NS, policy="approximate_time")
    bundles, _ = _sync_run(drive, config)
    rendered = _rendered_frames(drive)
    assert len(bundles) >= len(drive.frames) - 1
    for bundle, _ in bundles:
        i = drive.sweep_of(bundle.lidar.header.stamp_ns)
        frame = bundle.cameras[CAMERA_STREAM]
        assert frame.header.stamp_ns == rendered[i].header.stamp_ns, f"sweep {i}"


# -- deskew ---------------------------------------------------------------------------------------

#: Box inflation (m): 5 sigma of the synthetic lidar's 2 cm range noise.
MARGIN_M = 0.1
MIN_POINTS = 30
PARKED_MPS = 0.05


def _point_objects(sweep: LidarSweep, ref: tuple[npt.NDArray[Any], ...]) -> npt.NDArray[np.int64]:
    """The object each return of `sweep` hit (-1 ground, -2 unknown), by matching it to the
    same ray (column time, beam elevation) of a re-cast of the sweep (`lidar_sweep`: same
    world and time, other noise), whose rays know their object."""
    ref_points, ref_offsets, ref_ident = ref

    def key(points: npt.NDArray[Any], offsets: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
        p = points[:, :3].astype(np.float64)
        # Offsets are ~1e5 ns apart per column, elevations within +-0.5 rad: a unique key.
        return offsets.astype(np.float64) + np.arctan2(p[:, 2], np.hypot(p[:, 0], p[:, 1]))

    rk = key(ref_points, ref_offsets)
    order = np.argsort(rk)
    rk = rk[order]
    assert sweep.point_time_offsets_ns is not None
    k = key(sweep.points, sweep.point_time_offsets_ns)
    i = np.clip(np.searchsorted(rk, k), 1, len(rk) - 1)
    j = np.where(np.abs(rk[i - 1] - k) < np.abs(rk[i] - k), i - 1, i)
    # Beams are ~7e-3 rad apart: a match within 2e-3 rad is the same ray.
    same = np.abs(rk[j] - k) < 2e-3
    return np.where(same, ref_ident[order][j], -2).astype(np.int64)


def _box_frame(points: npt.NDArray[np.float64], box: dict[str, Any]) -> npt.NDArray[np.float64]:
    c, s = math.cos(box["yaw"]), math.sin(box["yaw"])
    d = points - np.asarray(box["center"], dtype=np.float64)
    return np.stack([c * d[:, 0] + s * d[:, 1], -s * d[:, 0] + c * d[:, 1], d[:, 2]], axis=1)


@dataclass
class _ObjectFit:
    seq: int
    ident: int
    label: str
    speed_mps: float
    points: int
    mean_offset_ms: float
    #: How far a return would be off were the ego's yaw rate over the sweep held at that of the
    #: end pose: |yaw-rate error| x sweep duration x (box centre distance + half-diagonal), m.
    yaw_error_m: float
    #: per variant ("raw", "deskewed"): fraction inside the inflated box, and the signed
    #: distance of each return to the box surface (> 0 outside).
    inside: dict[str, float]
    surface: dict[str, npt.NDArray[np.float64]]


@pytest.fixture(scope="module")
def object_fits(drive: Drive) -> list[_ObjectFit]:
    """Per object and checked sweep (every 5th): where its returns fall relative to its ground
    truth box, raw and deskewed as the pipeline does (the bundle's GNSS ego poses)."""
    bundles = [b for b, _ in _sync_run(drive, _offset_config(CAMERA_OFFSET_NS))[0]]
    world = make_world(np.random.Generator(np.random.PCG64(SEED)), SECONDS)
    t_start = drive.frames[0].stamp_ns
    fits: list[_ObjectFit] = []
    for bundle in bundles[::5]:
        sweep = bundle.lidar
        seq = drive.sweep_of(sweep.header.stamp_ns)
        truth = drive.truth[seq]
        assert truth["stamp_ns"] == sweep.header.stamp_ns
        t0 = (sweep.header.stamp_ns - t_start) * 1e-9
        # The re-created world must be the drive's: its boxes are the ground truth's.
        world_boxes = {b["id"]: b for b in world.boxes_in_vehicle(t0)}
        for box in truth["boxes"]:
            assert box["id"] in world_boxes, "make_world(seed) no longer gives the drive's world"
            np.testing.assert_allclose(world_boxes[box["id"]]["center"], box["center"], atol=1e-3)
        ident = _point_objects(sweep, lidar_sweep(world, t0, np.random.default_rng(0)))
        vehicle_from_lidar = bundle.rig.transform("vehicle", sweep.header.frame_id).matrix
        deskewed, done = deskew_sweep(
            sweep, bundle.ego_pose, bundle.ego_pose_end, vehicle_from_lidar
        )
        assert done
        raw, _ = deskew_sweep(sweep, None, None, vehicle_from_lidar)
        assert sweep.point_time_offsets_ns is not None
        dt = sweep.point_time_offsets_ns.astype(np.float64) * 1e-9
        # The true yaw rate over the sweep vs the one the pipeline deskews with.
        twist = ego_twist(bundle.ego_pose, bundle.ego_pose_end)
        assert twist is not None
        _, _, yaw = world.ego_pose(np.array([t0, t0 + dt.max()]))
        yaw_rate_error = abs(twist[1] - float(yaw[1] - yaw[0]) / dt.max())
        for box, count in zip(truth["boxes"], drive.frames[seq].lidar_points, strict=True):
            sel = ident == box["id"]
            n = int(sel.sum())
            if n < MIN_POINTS:
                continue
            # Our association finds every return the ground truth counts, but for the few
            # rays the re-cast dropped out (3 %, binomial).
            assert count - 0.1 * count - 5 <= n <= count, (seq, box["id"], n, count)
            half = np.asarray(box["size"], dtype=np.float64) / 2.0
            # Deskew removes the ego motion only: each return is compared with the box where
            # the object was at the return's time (its own velocity, vehicle axes).
            velocity = np.array([*box["velocity"], 0.0])
            reach = math.hypot(*box["center"][:2]) + math.hypot(*box["size"][:2]) / 2
            fit = _ObjectFit(seq, box["id"], box["label"], float(np.hypot(*box["velocity"])), n,
                             float(dt[sel].mean() * 1e3), yaw_rate_error * dt.max() * reach,
                             {}, {})  # fmt: skip
            for name, pts in (("raw", raw), ("deskewed", deskewed)):
                p = pts[sel, :3].astype(np.float64) - velocity * dt[sel, None]
                local = _box_frame(p, box)
                outside = np.abs(local) - half
                fit.inside[name] = float(np.all(outside <= MARGIN_M, axis=1).mean())
                fit.surface[name] = outside.max(axis=1)
            fits.append(fit)
    return fits


def _protrusion(fits: list[_ObjectFit], name: str) -> float:
    """95th percentile of how far the returns stick out of their boxes (m; 0 inside)."""
    surface = np.concatenate([f.surface[name] for f in fits])
    return float(np.percentile(np.maximum(surface, 0.0), 95))


def test_deskew_puts_each_objects_returns_in_its_box(object_fits: list[_ObjectFit]) -> None:
    """Every object with enough returns: >= 95 % of its deskewed returns inside its ground
    truth box (inflated by MARGIN_M, moved by its own velocity over the return's time). For the
    objects seen in the second half of the sweep (the ego has moved 0.3-0.6 m by then) the raw
    sweep misses the box with >= 5 % of their returns and sticks out of it by >= 15 cm (95th
    percentile), >= 4x more than deskewed."""
    assert len(object_fits) >= 10
    for fit in object_fits:
        assert fit.inside["deskewed"] >= 0.95, fit
    late = [f for f in object_fits if f.mean_offset_ms >= 50.0]
    assert len(late) >= 3
    total = sum(f.points for f in late)
    pooled = {
        name: sum(f.inside[name] * f.points for f in late) / total for name in ("raw", "deskewed")
    }
    assert pooled["deskewed"] >= 0.99, pooled
    assert pooled["raw"] <= 0.95, pooled
    assert _protrusion(late, "deskewed") <= 0.05
    assert _protrusion(late, "raw") >= max(0.15, 4 * _protrusion(late, "deskewed"))
    # Per object: deskewed never worse than raw beyond noise, and often much better.
    assert all(f.inside["deskewed"] >= f.inside["raw"] - 0.01 for f in late)
    assert sum(f.inside["deskewed"] - f.inside["raw"] >= 0.2 for f in late) >= len(late) // 3


def test_deskewed_parked_cars_lie_on_their_box_faces(object_fits: list[_ObjectFit]) -> None:
    """Parked cars (static structure): after deskew the outer surface of each car's returns
    (95th percentile of the signed distance to the box surface) lies within 5 cm of its ground
    truth box faces (the end-of-sweep ego pose lies past the newest GNSS fix; its extrapolation
    keeps the ego's yaw rate, without which the ego's turn over the sweep left 3-7 cm at 40 m:
    `yaw_error_m` is what such a miss would cost). Over all parked cars the returns
    protrude <= 5 cm (95th percentile; range noise is 2 cm) with a median distance to the
    surface <= 4 cm (the glass cabin is set in from the box sides, so not every return lies on
    a face). The raw returns of the cars seen late in the sweep stick out by >= 15 cm."""
    parked = [f for f in object_fits if f.label == "Car" and f.speed_mps < PARKED_MPS]
    assert len(parked) >= 3
    for f in parked:
        assert abs(np.percentile(f.surface["deskewed"], 95)) <= 0.05, f
    assert _protrusion(parked, "deskewed") <= 0.05
    assert np.median(np.abs(np.concatenate([f.surface["deskewed"] for f in parked]))) <= 0.04
    late = [f for f in parked if f.mean_offset_ms >= 50.0]
    assert late
    assert _protrusion(late, "raw") >= max(0.15, 4 * _protrusion(late, "deskewed"))


# -- latency over real sockets --------------------------------------------------------------------

#: Played sweeps: one in PLAY_EVERY (with its camera frame and fix), at the recorded pace, so
#: a sweep arrives every 700 ms: the pipeline takes ~170-400 ms a sweep on a 2-core machine, and
#: the node (by design) skips the bundles it cannot keep up with; at 10 Hz it would skip most.
PLAY_EVERY = 7


def _node_config(tmp: Path) -> tuple[Path, str, str]:
    sensors, detections = f"ipc://{tmp}/sensors", f"ipc://{tmp}/detections"
    doc = {
        "inputs": {
            "endpoints": [sensors],
            "lidar_topic": LIDAR_STREAM,
            "camera_topics": [CAMERA_STREAM],
            "gnss_topic": GNSS_STREAM,
        },
        "outputs": {"endpoint": detections},
        "camera_model": {"path": str(SYNTH_DETECTOR_PATH), "kind": "yolox"},
        "sync": {"camera_offsets_ms": {CAMERA_STREAM: CAMERA_OFFSET_NS / MS}},
    }
    if "apply_clock_offset" in {f.name for f in dataclasses.fields(BudgetConfig)}:
        # The stamps are put on the host clock (like PTP-synchronised sensors): the latency is
        # taken against them, not against the node's online estimate of the lidar clock, which
        # from its first few sweeps is off by a few ms either way under load.
        doc["budgets"] = {"apply_clock_offset": False}
    path = tmp / "node.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path, sensors, detections


def _played(drive: Drive) -> Iterator[RecordedMessage]:
    """The rig, then every PLAY_EVERY-th sweep's messages (those stamped within its interval)."""
    for r in drive.records:
        if isinstance(r.message, RigMessage):
            yield r
        elif isinstance(r.message, LidarSweep | CameraFrame | GnssFix):
            i = drive.sweep_of(r.message.header.stamp_ns)
            if i >= 0 and i % PLAY_EVERY == 0:
                yield r


def _restamped(msg: Message, shift_ns: int) -> Message:
    header = dataclasses.replace(msg.header, stamp_ns=msg.header.stamp_ns + shift_ns)
    return dataclasses.replace(msg, header=header)


@pytest.mark.slow
def test_live_node_latency_matches_the_host_clock(drive: Drive, tmp_path: Path) -> None:
    """Stamps shifted to now (one shift for the whole drive), each message sent at its recorded
    receive time on the shifted clock, so every sweep reaches the node its recorded delay after
    its stamp (the sweep's duration + 3 ms). Each played sweep gives one DetectionList, in
    order, whose `latency_ns` is at least the sum of its stage timings and at least the sweep's
    duration (it cannot be sent before its last point) plus its processing stages, and at most
    the test's own receive time minus the stamp, all on the host clock."""
    config, sensors, detections = _node_config(tmp_path)
    played = list(_played(drive))
    durations = {
        r.message.header.stamp_ns: int(r.message.point_time_offsets_ns.max())
        for r in played
        if isinstance(r.message, LidarSweep) and r.message.point_time_offsets_ns is not None
    }
    assert len(durations) >= 5
    stamps: list[int] = []
    received: list[tuple[DetectionList, int]] = []

    def receive_until(until_ns: int) -> None:
        """Take detections (with the test's receive time) until host time `until_ns`."""
        while (left_ns := until_ns - time.time_ns()) > 0:
            frames = sub.recv(timeout_ms=max(1, left_ns // MS))
            if frames is not None:
                now = time.time_ns()
                _, dl = wire.decode(frames)
                assert isinstance(dl, DetectionList)
                received.append((dl, now))

    with (
        Publisher(sensors, bind=True, hwm=1000) as pub,
        running_node(config) as node,
        Subscriber([detections], ["detections"]) as sub,
    ):
        time.sleep(1.0)  # PUB/SUB: let both subscriptions reach their publishers
        shift = time.time_ns() + 200 * MS - played[0].log_time_ns
        for r in played:
            receive_until(r.log_time_ns + shift)
            pub.send(_restamped(r.message, shift), r.topic)
            if isinstance(r.message, LidarSweep):
                stamps.append(r.message.header.stamp_ns + shift)
        deadline = time.time_ns() + 10_000 * MS
        while len(received) < len(stamps) and time.time_ns() < deadline:
            receive_until(min(deadline, time.time_ns() + 100 * MS))
    log = "".join(node.output)
    assert node.proc.returncode == 0, log
    assert [dl.header.stamp_ns for dl, _ in received] == stamps, log
    for dl, now in received:
        stamp = dl.header.stamp_ns
        assert set(dl.timings_ns) == set(STAGES)
        assert dl.degraded == () and dl.valid
        assert 0 < dl.latency_ns <= now - stamp
        # The lidar branch runs beside the camera branch: only its wait is on the critical path.
        assert dl.latency_ns >= serial_ns(dl.timings_ns)
        processing = step_ns(dl.timings_ns)
        assert dl.latency_ns >= durations[stamp - shift] + processing
