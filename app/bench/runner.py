"""`run_bench`: start the node, play sweeps into it at a fixed rate and measure its answers.

`run_bench` starts `perception run` as a child process (its own interpreter, so the player's
work never holds the node's GIL) with a config written to the output folder and ipc endpoints
of its own, plays sweeps into it over ZeroMQ at a fixed rate, looping the drive (restamped as
app.bench.sweeps describes), and reads the DetectionLists and the 1 Hz diagnostics
frames back.

A sent sweep counts as received when a DetectionList with its stamp arrives before `drain_s`
after the last send (or before the node has been quiet for twice the longest latency of the
run). Each step of the max-rate search is a run of its own (at most `MAX_RATE_TRIAL_S`, and
`EDGE_TRIAL_S` at the edge) on the same node, its dropped fraction scaled by the rate the
player achieved (a rate it cannot send is not sustained); the full run is then made at the
rate found.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import threading
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from app.bench.device import ResolvedEngines, resolve_engines
from app.bench.machine import MachineInfo, machine_info
from app.bench.node_child import Answer, Collector, NodeChild, UsageSampler
from app.bench.report import BenchResult, stage_report
from app.bench.settings import (
    EDGE_TRIAL_S,
    MAX_RATE_TRIAL_S,
    BenchInterruptedError,
    BenchSettings,
    Progress,
    check_settings,
)
from app.bench.soak import Soak, soak_summary
from app.bench.stats import (
    Frame,
    MaxRateSearch,
    SweepAccounting,
    account,
    find_max_rate,
    frame_ratio,
    latency_stats,
    node_overhead,
    process_usage,
    stage_stats,
)
from app.bench.sweeps import (
    Sweep,
    lidar_of,
    node_config_document,
    plain,
    restamp_sweep,
    send_times,
    sweep_span_ns,
    with_engines,
)
from app.bench.yardstick import FRAME_TARGET_RATIO, time_camera_encoder
from calibration import Rig
from perception.config import NodeConfig
from perception.errors import PerceptionError
from perception.io.transport import Publisher
from replay.output import atomic_output, output_dir

__all__ = ["NODE_FILES", "RIG_FILE", "run_bench"]

#: The node's config and output, written beside the report (`RIG_FILE` too, where the config
#: names no rig and the drive holds one).
NODE_FILES = ("node.yaml", "node.log")
RIG_FILE = "rig.yaml"


@dataclass(frozen=True)
class _Run:
    """One measured run: what was sent (stamps and sweep spans, in send order), what came back
    and the node's figures over it."""

    rate_hz: float
    sent_stamps: tuple[int, ...]
    spans_ns: tuple[int, ...]
    answers: tuple[Answer, ...]
    skipped_bundles: int | None
    usage: tuple[tuple[float, int], ...]
    diagnostics: dict[str, Any] | None
    # Over time: the usage samples with their wall time (ns), the node's counters before the
    # run and on each diagnostics frame during it (stamp ns, counters).
    usage_timed: tuple[tuple[int, float, int], ...] = ()
    counters_before: dict[str, int] | None = None
    counters_timeline: tuple[tuple[int, dict[str, int]], ...] = ()

    def accounting(self) -> SweepAccounting:
        answered = ((a.stamp_ns, a.degraded) for a in self.answers)
        return account(self.sent_stamps, answered, self.skipped_bundles)

    def send_rate_hz(self) -> float:
        """The rate the player achieved (the asked one with fewer than two sends)."""
        stamps = self.sent_stamps
        if len(stamps) < 2:
            return self.rate_hz
        return (len(stamps) - 1) / ((stamps[-1] - stamps[0]) / 1e9)

    def throughput_hz(self) -> float | None:
        """Answers to this run's sweeps per second, between its first answer and its last;
        None with fewer than two (one answer is no rate: counted from the first send, a run of
        one sweep at 0.01 Hz reported 7.2 a second, one over its response time)."""
        sent = set(self.sent_stamps)
        received = sorted(a.received_ns for a in self.answers if a.stamp_ns in sent)
        if len(received) < 2 or received[-1] <= received[0]:
            return None
        return (len(received) - 1) / ((received[-1] - received[0]) / 1e9)

    def soak(self, window_s: float) -> Soak:
        """The run over time (app.bench.soak), times from its first send."""
        frames, dropped = self.frames()
        t0 = self.sent_stamps[0]
        after = (self.diagnostics or {}).get("counters")
        return soak_summary(
            frames,
            dropped,
            [((ns - t0) / 1e9, cpu, rss) for ns, cpu, rss in self.usage_timed],
            [((ns - t0) / 1e9, c) for ns, c in self.counters_timeline],
            counters_before=self.counters_before,
            counters_after=after if isinstance(after, dict) else None,
            window_s=window_s,
        )

    def frames(self) -> tuple[tuple[Frame, ...], tuple[float, ...]]:
        """The answered sweeps as Frames (in send order) and the send times of the dropped
        ones."""
        t0 = self.sent_stamps[0]
        first: dict[int, Answer] = {}
        for a in self.answers:
            first.setdefault(a.stamp_ns, a)
        frames: list[Frame] = []
        dropped: list[float] = []
        for stamp, span in zip(self.sent_stamps, self.spans_ns, strict=True):
            answer = first.get(stamp)
            sent_s = (stamp - t0) / 1e9
            if answer is None:
                dropped.append(sent_s)
            else:
                a = answer
                frames.append(Frame(sent_s, a.latency_ns, span, a.timings_ns, a.degraded))
        return tuple(frames), tuple(dropped)


