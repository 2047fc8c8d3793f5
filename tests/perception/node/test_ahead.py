"""Camera frames encoded as they arrive (perception.node.ahead): the same detections as encoding
in line, the encoder off the frame's path, and bounded work."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path

import numpy as np
import pytest

from calibration import Rig
from engines.camera.detector import CameraDetector
from engines.factory import EngineFactory
from perception.config import NodeConfig
from perception.msgs.types import CameraFrame, DetectionList, Header, SyncedBundle
from perception.node.ahead import CameraAhead
from perception.node.core import NodeCore
from perception.pipeline import Pipeline
from perception.pipeline.pipeline import CameraEncoding
from perception.pipeline.timing import engine_ns, serial_ns
from replay.drive import DriveReader
from replay.offline import Received, run_core
from replay.synth.demo import SYNTH_DETECTOR_PATH
from replay.synth.world import CAMERA_STREAM

SEED = 23  # neither a training, a tuning nor a reporting seed


@pytest.fixture(scope="module")
def pipeline() -> Pipeline:
    detector = CameraDetector(
        EngineFactory().camera_encoder(SYNTH_DETECTOR_PATH), kind="yolox", score_threshold=0.15
    )
    return Pipeline(detector)


def _replayed(drive: Path, pipeline: Pipeline, ahead: bool) -> list[DetectionList]:
    """The drive through a core, each message received at its log time; with `ahead`, the
    core's camera frames are encoded on a thread as they are filed."""
    core = NodeCore(NodeConfig(), pipeline)
    reader = DriveReader(drive)
    received = (Received(r.topic, r.log_time_ns, message=r.message) for r in reader.messages())
    if not ahead:
        return list(run_core(core, received))
    with CameraAhead(pipeline) as camera_ahead:
        core.camera_ahead = camera_ahead
        out = list(run_core(core, received))
        assert camera_ahead.offered >= len(out) - 1
    return out


def _key(dl: DetectionList) -> list[tuple[object, ...]]:
    return [(d.label, d.score, *d.center, *d.size, d.yaw, d.sources) for d in dl.detections]


def test_frames_encoded_ahead_give_the_same_detections_off_the_frames_path(
    synth_drive: Callable[[int, float], Path], pipeline: Pipeline
) -> None:
    """The synthetic camera fires mid-sweep, so its frame is filed before its sweep ends: the
    encodings made ahead give exactly the detections of encoding in line, and the frame's
    path holds the wait for them in place of the encoder."""
    drive = synth_drive(SEED, 2.0)
    inline = _replayed(drive, pipeline, ahead=False)
    ahead = _replayed(drive, pipeline, ahead=True)
    assert len(ahead) == len(inline) >= 18
    assert [_key(a) for a in ahead] == [_key(b) for b in inline]
    assert sum(len(dl.detections) for dl in ahead) > 0
    for a, b in zip(ahead, inline, strict=True):
        assert "camera_wait" not in b.timings_ns
        waited, encoded = a.timings_ns["camera_wait"], a.timings_ns["camera_encoder"]
        assert encoded > 0
        # The encoder is off the path; its wait is on it, in the engines' share.
        off = {k: v for k, v in a.timings_ns.items() if k != "camera_encoder"}
        assert serial_ns(a.timings_ns) == serial_ns(off)
        assert engine_ns(a.timings_ns) == engine_ns(off) >= waited


def _frame(rig_frame: CameraFrame, seq: int) -> CameraFrame:
    return dataclasses.replace(
        rig_frame, header=dataclasses.replace(rig_frame.header, seq=seq, stamp_ns=seq)
    )


@pytest.fixture(scope="module")
def synth_frame_and_rig(synth_drive: Callable[[int, float], Path]) -> tuple[CameraFrame, Rig]:
    reader = DriveReader(synth_drive(SEED, 2.0))
    frame = next(r.message for r in reader.messages([CAMERA_STREAM]))
    assert isinstance(frame, CameraFrame) and reader.rig is not None
    return frame, reader.rig


