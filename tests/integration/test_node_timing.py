"""Latency with a sensor clock that is off the host clock, deadlines and the diagnostics that
report them, on a real node process over real sockets with real KITTI frames."""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from perception.io.transport import Publisher, Subscriber
from perception.msgs import wire
from perception.msgs.types import DetectionList, Diagnostics, RealtimeStatus
from perception.node import CLOCK_MIN_SWEEPS
from perception.pipeline.timing import serial_ns
from replay.datasets.kitti_object import KittiObjectFolder
from tests.integration.node_harness import node_config, running_node

# The lidar clock runs this far behind the host clock (an unsynchronised sensor).
SENSOR_BEHIND_NS = 300_000_000
PERIOD_S = 0.25
SWEEPS = 12


def _restamped(messages, stamp_ns: int):
    return [replace(m, header=replace(m.header, stamp_ns=stamp_ns)) for m in messages]


def _answers(sub: Subscriber, seconds: float, poll_ms: int = 10):
    """What the node publishes for `seconds`: ("diagnostics", Diagnostics, 0) and
    ("detections", DetectionList, host receive time) as they arrive."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        frames = sub.recv(timeout_ms=poll_ms)
        if frames is None:
            continue
        _, msg = wire.decode(frames)
        if isinstance(msg, Diagnostics):
            yield "diagnostics", msg, 0
            continue
        assert isinstance(msg, DetectionList)
        yield "detections", msg, time.time_ns()


def _run(tmp_path: Path, kitti_dir: Path, yolox_path: Path, budgets: dict, *, realtime=None,
         sweeps=SWEEPS):  # fmt: skip
    """Plays SWEEPS KITTI frames stamped on the lagging sensor clock; returns, per received
    DetectionList, (list, host send time of its sweep, host receive time) and the last
    diagnostics document."""
    if not yolox_path.is_file():
        pytest.skip(f"real data not found: {yolox_path}")
    config, sensors, detections = node_config(tmp_path, yolox_path)
    doc = yaml.safe_load(config.read_text())
    doc["budgets"] = budgets
    if realtime is not None:
        doc["realtime"] = realtime
    config.write_text(yaml.safe_dump(doc))
    folder = KittiObjectFolder(kitti_dir)
    # Read (PNG decoded) before the first is sent: read between a sweep's stamp and its send,
    # a frame's 15-60 ms of decoding on a loaded machine counted as the sweep's transport.
    frames = [folder.frame_messages(k, 0) for k in range(len(folder))]
    sent: dict[int, int] = {}
    results = []
    diagnostics: Diagnostics | None = None
    with (
        running_node(config),
        Publisher(sensors, bind=True) as pub,
        Subscriber([detections], ["detections", "diagnostics"]) as sub,
    ):
        time.sleep(1.0)  # slow joiners on both sides
        for k in range(sweeps):
            host_ns = time.time_ns()
            stamp = host_ns - SENSOR_BEHIND_NS
            for msg in _restamped(frames[k % len(frames)], stamp):
                pub.send(msg)
            sent[stamp] = host_ns
            for kind, payload, receive_ns in _answers(sub, PERIOD_S):
                if kind == "diagnostics":
                    diagnostics = payload
                else:
                    results.append((payload, sent[payload.header.stamp_ns], receive_ns))
        # Then the first diagnostics published after the last DetectionList (1 Hz).
        for kind, payload, receive_ns in _answers(sub, 5.0, poll_ms=50):
            if kind == "detections":
                results.append((payload, sent[payload.header.stamp_ns], receive_ns))
                continue
            diagnostics = payload
            if len(results) == sweeps:
                break
    assert diagnostics is not None, "no diagnostics from the node"
    return results, diagnostics


def _work_ns(dl: DetectionList) -> int:
    """The pipeline stages' time along the frame's critical path (excluding the transport, the
    previous publish, decode and waiting; the lidar branch beside the camera's counts by its
    wait)."""
    left_out = ("transport", "publish", "decode", "sync_wait")
    return serial_ns({k: v for k, v in dl.timings_ns.items() if k not in left_out})


#: The latency is taken on the wall clock (the one the sensor stamps are on), the stages'
#: work on the monotonic clock: while the host's clock is being slewed the two disagree by a
#: few ms (a fresh-clone run measured a latency 2-3 ms short of the lag plus the work on two
#: sweeps of one minute). Far below the 300 ms these tests tell apart.
CLOCK_SLEW_NS = 5_000_000


class _Slew:
    """How far the host's wall clock parts from its monotonic clock from now on. The node's
    receive clock is the wall time at its start advanced by the monotonic clock
    (perception.node.node), the test's sensor stamps are wall times: while the host slews its
    wall clock (NTP correcting an offset: 5,000 ppm was seen, 25 ms in 5 s), the two part by
    this much beyond `CLOCK_SLEW_NS` (a run that passed in the morning failed so in the
    afternoon, on this code and on the code before it alike)."""

    def __init__(self) -> None:
        self._wall_ns, self._mono_ns = time.time_ns(), time.monotonic_ns()

    def parted_ns(self) -> int:
        wall_ns = time.time_ns() - self._wall_ns
        return abs(wall_ns - (time.monotonic_ns() - self._mono_ns))


def test_latency_applies_the_estimated_sensor_clock_offset(
    tmp_path: Path, kitti_dir: Path, yolox_path: Path
) -> None:
    sweeps = CLOCK_MIN_SWEEPS + 6
    budgets = {"apply_clock_offset": True}
    slew = _Slew()
    results, diagnostics = _run(tmp_path, kitti_dir, yolox_path, budgets, sweeps=sweeps)
    parted_ns = slew.parted_ns()
    assert len(results) == sweeps
    (clock,) = [c for c in diagnostics.clocks if c.stream == "lidar/top"]
    assert clock.jumps == 0 and clock.rejected == 0, clock
    # The estimate applies once CLOCK_MIN_SWEEPS sweeps are in the estimator. A sweep late by
    # more than the estimator's jump threshold is delivered but not taken (it says nothing of
    # the envelope; a loaded CI machine delayed one so), which defers the estimate by one.
    not_taken = sweeps - clock.samples
    assert 0 <= not_taken <= 3, clock
    applied = []
    for index, (dl, send_ns, receive_ns) in enumerate(results):
        true_latency = receive_ns - send_ns
        if dl.latency_ns <= true_latency + 1_000_000:
            applied.append(index)
            # Less by up to the delay's spread: the offset is a median of chunk minima of the
            # transport delay, which may exceed this sweep's own delay (~1 ms for 2 MB on ipc
            # on a quiet machine; a loaded CI machine measured 4.5 ms). 10 ms still tells an
            # applied offset from the 300 ms error.
            assert dl.latency_ns >= _work_ns(dl) - 10_000_000 - parted_ns, (index, dl.latency_ns)
            # The transport beyond the fastest, not the 300 ms the clocks disagree by.
            transport_ns = dl.timings_ns["transport"]
            assert 0 <= transport_ns < 50_000_000 + parted_ns, (transport_ns, parted_ns)
        else:
            # Not yet an estimate: the clocks are taken to agree, and the lag shows.
            assert dl.latency_ns >= SENSOR_BEHIND_NS + _work_ns(dl) - CLOCK_SLEW_NS - parted_ns, (
                index
            )
    # Applied from about the sweep that completed CLOCK_MIN_SWEEPS taken ones (that sweep itself
    # may or may not see it), and from then on.
    assert applied, "the clock offset was never applied"
    start = applied[0]
    assert applied == list(range(start, sweeps)), applied
    assert CLOCK_MIN_SWEEPS - 1 <= start <= CLOCK_MIN_SWEEPS + not_taken, (start, not_taken)
    offset = clock.offset_ns
    assert offset is not None
    # The estimate is the sensor's lag plus the smallest transport delays it saw: never less
    # than the lag (each sweep reaches the node after the test stamped it), never more than the
    # longest a sweep took to arrive, which is at most its whole round trip less the node's work
    # on it. (A fixed +-20 ms failed on a loaded CI machine whose delays reached 20 ms.)
    delays = [receive_ns - send_ns - _work_ns(dl) for dl, send_ns, receive_ns in results]
    assert SENSOR_BEHIND_NS - 1_000_000 <= offset <= SENSOR_BEHIND_NS + max(delays), (
        offset,
        max(delays),
    )


def test_without_the_offset_the_clock_error_shows_and_budgets_overrun(
    tmp_path: Path, kitti_dir: Path, yolox_path: Path
) -> None:
    budgets = {"apply_clock_offset": False, "end_to_end_ms": 200.0, "stages_ms": {"fusion": 0.001}}
    cpus = sorted(os.sched_getaffinity(0))
    realtime = {"cpu_affinity": cpus, "nice": 1}
    slew = _Slew()
    results, diagnostics = _run(tmp_path, kitti_dir, yolox_path, budgets, realtime=realtime)
    slack_ns = CLOCK_SLEW_NS + slew.parted_ns()
    assert len(results) == SWEEPS
    for dl, send_ns, receive_ns in results:
        true_latency = receive_ns - send_ns
        assert dl.latency_ns >= SENSOR_BEHIND_NS + _work_ns(dl) - slack_ns
        assert dl.latency_ns <= SENSOR_BEHIND_NS + true_latency + 1_000_000
        # Taken to agree, the clocks put their 300 ms into the sweep's transport.
        assert dl.timings_ns["transport"] >= SENSOR_BEHIND_NS - slack_ns
        assert not dl.budget_ok
    counters = diagnostics.counters
    assert counters["budget_overruns"] == SWEEPS
    assert diagnostics.overruns_by_stage["end_to_end"] == SWEEPS
    assert diagnostics.overruns_by_stage["fusion"] >= 1
    assert counters["longest_overrun_run"] == SWEEPS
    assert diagnostics.budgets_ms["end_to_end"] == 200.0
    assert diagnostics.realtime == RealtimeStatus(tuple(cpus), 1, "other", True, ())


def test_a_node_that_falls_behind_skips_to_the_newest_sweep(
    tmp_path: Path, kitti_dir: Path, yolox_path: Path
) -> None:
    if not yolox_path.is_file():
        pytest.skip(f"real data not found: {yolox_path}")
    config, sensors, detections = node_config(tmp_path, yolox_path)
    folder = KittiObjectFolder(kitti_dir)
    # Read (PNG decoded) before the burst: read in it, a frame took 15-25 ms to send, as long
    # as the node takes to process one, and the node sometimes kept up (no sweep skipped).
    frames = [list(folder.frame_messages(k, 0)) for k in range(len(folder))]
    burst = 24  # sweeps 10 ms apart: far faster than a frame takes on this machine
    stamps = []
    received: list[DetectionList] = []
    counters: dict[str, int] = {}
    with (
        running_node(config),
        Publisher(sensors, bind=True, hwm=1000) as pub,
        Subscriber([detections], ["detections", "diagnostics"]) as sub,
    ):
        time.sleep(1.0)
        for k in range(burst):
            stamp = time.time_ns()
            for msg in _restamped(frames[k % len(frames)], stamp):
                pub.send(msg)
            stamps.append(stamp)
            time.sleep(0.01)
        for kind, payload, _ in _answers(sub, 10.0, poll_ms=50):
            if kind == "detections":
                received.append(payload)
                continue
            counters = payload.counters
            # Bundles are counted when ready; the worker may still hold the last ones.
            done = counters["published"] + counters["skipped_bundles"]
            if counters["bundles"] == burst == done and counters["published"] == len(received):
                break
    assert counters["bundles"] == burst
    assert counters["skipped_bundles"] >= 1
    assert counters["published"] + counters["skipped_bundles"] == burst
    assert len(received) == counters["published"]
    # What it works on is always the newest sweep: the burst's last one is published, and
    # stamps only move forward.
    got = [dl.header.stamp_ns for dl in received]
    assert got[-1] == stamps[-1] and got == sorted(set(got))
