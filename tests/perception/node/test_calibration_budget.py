"""The live node's bound on the calibration monitor's CPU time (`CpuBudget`,
`calibration_monitor.budget_ms_per_sweep`): a monitor over budget passes due sweeps over,
counted, and takes them again once the sweeps have paid its time back; it is charged the
monitor thread's CPU time, not the time it waited."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from app.models import build_pipeline, choose_camera_model
from perception.config import CalibrationMonitorConfig, NodeConfig, load_config
from perception.errors import ConfigError
from perception.node.calibration import CpuBudget
from perception.node.core import NodeCore
from perception.node.node import Node
from perception.pipeline.pipeline import StepFrame
from replay.offline import open_source, run_core


def test_the_budget_is_paid_per_sweep_and_capped_by_the_burst() -> None:
    budget = CpuBudget(per_sweep_ns=2_000_000, burst_ns=10_000_000)
    assert budget.allows() and budget.credit_ns == 10_000_000
    budget.spend(25_000_000)  # a search: 25 ms
    assert not budget.allows()
    budget.accrue(7)  # 14 ms back: still 1 ms short
    assert not budget.allows()
    budget.accrue(1)
    assert budget.allows() and budget.credit_ns == 1_000_000
    budget.accrue(1000)  # an idle monitor saves no more than the burst
    assert budget.credit_ns == 10_000_000


def test_no_budget_never_holds_the_monitor() -> None:
    budget = CpuBudget.of(CalibrationMonitorConfig(budget_ms_per_sweep=0.0))
    budget.spend(10**12)
    assert budget.allows()


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("budget_ms_per_sweep", "-1.0", "budget_ms_per_sweep: must be >= 0"),
        ("budget_ms_per_sweep", ".nan", "budget_ms_per_sweep: must be >= 0"),
        ("budget_burst_ms", "0", "budget_burst_ms: must be > 0"),
    ],
)
def test_a_bad_budget_is_named(tmp_path: Path, key: str, value: str, match: str) -> None:
    path = tmp_path / "node.yaml"
    path.write_text(f"calibration_monitor:\n  {key}: {value}\n")
    with pytest.raises(ConfigError, match=match):
        load_config(path)


def _frames(drive: Path, config: NodeConfig) -> tuple[NodeCore, list[StepFrame]]:
    opened = open_source(drive, config, topics_from_drive=True)
    core = NodeCore(opened.config, build_pipeline(config), opened.default_rig)
    core.calibration = None  # the frames only; the node under test has its own core
    frames = []
    for _ in run_core(core, opened.received):
        assert core.pipeline.last_frame is not None
        frames.append(core.pipeline.last_frame)
    return core, frames[:6]


def _offer_all(node: Node, frames: list[StepFrame]) -> None:
    for frame in frames:
        node._offer_calibration(frame)
        deadline = time.monotonic() + 30.0
        while (node._calibration_frame is not None or node._calibration_busy) and (
            time.monotonic() < deadline
        ):
            time.sleep(0.005)
    node._stop_calibration()


def _node(drive: Path, **monitor: Any) -> tuple[Node, list[StepFrame]]:
    """A live node (its own core, no sockets) whose monitor takes every sweep, with the
    calibration monitor's settings `monitor`, and the frames of `drive` to offer it."""
    base = choose_camera_model(NodeConfig(), None, config_given=False, synthetic=True)
    config = replace(
        base,
        calibration_monitor=replace(base.calibration_monitor, every_n_sweeps=1, **monitor),
    )
    core, frames = _frames(drive, config)
    node = Node(config, core.pipeline)
    node.core = NodeCore(config, core.pipeline)
    return node, frames


@pytest.mark.parametrize("budget_ms", [0.0, 0.01])
def test_a_monitor_over_budget_passes_sweeps_over(rich_drive: Path, budget_ms: float) -> None:
    node, frames = _node(rich_drive, budget_ms_per_sweep=budget_ms, budget_burst_ms=0.01)
    _offer_all(node, frames)
    counters = node.core.counters
    if budget_ms == 0.0:
        assert (counters.calibration_sweeps, counters.calibration_over_budget) == (6, 0)
    else:
        # The first sweep spends far more than the 0.01 ms a sweep pays back.
        assert (counters.calibration_sweeps, counters.calibration_over_budget) == (1, 5)
    assert counters.calibration_errors == 0


def test_the_budget_is_charged_the_monitors_cpu_time_not_its_waits(rich_drive: Path) -> None:
    # Live, the monitor's thread waits while the pipeline has the cores (it is nicer, and
    # shares the GIL): that wait costs the cores nothing and must not pass sweeps over.
    node, frames = _node(rich_drive, budget_ms_per_sweep=1000.0, budget_burst_ms=1000.0)
    watch = node.core.calibration
    assert watch is not None
    observe = watch.observe

    def held_back(frame: StepFrame) -> None:
        time.sleep(0.3)  # waiting, as for the cores
        observe(frame)

    watch.observe = held_back  # type: ignore[method-assign]
    _offer_all(node, frames[:1])
    counters = node.core.counters
    assert counters.calibration_sweeps == 1
    assert counters.calibration_ns - counters.calibration_cpu_ns >= 300_000_000
    assert counters.calibration_cpu_ns > 0
    assert node._calibration_budget.credit_ns == 1_000_000_000 - counters.calibration_cpu_ns


@pytest.mark.parametrize("nicer_by", [10, 0])
def test_the_monitor_thread_runs_nicer_than_the_pipeline(rich_drive: Path, nicer_by: int) -> None:
    node, frames = _node(rich_drive, thread_nice=nicer_by)
    mine = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    try:
        node._offer_calibration(frames[0])
        thread = node._calibration_thread
        assert thread is not None and thread.native_id is not None
        deadline = time.monotonic() + 30.0
        while node._calibration_busy or node._calibration_frame is not None:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        assert os.getpriority(os.PRIO_PROCESS, thread.native_id) == min(mine + nicer_by, 19)
        assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == mine
    finally:
        node._stop_calibration()
    assert node.core.counters.calibration_sweeps == 1


def test_a_bad_thread_nice_is_named(tmp_path: Path) -> None:
    path = tmp_path / "node.yaml"
    path.write_text("calibration_monitor:\n  thread_nice: 20\n")
    with pytest.raises(ConfigError, match=r"thread_nice: must be 0\.\.19"):
        load_config(path)
