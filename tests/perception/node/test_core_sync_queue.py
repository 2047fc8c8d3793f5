"""A sync queue too small for the sweeps waiting for their cameras: the sweeps it drops were
counted on diagnostics alone (a replay with `sync.queue_size: 1` wrote 1 DetectionList of 100,
exit 0, without a word). The core now logs them, at a bounded rate."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pytest

from app.models import SYNTH_CAMERA_MODEL
from perception.config import NodeConfig
from perception.msgs.types import Header, LidarSweep
from perception.node import NodeCore
from perception.pipeline import Pipeline
from replay.synth.world import synth_rig

STAMP_NS = 1_317_000_000_000_000_000
MS = 1_000_000


def test_sweeps_dropped_for_a_full_sync_queue_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    base = NodeConfig()
    config = dataclasses.replace(
        base,
        camera_model=SYNTH_CAMERA_MODEL,
        sync=dataclasses.replace(base.sync, queue_size=1),
    )
    core = NodeCore(config, Pipeline.from_config(config.camera_model), synth_rig())
    points = np.zeros((10, 4), np.float32)
    with caplog.at_level(logging.WARNING, logger="perception.node"):
        # Three sweeps in a burst, their camera not yet in: each waits for it, and the queue
        # holds one.
        for i in range(3):
            sweep = LidarSweep(Header("lidar/top", i, STAMP_NS + i * 100 * MS, "lidar"), points)
            core.on_message("lidar/top", sweep, STAMP_NS + i * 10 * MS)
    assert core.bundler.stats.dropped_sweeps_queue_full == 2
    said = [r.getMessage() for r in caplog.records if "sync queue is full" in r.getMessage()]
    assert said == [
        "lidar/top: the oldest sweep waiting for its cameras was dropped: the sync queue is full "
        "(sync.queue_size 1, queue_bytes 134217728); 1 dropped so far"
    ]  # the second within the rate limit's interval: held, not logged