def _skipped(before: dict[str, Any] | None, after: dict[str, Any] | None) -> int | None:
    def value(doc: dict[str, Any] | None) -> int | None:
        counters = doc.get("counters") if doc else None
        n = counters.get("skipped_bundles") if isinstance(counters, dict) else None
        return int(n) if isinstance(n, int | float) else None

    a, b = value(before), value(after)
    return None if a is None or b is None else b - a


class _Player:
    """Plays the sweeps into the node and measures runs; owns the PUB socket."""

    def __init__(
        self,
        sweeps: Sequence[Sweep],
        publisher: Publisher,
        collector: Collector,
        node: NodeChild,
        *,
        settings: BenchSettings,
        stop: threading.Event,
    ) -> None:
        self.sweeps = sweeps
        self.publisher = publisher
        self.collector = collector
        self.node = node
        self.settings = settings
        self.stop = stop
        self._cursor = 0
        self._last_stamp = 0
        self._diagnostics: dict[str, Any] | None = None

    def _send_next(self, due_ns: int | None = None) -> tuple[int, int]:
        """Send the next sweep, complete at the host time `due_ns` (None: now), its other
        messages at their own stamps before it (`send_times`), waiting for each; its (lidar)
        stamp and span.

        Raises:
            BenchInterruptedError: `stop` was set while waiting.
        """
        recorded = self.sweeps[self._cursor % len(self.sweeps)]
        span = sweep_span_ns(lidar_of(recorded))
        # Stamps identify the answers: keep them unique even if the clock stood still.
        send_ns = max(time.time_ns() if due_ns is None else due_ns, self._last_stamp + 1 + span)
        for at_ns, topic, msg in send_times(restamp_sweep(recorded, send_ns)):
            delay_s = (at_ns - time.time_ns()) / 1e9
            if delay_s > 0 and self.stop.wait(delay_s):
                raise BenchInterruptedError("interrupted")
            self.publisher.send(msg, topic)
        self._cursor += 1
        self._last_stamp = send_ns - span
        return self._last_stamp, span

    def _tick(self) -> None:
        """A short wait between polls. Raises BenchInterruptedError (`stop` set) or
        PerceptionError (the node exited)."""
        if self.stop.wait(0.02):
            raise BenchInterruptedError("interrupted")
        self.node.check_alive()

    def _wait_answered(
        self, stamps: set[int], start: int, timeout_s: float, *, every: bool = True
    ) -> bool:
        """Until every stamp in `stamps` (`every` False: any of them) is answered by the
        answers from the `start`-th on (True), or `timeout_s` passes (False)."""
        deadline = time.monotonic() + timeout_s
        while True:
            got = {a.stamp_ns for a in self.collector.answers(start)}
            if stamps <= got if every else not stamps.isdisjoint(got):
                return True
            if time.monotonic() > deadline:
                return False
            self._tick()

    def _drain(self, stamps: set[int], start: int) -> None:
        """After the last send: until every stamp is answered, `drain_s` passed, or no answer
        came for twice the longest latency of the run (at least 1 s): the node skipped the
        rest."""
        now = time.monotonic()
        deadline = now + self.settings.drain_s
        count, changed = -1, now
        while True:
            answers = self.collector.answers(start)
            if stamps <= {a.stamp_ns for a in answers}:
                return
            now = time.monotonic()
            if len(answers) != count:
                count, changed = len(answers), now
            longest_s = max((a.latency_ns for a in answers), default=0) / 1e9
            if now > deadline or now - changed > max(1.0, 2.0 * longest_s):
                return
            self._tick()

    def connect(self) -> None:
        """Send one sweep a second until the node answers one (ZeroMQ drops what is sent
        before the node's subscription arrives), then the warm-up sweeps one at a time, then
        take the node's counters as the reference of the first run."""
        deadline = time.monotonic() + self.settings.connect_timeout_s
        start = self.collector.count()
        sent: set[int] = set()
        while True:
            sent.add(self._send_next()[0])
            if self._wait_answered(sent, start, 1.0, every=False):
                break
            if time.monotonic() > deadline:
                raise PerceptionError(
                    f"the node answered none of {len(sent)} sweeps in "
                    f"{self.settings.connect_timeout_s:.0f} s: {self.node.tail()}"
                )
        for _ in range(self.settings.warmup_sweeps):
            start = self.collector.count()
            self._wait_answered({self._send_next()[0]}, start, 5.0)
        self._diagnostics = self._diagnostics_after(time.time_ns())

    def _diagnostics_after(self, stamp_ns: int) -> dict[str, Any] | None:
        """The node's first diagnostics frame stamped after `stamp_ns` (None after 2.5 s).
        Raises PerceptionError when the node exits meanwhile: a node killed after its last
        answer gave a report as if the run had been whole (its counters missing)."""
        return self.collector.diagnostics_after(
            stamp_ns, 2.5, self.stop, alive=self.node.check_alive
        )

    def measure(
        self, rate_hz: float, duration_s: float, label: str, progress: Progress | None
    ) -> _Run:
        """One run: `rate_hz` for `duration_s`, then the drain and the node's counters."""
        n = max(1, round(rate_hz * duration_s))
        period_ns = 1e9 / rate_hz
        start_answers = self.collector.count()
        sampler = UsageSampler(self.node.pid, self.settings.sample_period_s)
        sampler.start()
        stamps: list[int] = []
        spans: list[int] = []
        t0 = time.time_ns() + 10_000_000
        try:
            for i in range(n):
                self.node.check_alive()
                stamp, span = self._send_next(round(t0 + i * period_ns))
                stamps.append(stamp)
                spans.append(span)
                if progress is not None:
                    progress(i + 1, n, label)
        finally:
            usage = sampler.stop()
        self._drain(set(stamps), start_answers)
        after = self._diagnostics_after(time.time_ns())
        before = self._diagnostics
        skipped = _skipped(before, after)
        self._diagnostics = after or self._diagnostics
        timeline: tuple[tuple[int, dict[str, int]], ...] = ()
        if stamps and after is not None:
            end_ns = int(after["header"]["stamp_ns"])
            timeline = tuple(self.collector.counters_between(stamps[0], end_ns))
        counters = (before or {}).get("counters")
        return _Run(
            rate_hz=rate_hz,
            sent_stamps=tuple(stamps),
            spans_ns=tuple(spans),
            answers=tuple(self.collector.answers(start_answers)),
            skipped_bundles=skipped,
            usage=tuple(usage),
            diagnostics=after,
            usage_timed=tuple(sampler.timed()),
            counters_before=dict(counters) if isinstance(counters, dict) else None,
            counters_timeline=timeline,
        )

    def search_max_rate(
        self, start_hz: float, trial_s: float, edge_s: float, progress: Progress | None
    ) -> MaxRateSearch:
        """`find_max_rate` from `start_hz` with runs of `trial_s` on this node, `edge_s` at
        the edge."""

        def measure(rate_hz: float, edge: bool) -> float:
            seconds = edge_s if edge else trial_s
            label = f"{'edge' if edge else 'trial'} {rate_hz:.2f} Hz"
            run = self.measure(rate_hz, seconds, label, progress)
            dropped = run.accounting().dropped_fraction
            # A rate the player itself could not send is not sustained either.
            return 1.0 - (1.0 - dropped) * min(1.0, run.send_rate_hz() / rate_hz)

        return find_max_rate(measure, start_hz)


