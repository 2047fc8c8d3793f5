"""The node core's guards against what the fuzzer found (tests/fuzz): a rig nested a thousand
deep costs that message, counted, not the node, whether it comes over the wire (refused at
decode) or straight into the core (refused by calibration); a sweep whose time offsets run past
int64 leaves the clock state, and so the Diagnostics, publishable."""

from __future__ import annotations

import dataclasses

import msgpack
import numpy as np
import pytest

from app.models import SYNTH_CAMERA_MODEL
from perception.config import NodeConfig
from perception.msgs import wire
from perception.msgs.schema import INT64_MAX
from perception.msgs.types import Header, LidarSweep, RigMessage
from perception.node import NodeCore
from perception.pipeline import Pipeline
from replay.synth.world import synth_rig

STAMP_NS = 1_317_000_000_000_000_000


@pytest.fixture(scope="module")
def core_parts() -> tuple[NodeConfig, Pipeline]:
    config = dataclasses.replace(NodeConfig(), camera_model=SYNTH_CAMERA_MODEL)
    return config, Pipeline.from_config(config.camera_model)


def _nested_rig(depth: int) -> list[bytes]:
    """A rig message whose lidar translation is a list nested `depth` deep (raw msgpack:
    msgpack's packer refuses more than 511 levels, its unpacker takes about 1000)."""
    rig = synth_rig().to_dict()
    rig["frames"]["lidar"]["translation"] = "NESTED"
    doc = {
        "type": "RigMessage",
        "version": 1,
        "header": {"stream": "rig", "seq": depth, "stamp_ns": STAMP_NS, "frame_id": "vehicle"},
        "fields": {"rig": rig},
        "buffers": [],
    }
    packed = msgpack.packb(doc, use_bin_type=True)
    return [b"rig", packed.replace(msgpack.packb("NESTED"), b"\x91" * depth + b"\xc0")]


def test_a_deeply_nested_rig_costs_one_message(
    core_parts: tuple[NodeConfig, Pipeline],
) -> None:
    # Nested about 1000 deep, such a rig once decoded and made the rig validation's error
    # message (a repr) exceed the recursion limit: RecursionError escaped the core.
    config, pipeline = core_parts
    core = NodeCore(config, pipeline, synth_rig())
    depths = range(960, 1030, 5)
    for i, depth in enumerate(depths):
        core.on_frames(_nested_rig(depth), STAMP_NS + i)
        # The same document decoded by a reader without the wire's depth bound.
    c, stats = core.counters, core.bundler.stats
    assert c.received == len(depths) and c.decode_errors == len(depths)  # refused at decode
    deep = synth_rig().to_dict()
    nested: object = None
    for _ in range(1000):
        nested = [nested]
    deep["frames"]["lidar"]["translation"] = nested
    core.on_message("rig", RigMessage(Header("rig", 0, STAMP_NS, "vehicle"), deep), STAMP_NS)
    assert stats.bad_rigs == 1 and c.sync_errors == 0  # refused by calibration, not raised

    # The node goes on: a valid sweep after them is filed and bundled.
    points = np.zeros((10, 4), np.float32)
    sweep = LidarSweep(Header("lidar/top", 0, STAMP_NS, "lidar"), points)
    core.on_frames(wire.encode(sweep), STAMP_NS + 10**8)
    (batch,) = core.flush(STAMP_NS + 10**8)
    assert [r.bundle.lidar.header.stamp_ns for r in batch] == [STAMP_NS]


def test_a_sweep_ending_past_int64_leaves_the_diagnostics_publishable(
    core_parts: tuple[NodeConfig, Pipeline],
) -> None:
    config, pipeline = core_parts
    core = NodeCore(config, pipeline, synth_rig())
    points = np.zeros((4, 4), np.float32)
    offsets = np.full(4, 10**9, np.int64)
    # Straight into the core: the wire refuses stamps above 2^62 before they get this far.
    for i, stamp in enumerate((STAMP_NS, INT64_MAX - 10, STAMP_NS + 10**8)):
        sweep = LidarSweep(Header("lidar/top", i, stamp, "lidar"), points, offsets)
        core.on_message("lidar/top", sweep, STAMP_NS + (i + 1) * 10**8)
    wire.encode(core.diagnostics(STAMP_NS + 10**9))  # raises WireError if out of range
