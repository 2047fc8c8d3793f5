"""Stage timings: the critical path of a frame whose lidar branch ran beside the camera's."""

from __future__ import annotations

from perception.pipeline.timing import StageTimer, engine_ns, engine_path, overlap_ns, serial_ns

MS = 1_000_000


def test_serial_timings_add_up() -> None:
    timings = {"preprocess": 2 * MS, "camera_encoder": 10 * MS, "lidar_encoder": 5 * MS}
    timings |= {"fusion": 3 * MS, "postprocess": MS, "lidar_encoder_gpu": 4 * MS}
    # The GPU's share of a stage is within that stage.
    assert serial_ns(timings) == 21 * MS
    assert engine_ns(timings) == 18 * MS
    assert engine_path(timings) == ("camera_encoder", "lidar_encoder", "fusion")


def test_a_parallel_lidar_branch_counts_only_for_its_wait() -> None:
    timings = {"preprocess": 2 * MS, "camera_encoder": 10 * MS, "lidar_encoder": 12 * MS}
    timings |= {"branch_wait": 3 * MS, "fusion": 3 * MS, "postprocess": MS}
    assert serial_ns(timings) == 19 * MS
    assert engine_ns(timings) == 16 * MS
    assert engine_path(timings) == ("camera_encoder", "branch_wait", "fusion")


def test_cameras_encoded_ahead_count_only_for_their_wait() -> None:
    timings = {"preprocess": 2 * MS, "camera_encoder": 10 * MS, "camera_wait": MS}
    timings |= {"lidar_encoder": 12 * MS, "lidar_objects": 4 * MS, "branch_wait": 3 * MS}
    timings |= {"fusion": 3 * MS, "postprocess": MS}
    assert serial_ns(timings) == 10 * MS
    assert engine_ns(timings) == 7 * MS
    assert engine_path(timings) == ("camera_wait", "branch_wait", "fusion")


def test_a_stage_entered_twice_adds_up() -> None:
    timer = StageTimer()
    with timer.stage("preprocess"):
        pass
    first = timer.timings_ns["preprocess"]
    timer.add("preprocess", 5)
    assert timer.timings_ns["preprocess"] == first + 5


def test_overlap_is_the_work_done_before_the_other_thread_ended() -> None:
    """Work from 100 to 160: the part before the other thread's end is hidden behind it."""
    assert overlap_ns(100, 160, 200) == 60  # the other outlasted it all
    assert overlap_ns(100, 160, 130) == 30  # it ended halfway
    assert overlap_ns(100, 160, 100) == 0  # it ended as the work began
    assert overlap_ns(100, 160, 50) == 0  # it had ended before
    assert overlap_ns(100, 100, 200) == 0  # no work