def _load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def _result(
    run: _Run,
    *,
    source: str,
    settings: BenchSettings,
    config: NodeConfig,
    device: ResolvedEngines,
    node_config: dict[str, Any],
    search: MaxRateSearch | None,
    machine: MachineInfo,
    load_before: float | None,
    camera_alone_ms: float | None = None,
) -> BenchResult:
    frames, dropped_s = run.frames()
    load_after = _load_average()
    return BenchResult(
        source=source,
        rate_hz=run.rate_hz,
        duration_s=settings.duration_s,
        backend=config.engines.backend,
        device=device.description,
        device_requested=device.requested,
        node_config=node_config,
        machine=machine,
        sweeps=run.accounting(),
        throughput_hz=run.throughput_hz(),
        send_rate_hz=run.send_rate_hz(),
        end_to_end=latency_stats([f.latency_ns for f in frames]),
        response=latency_stats([f.response_ns for f in frames]),
        stages=stage_stats(frames),
        node_overhead=node_overhead(frames),
        node_process=process_usage(run.usage, settings.sample_period_s),
        max_rate=search,
        node_diagnostics=dict(run.diagnostics or {}),
        frames=frames,
        dropped_sent_s=dropped_s,
        host_load_1m=None
        if load_before is None or load_after is None
        else (load_before, load_after),
        soak=run.soak(settings.window_s),
        frame_ratio=frame_ratio(frames, camera_alone_ms, FRAME_TARGET_RATIO),
    )


