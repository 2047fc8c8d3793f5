"""Where a camera's frames fall within their sweeps, against its configured offset
(perception.sync.phase)."""

from __future__ import annotations

import random

import pytest

from perception.sync.phase import CameraPhases

MS = 1_000_000
CAMERA = "camera/front"


def _phases(frame_ms: list[float], sweeps: int = 30, period_ms: float = 100.0) -> CameraPhases:
    """Sweeps every `period_ms` from 1 s, and each sweep's frames at `frame_ms` after its
    stamp."""
    phases = CameraPhases()
    for k in range(sweeps):
        start = 1000 * MS + round(k * period_ms * MS)
        phases.on_sweep(start)
        for at in frame_ms:
            phases.on_frame(CAMERA, start + round(at * MS))
    return phases


def test_frames_part_way_through_their_sweep_with_no_offset_are_named() -> None:
    """The synthetic drive's camera fires 62 ms into each 100 ms sweep: with the default
    offset each frame paired with the next sweep, 38 ms before its expected time."""
    phases = _phases([62.0])
    (note,) = phases.notes({}, [CAMERA]).values()
    assert note == (
        "camera/front: its frames come 62 ms into the sweep they fall in, 38 ms before the time "
        "sync.camera_offsets_ms (0 ms after the sweep stamp) expects them (median of 29): each "
        "is fused with a sweep it was not taken for, or with none. Set "
        "sync.camera_offsets_ms: {camera/front: 62}"
    )
    # The offset it names, or the one pairing each frame with the next sweep at its time.
    assert phases.notes({CAMERA: 62.0}, [CAMERA]) == {}
    assert phases.notes({CAMERA: -38.0}, [CAMERA]) == {}
    # Within a tenth of the period of its time: trigger jitter, not a wrong offset.
    assert phases.notes({CAMERA: 55.0}, [CAMERA]) == {}
    (late,) = phases.notes({CAMERA: 30.0}, [CAMERA]).values()
    assert "32 ms after the time sync.camera_offsets_ms (30 ms after the sweep stamp)" in late


def test_frames_at_the_sweep_stamp_either_side_are_at_their_time() -> None:
    """Frames jittering about the sweep stamp fall in the sweep before when early: measured
    from the time the offset expects, not from the sweep they fall in, they are on time."""
    rng = random.Random(3)
    phases = CameraPhases()
    for k in range(40):
        start = 1000 * MS + k * 100 * MS
        phases.on_sweep(start)
        phases.on_frame(CAMERA, start + round(rng.uniform(-2.0, 2.0) * MS))
    assert phases.notes({}, [CAMERA]) == {}


def test_a_camera_not_triggered_by_the_lidar_is_not_judged() -> None:
    """A 30 Hz camera beside a 10 Hz lidar has frames at every phase: no offset places them."""
    assert _phases([10.0, 43.3, 76.6]).notes({}, [CAMERA]) == {}


@pytest.mark.parametrize("frames", [9, 5])
def test_too_few_placed_frames_are_not_judged(frames: int) -> None:
    """A frame is placed once the sweep after its own has come: 10 frames need 11 sweeps."""
    assert _phases([62.0], sweeps=frames + 1).notes({}, [CAMERA]) == {}
    assert len(_phases([62.0], sweeps=11).notes({}, [CAMERA])) == 1


def test_frames_in_a_gap_of_lost_sweeps_are_not_placed() -> None:
    phases = CameraPhases()
    for k in [*range(12), *range(40, 52)]:
        start = 1000 * MS + k * 100 * MS
        phases.on_sweep(start)
    for k in range(12, 40):  # frames where no sweep came
        phases.on_frame(CAMERA, 1000 * MS + k * 100 * MS + 62 * MS)
    assert phases.residuals_ns(CAMERA, 0) == []


def test_a_lidar_clock_stepping_back_starts_over() -> None:
    phases = _phases([62.0])
    assert phases.notes({}, [CAMERA])
    phases.on_sweep(5 * MS)  # before every sweep seen: another timeline
    assert phases.residuals_ns(CAMERA, 0) == []
    assert phases.period_ns() is None
