"""Hypothesis strategies of every message type, with optional fields absent and present and
arrays empty and not, and an exact comparison of two messages (arrays by their bytes)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from perception.msgs.schema import DEFAULT_LIMITS, MAX_SPEED_MPS, MAX_STAMP_NS
from perception.msgs.types import (
    CalibrationStatus,
    CameraBox,
    CameraFrame,
    Detection3D,
    DetectionList,
    Diagnostics,
    GnssFix,
    Header,
    LidarSweep,
    Message,
    RealtimeStatus,
    RigMessage,
    SensorClock,
    SensorStatus,
    Track,
    TrackList,
)

SETTINGS = settings(max_examples=50, deadline=None)
INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)
# Readers refuse stamps above MAX_STAMP_NS and point offsets above the sweep duration limit.
STAMP_MAX = MAX_STAMP_NS
SWEEP_MAX = DEFAULT_LIMITS.max_sweep_duration_ns

texts = st.text(alphabet=st.characters(codec="utf-8"), max_size=24)
finite = st.floats(allow_nan=False, allow_infinity=False)
headers = st.builds(
    Header,
    stream=st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=24),
    seq=st.integers(0, INT64_MAX),
    stamp_ns=st.integers(0, STAMP_MAX),
    frame_id=texts,
)


@st.composite
def camera_frames(draw: st.DrawFn) -> CameraFrame:
    header = draw(headers)
    if draw(st.booleans()):
        h, w = draw(st.integers(1, 12)), draw(st.integers(1, 12))
        image = draw(hnp.arrays(np.uint8, (h, w, 3)))
        return CameraFrame(header, image=image)
    data = draw(st.binary(min_size=1, max_size=300))
    return CameraFrame(header, data=data, encoding=draw(st.sampled_from(["jpeg", "png"])))


@st.composite
def lidar_sweeps(draw: st.DrawFn) -> LidarSweep:
    n = draw(st.integers(0, 40))
    points = draw(
        hnp.arrays(
            np.float32,
            (n, 4),
            elements=st.floats(width=32, allow_nan=False, allow_infinity=False),
        )
    )
    offsets = draw(st.none() | hnp.arrays(np.int64, (n,), elements=st.integers(0, SWEEP_MAX)))
    return LidarSweep(draw(headers), points, offsets)


gnss_fixes = st.builds(
    GnssFix,
    header=headers,
    latitude_deg=st.floats(-90, 90),
    longitude_deg=st.floats(-180, 180),
    altitude_m=st.floats(-12_000, 100_000),
    position_covariance_m2=st.tuples(*[finite] * 9).filter(lambda c: min(c[0], c[4], c[8]) >= 0),
    velocity_enu_mps=st.none()
    | st.tuples(*[st.floats(-200, 200)] * 3).filter(lambda v: math.hypot(*v) <= MAX_SPEED_MPS),
    heading_rad=st.none() | st.floats(-12.5, 12.5),
)

plain = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), INT64_MAX) | finite | texts,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(texts, children, max_size=4),
    max_leaves=20,
)
rig_messages = st.builds(RigMessage, header=headers, rig=st.dictionaries(texts, plain, max_size=5))

camera_boxes = st.builds(CameraBox, texts, finite, finite, finite, finite)
global_positions = st.none() | st.tuples(st.floats(-90, 90), st.floats(-180, 180))
detections = st.builds(
    lambda pos, **kw: Detection3D(
        **kw,
        latitude_deg=None if pos is None else pos[0],
        longitude_deg=None if pos is None else pos[1],
    ),
    global_positions,
    label=texts,
    score=st.floats(0, 1),
    center=st.tuples(finite, finite, finite),
    size=st.tuples(*[st.floats(0, 1e6)] * 3),
    yaw=finite,
    sources=st.lists(texts, max_size=3).map(tuple),
    camera_box=st.none() | camera_boxes,
)
detection_lists = st.builds(
    DetectionList,
    header=headers,
    detections=st.lists(detections, max_size=6).map(tuple),
    timings_ns=st.dictionaries(texts, st.integers(0, INT64_MAX), max_size=5),
    latency_ns=st.integers(-(2**63), INT64_MAX),
    budget_ok=st.booleans(),
    degraded=st.lists(texts, max_size=3).map(tuple),
    valid=st.booleans(),
)

tracks = st.builds(
    Track,
    track_id=st.integers(0, INT64_MAX),
    label=texts,
    score=st.floats(0, 1),
    center=st.tuples(finite, finite, finite),
    size=st.tuples(*[st.floats(0, 1e6)] * 3),
    yaw=finite,
    velocity_mps=st.tuples(finite, finite),
    center_world=st.tuples(finite, finite, finite),
    yaw_world=finite,
    velocity_world_mps=st.tuples(finite, finite),
    yaw_rate=finite,
    covariance_world=st.tuples(*[finite] * 16),
    age_ns=st.integers(0, INT64_MAX),
    hits=st.integers(0, INT64_MAX),
    misses=st.integers(0, INT64_MAX),
)
track_lists = st.builds(
    TrackList,
    header=headers,
    tracks=st.lists(tracks, max_size=4).map(tuple),
    world_frame=st.sampled_from(["enu", "vehicle"]),
    timings_ns=st.dictionaries(texts, st.integers(0, INT64_MAX), max_size=5),
    resets=st.integers(0, INT64_MAX),
)

counts = st.dictionaries(texts, st.integers(0, INT64_MAX), max_size=4)
sensor_clocks = st.builds(
    SensorClock,
    stream=texts,
    offset_ns=st.none() | st.integers(INT64_MIN, INT64_MAX),
    drift_ppm=finite,
    samples=st.integers(0, INT64_MAX),
    jumps=st.integers(0, INT64_MAX),
    last_jump_stamp_ns=st.none() | st.integers(0, INT64_MAX),
    rejected=st.integers(0, INT64_MAX),
)
sensor_statuses = st.builds(
    SensorStatus,
    stream=texts,
    alive=st.booleans(),
    rate_hz=st.floats(0, 1e6),
    nominal_rate_hz=st.floats(0, 1e6),
    messages=st.integers(0, INT64_MAX),
    outages=st.integers(0, INT64_MAX),
    last_receive_ns=st.none() | st.integers(INT64_MIN, INT64_MAX),
)
triples = st.tuples(finite, finite, finite)
sigmas = st.tuples(*[st.just(-1.0) | st.floats(0, 1e6)] * 3)
calibration_statuses = st.builds(
    CalibrationStatus,
    camera=texts.filter(bool),
    state=st.sampled_from(["collecting", "aligned", "drifted"]),
    rotation_deg=triples,
    translation_m=triples,
    rotation_sigma_deg=sigmas,
    translation_sigma_m=sigmas,
    frames=st.integers(0, INT64_MAX),
    skipped=st.integers(0, INT64_MAX),
    score=finite,
)
realtime_statuses = st.builds(
    RealtimeStatus,
    cpu_affinity=st.lists(st.integers(0, 1023), max_size=8).map(tuple),
    nice=st.integers(-20, 19),
    scheduler=st.sampled_from(["fifo", "other"]),
    gc_hold=st.booleans(),
    refused=st.lists(texts, max_size=3).map(tuple),
)
diagnostics = st.builds(
    Diagnostics,
    header=headers,
    counters=counts,
    overruns_by_stage=counts,
    sync=counts,
    missing_by_stream=counts,
    late_by_stream=counts,
    clocks=st.lists(sensor_clocks, max_size=3).map(tuple),
    budgets_ms=st.dictionaries(texts, st.floats(0, 1e6), max_size=4),
    last_publish_ns=st.integers(0, INT64_MAX),
    last_latency_ns=st.integers(INT64_MIN, INT64_MAX),
    engines=st.lists(texts, max_size=3).map(tuple),
    notes=st.lists(texts, max_size=3).map(tuple),
    realtime=st.none() | realtime_statuses,
    sensors=st.lists(sensor_statuses, max_size=3).map(tuple),
    status=st.sampled_from(["ok", "degraded", "stale", "unknown"]),
    calibration=st.lists(calibration_statuses, max_size=2).map(tuple),
)

#: Every wire message type.
messages: st.SearchStrategy[Message] = st.one_of(
    camera_frames(),
    lidar_sweeps(),
    gnss_fixes,
    rig_messages,
    detection_lists,
    track_lists,
    diagnostics,
)


def assert_same(a: Any, b: Any, path: str = "message") -> None:
    """`a` and `b` are the same message: same types, every field equal, arrays with the same
    dtype, shape and bytes, tuples still tuples."""
    assert type(a) is type(b), f"{path}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape, f"{path}: {a.dtype}{a.shape}"
        assert a.tobytes() == b.tobytes(), f"{path}: array bytes differ"
    elif dataclasses.is_dataclass(a):
        for f in dataclasses.fields(a):
            assert_same(getattr(a, f.name), getattr(b, f.name), f"{path}.{f.name}")
    elif isinstance(a, tuple):
        assert len(a) == len(b), f"{path}: {a!r} != {b!r}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{path}[{i}]")
    elif isinstance(a, float):
        # Bit for bit: -0.0 stays -0.0.
        assert np.float64(a).tobytes() == np.float64(b).tobytes(), f"{path}: {a!r} != {b!r}"
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"