def test_a_newer_frame_cancels_an_encoding_not_started_and_claims_are_by_frame(
    pipeline: Pipeline, synth_frame_and_rig: tuple[CameraFrame, Rig]
) -> None:
    frame, rig = synth_frame_and_rig
    frames = [_frame(frame, k) for k in range(3)]
    with CameraAhead(pipeline) as ahead:
        for f in frames:  # the first runs, the second waits and is overtaken by the third
            ahead.offer(f, rig)
        assert (ahead.offered, ahead.cancelled) == (3, 1)

        def bundle(f: CameraFrame) -> dict[str, CameraFrame]:
            return {CAMERA_STREAM: f}

        first = ahead.claim(bundle(frames[0]))[CAMERA_STREAM].result(timeout=30)
        third = ahead.claim(bundle(frames[2]))[CAMERA_STREAM].result(timeout=30)
        assert first.frame is frames[0] and third.frame is frames[2]
        assert (
            first.boxes
            == third.boxes
            == tuple(pipeline.encode_camera(frame, rig.cameras["front"]).boxes)
        )
        assert ahead.claim(bundle(frames[1]))[CAMERA_STREAM].cancelled()
        # Claimed once; a frame never offered (an equal copy is not the frame) has none.
        assert ahead.claim(bundle(frames[0])) == {}
        assert ahead.claim(bundle(_frame(frame, 2))) == {}


def test_encodings_kept_are_bounded_and_close_ends_the_thread(
    pipeline: Pipeline, synth_frame_and_rig: tuple[CameraFrame, Rig]
) -> None:
    frame, rig = synth_frame_and_rig
    streams = [f"camera/{k}" for k in range(6)]
    ahead = CameraAhead(pipeline, max_kept=4)
    for k, stream in enumerate(streams):
        header = Header(stream, k, k, "camera/front")
        ahead.offer(dataclasses.replace(frame, header=header), rig)
    assert len(ahead._kept) == 4
    ahead.close()
    assert all(not t.name.startswith("camera-ahead") for t in _threads())
    ahead.offer(frame, rig)  # after close: nothing started
    assert ahead.offered == 6


def test_a_frame_no_rig_camera_takes_is_not_encoded(
    pipeline: Pipeline, synth_frame_and_rig: tuple[CameraFrame, Rig]
) -> None:
    frame, rig = synth_frame_and_rig
    stray = dataclasses.replace(
        frame, header=dataclasses.replace(frame.header, stream="camera/rear", frame_id="rear")
    )
    with CameraAhead(pipeline) as ahead:
        ahead.offer(stray, rig)
        ahead.offer(frame, None)
        assert ahead.offered == 0


def test_a_bundle_whose_frame_was_not_encoded_ahead_is_encoded_in_line(
    pipeline: Pipeline, synth_frame_and_rig: tuple[CameraFrame, Rig]
) -> None:
    """`step` given encodings for other frames (the bundle matched another one) encodes its
    own: the detections are those of encoding in line."""
    frame, rig = synth_frame_and_rig
    other = _frame(frame, 7)
    blank = dataclasses.replace(other, image=np.zeros_like(frame.image))
    with CameraAhead(pipeline) as ahead:
        ahead.offer(blank, rig)
        futures = ahead.claim({CAMERA_STREAM: blank})
        start = time.monotonic()
        encoding = pipeline._encoding_ahead(frame, rig.cameras["front"], futures)
        assert time.monotonic() - start < 30
    assert encoding.frame is frame
    assert encoding.boxes == pipeline.encode_camera(frame, rig.cameras["front"]).boxes


def _threads() -> list[threading.Thread]:
    return threading.enumerate()