@dataclass(frozen=True)
class _Plan:
    """The node's config document (as saved: naming `out_dir/rig.yaml`), where the node reads
    it from during the run, and its endpoints and output topics."""

    document: dict[str, Any]
    path: Path
    sensors: str
    detections: str
    topics: tuple[str, str]


def _plan(
    config: NodeConfig, out_dir: Path, sockets: Path, rig: Rig | None, files: ExitStack
) -> _Plan:
    """Writes the node's config (and the drive's rig when the config has none) for the run.
    They are the temporary files of `out_dir/node.yaml` and `out_dir/rig.yaml`, renamed when
    `files` closes without an error: a failed run leaves the previous run's files as they
    were, and the saved node.yaml names the saved rig.yaml."""
    sensors, detections = f"ipc://{sockets}/sensors", f"ipc://{sockets}/detections"
    rig_tmp = saved_rig = None
    if rig and config.rig is None:
        saved_rig = out_dir / RIG_FILE
        rig_tmp = files.enter_context(atomic_output(saved_rig, "the bench's rig file"))
        rig_tmp.write_text(yaml.safe_dump(plain(rig.to_dict()), sort_keys=False))
    node_tmp = files.enter_context(
        atomic_output(out_dir / NODE_FILES[0], "the bench's node config")
    )
    node_tmp.write_text(
        yaml.safe_dump(node_config_document(config, sensors, detections, rig_tmp), sort_keys=False)
    )
    doc = node_config_document(config, sensors, detections, saved_rig)
    topics = (config.outputs.detections_topic, config.outputs.diagnostics_topic)
    return _Plan(doc, node_tmp, sensors, detections, topics)


def run_bench(
    sweeps: Sequence[Sweep],
    config: NodeConfig,
    settings: BenchSettings,
    out_dir: Path,
    *,
    source: str,
    rig: Rig | None = None,
    stop: threading.Event | None = None,
    progress: Progress | None = None,
    report: bool = False,
) -> BenchResult:
    """Benchmark `perception run` with `config` (endpoints replaced by fresh ipc ones, engines
    as `settings.backend`/`settings.device` ask, the device checked and resolved first:
    app.bench.device) on `sweeps` (see `group_sweeps`), as the module docstring describes.
    Writes the node's config (`node.yaml`, and `rig.yaml` when `rig` is given and the config
    has none) and its output (`node.log`) into `out_dir` when the run succeeds, with `report`
    the report too (app.bench.report.stage_report): all of them replace earlier ones at once,
    when all are written, so that a failed or interrupted run (also while the report is
    written) leaves the folder as it was, and no report beside another run's node files. A
    run that fails removes the `out_dir` it created (left empty) again. `source` names the
    drive in the result. `stop` set: BenchInterruptedError. The node is stopped before this
    returns or raises.

    Raises:
        PerceptionError: bad settings, no sweeps, a device that is not usable here, an output
            folder that cannot be written, the node failed to start, exited or never answered
            (the message carries its last output lines).
        BenchInterruptedError: `stop` was set.
    """
    check_settings(settings)
    if not sweeps:
        raise PerceptionError(f"{source}: no sweeps to play")
    stop = stop or threading.Event()
    config = with_engines(config, settings.backend, settings.device)
    resolved = resolve_engines(config.engines)
    config = dataclasses.replace(config, engines=resolved.engines)
    # A folder the bench creates is removed again if the run fails before writing into it.
    with output_dir(out_dir, "the bench's output") as folder:
        # Absolute: the node child is started with its config's path from another folder's
        # view.
        return _bench(
            sweeps,
            config,
            settings,
            folder.resolve(),
            source=source,
            rig=rig,
            stop=stop,
            resolved=resolved,
            progress=progress,
            report=report,
        )


def _bench(
    sweeps: Sequence[Sweep],
    config: NodeConfig,
    settings: BenchSettings,
    out_dir: Path,
    *,
    source: str,
    rig: Rig | None,
    stop: threading.Event,
    resolved: ResolvedEngines,
    progress: Progress | None,
    report: bool,
) -> BenchResult:
    """`run_bench`'s run, its arguments checked and `out_dir` created."""
    # The yardstick first, while the machine is quiet (no node yet).
    camera_alone = time_camera_encoder(config, sweeps)
    _check_stop(stop)  # a Ctrl-C while it ran: no node is started for nothing
    load_before = _load_average()
    # ipc paths are limited to ~100 characters: sockets in a short temporary folder.
    with (
        tempfile.TemporaryDirectory(prefix="perception-bench-") as sockets,
        ExitStack() as files,
    ):
        plan = _plan(config, out_dir, Path(sockets), rig, files)
        log = files.enter_context(atomic_output(out_dir / NODE_FILES[1], "the node's log"))
        with (
            Publisher(plan.sensors, bind=True, hwm=100_000, limits=config.limits) as publisher,
            Collector(plan.detections, *plan.topics, limits=config.limits) as collector,
            NodeChild(plan.path, log_path=log) as node,
        ):
            node.wait_ready(settings.ready_timeout_s, stop)
            player = _Player(sweeps, publisher, collector, node, settings=settings, stop=stop)
            player.connect()
            search = None
            rate = settings.rate_hz
            if settings.find_max_rate:
                trial_s = min(settings.duration_s, MAX_RATE_TRIAL_S)
                edge_s = min(settings.duration_s, EDGE_TRIAL_S)
                search = player.search_max_rate(rate, trial_s, edge_s, progress)
                rate = search.rate_hz or rate
            run = player.measure(rate, settings.duration_s, f"{rate:.2f} Hz", progress)
            machine = machine_info()  # while the node runs: GPU clocks under load
            # Dead before it was asked to stop (killed after its last answer): no whole run.
            node.check_alive()
        result = _result(
            run,
            source=source,
            settings=settings,
            config=config,
            device=resolved,
            node_config=plan.document,
            search=search,
            machine=machine,
            load_before=load_before,
            camera_alone_ms=None if camera_alone is None else camera_alone.median_ms,
        )
        if report:
            stage_report(result, out_dir, files)
        # The run succeeded: the saved node.yaml names the saved rig.yaml (all renamed as
        # `files` closes).
        plan.path.write_text(yaml.safe_dump(plan.document, sort_keys=False))
        # A signal after the node stopped set `stop` and nothing read it: the report was
        # written and the bench exited 0, as if the Ctrl-C had not been pressed.
        _check_stop(stop)
    return result


def _check_stop(stop: threading.Event) -> None:
    if stop.is_set():
        raise BenchInterruptedError("interrupted")