def test_a_claimed_encoding_is_never_cancelled_by_a_newer_frame(
    pipeline: Pipeline, synth_frame_and_rig: tuple[CameraFrame, Rig]
) -> None:
    """A worker behind a backlog claims a frame whose encoding has not started; the receiver
    then files a newer frame of that camera: the claimed encoding still runs (the node
    counted a failed step per such race before)."""
    frame, rig = synth_frame_and_rig
    frames = [_frame(frame, k) for k in range(3)]
    with CameraAhead(pipeline) as ahead:
        ahead.offer(frames[0], rig)  # runs
        ahead.offer(frames[1], rig)  # waits behind it
        claimed = ahead.claim({CAMERA_STREAM: frames[1]})[CAMERA_STREAM]
        ahead.offer(frames[2], rig)
        assert ahead.cancelled == 0
        assert claimed.result(timeout=30).frame is frames[1]


def test_a_cancelled_encoding_is_made_in_line(
    pipeline: Pipeline, synth_frame_and_rig: tuple[CameraFrame, Rig]
) -> None:
    frame, rig = synth_frame_and_rig
    cancelled: Future[CameraEncoding] = Future()
    assert cancelled.cancel()
    encoding = pipeline._encoding_ahead(frame, rig.cameras["front"], {CAMERA_STREAM: cancelled})
    assert encoding.frame is frame
    assert encoding.boxes == pipeline.encode_camera(frame, rig.cameras["front"]).boxes


@pytest.fixture(scope="module")
def synth_bundles(
    synth_drive: Callable[[int, float], Path], pipeline: Pipeline
) -> list[SyncedBundle]:
    """The bundles the core hands the pipeline for a short synthetic drive."""
    bundles: list[SyncedBundle] = []
    step = pipeline.step

    def record(bundle: SyncedBundle, seq: int, ahead: object = None) -> DetectionList:
        bundles.append(bundle)
        return step(bundle, seq)

    pipeline.step = record  # type: ignore[method-assign]
    try:
        _replayed(synth_drive(SEED, 1.0), pipeline, ahead=False)
    finally:
        del pipeline.step
    assert len(bundles) >= 8
    return bundles


@pytest.mark.parametrize("image", ["as taken", "blank"])
def test_a_camera_still_encoding_has_its_points_in_view_found_meanwhile(
    pipeline: Pipeline, synth_bundles: list[SyncedBundle], image: str
) -> None:
    """While the frame waits for a camera's encoding, the camera's points in view (which need
    no box) are found: the wait hides them, and the detections are those of encoding in line.
    A camera whose image turns out unfit has them found in vain and contributes nothing."""
    bundle = synth_bundles[len(synth_bundles) // 2]
    frame = bundle.cameras[CAMERA_STREAM]
    if image == "blank":
        frame = dataclasses.replace(frame, image=np.zeros_like(frame.image))
        bundle = dataclasses.replace(bundle, cameras={CAMERA_STREAM: frame})
    inline = pipeline.step(bundle, 5)
    encoding = pipeline.encode_camera(frame, bundle.rig.cameras["front"])
    pending: Future[CameraEncoding] = Future()
    released: list[float] = []
    viewed: list[float] = []

    def release() -> None:
        released.append(time.monotonic())
        pending.set_result(encoding)

    view_points = pipeline._view_points

    def timed_view(*args: object) -> object:
        viewed.append(time.monotonic())
        return view_points(*args)  # type: ignore[arg-type]

    pipeline._view_points = timed_view  # type: ignore[method-assign, assignment]
    timer = threading.Timer(0.3, release)
    timer.start()
    try:
        waited = pipeline.step(bundle, 5, ahead={CAMERA_STREAM: pending})
    finally:
        timer.join()
        del pipeline._view_points
    assert _key(waited) == _key(inline)
    assert (image == "blank") == (waited.degraded == (CAMERA_STREAM,))
    assert len(viewed) == 1 and viewed[0] < released[0]
    assert waited.timings_ns["camera_wait"] > 0
