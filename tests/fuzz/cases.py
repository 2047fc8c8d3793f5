"""The fuzz cases: one received multipart message each, with its receive time.

A `CaseGenerator` plays a vehicle: sensor time advances one lidar period per tick, and each tick
sends a scene's GNSS fix, camera frame and lidar sweep (and a rig when the calibration changes
or now and then), in a shuffled order, each received a transport delay after its stamp, on a
host clock that never goes back (now and then it stalls; now and then the sensor clock jumps).
Every message it sends is one of:

- `valid`: the seed as the sensor sends it (so bundles form and the pipeline runs);
- `wire`: the seed mutated on the wire (tests.fuzz.wire_mutations);
- `value`: a valid message with hostile values, encoded by the real encoder
  (tests.fuzz.value_mutations), sometimes mutated on the wire as well;
- `extra`: an out-of-turn message: a seed from another scene at a stale or future stamp, a
  message repeated, a DetectionList or Diagnostics (not an input), or garbage frames.

The generator asks its `Source` for every choice, so a seed (or hypothesis, or atheris) makes
the sequence reproducible. `Case.label` says what was done, for findings.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from dataclasses import dataclass
from typing import Any

from perception.config import NodeConfig
from perception.errors import WireError
from perception.msgs import wire
from perception.msgs.types import CameraFrame, GnssFix, LidarSweep, RigMessage
from tests.fuzz.corpus import Corpus, Scene, Template
from tests.fuzz.sources import Source, choice, weighted
from tests.fuzz.value_mutations import (
    camera_message,
    fix_message,
    header_message,
    rig_message,
    sweep_message,
)
from tests.fuzz.wire_mutations import START_NS, mutate_document, mutate_wire

__all__ = ["Case", "CaseGenerator"]

PERIOD_NS = 100_000_000
MS = 1_000_000
#: A host stall longer than the collector's timeout: bundles come out degraded.
RECEIVE_STALL_NS = 400 * MS


@dataclass
class Case:
    """One message to receive: its wire `frames` at host time `receive_ns`; `label` says how
    it was made. `bundle`: for a finding of a pipeline step, the SyncedBundle it was about."""

    frames: list[Any]
    receive_ns: int
    label: str
    bundle: Any = None


@dataclass
class _Planned:
    template: Template
    stamp_ns: int
    receive_ns: int


class CaseGenerator:
    """Makes the cases of one vehicle (see the module docstring) from `corpus`, on `config`'s
    topics. `others`: templates of messages that are not sensor inputs."""

    def __init__(self, corpus: Corpus, config: NodeConfig, others: list[Template]) -> None:
        self.corpus = corpus
        self.config = config
        self.others = others
        self.tick_ns = START_NS
        self.last_receive_ns = START_NS
        # Host minus sensor clock: it grows when the sensor clock steps back, so that host
        # time keeps advancing a period per tick.
        self.host_offset_ns = 0
        self.seq = 0
        self._scene = corpus.scenes[0]
        self._plan: deque[_Planned] = deque()
        self._recent: deque[list[Any]] = deque(maxlen=16)

    # -- the drive

    def _tick(self, src: Source) -> None:
        """The next lidar period's messages, in the order they arrive."""
        step = PERIOD_NS
        if src.chance(0.02):
            step = choice(src, (0, PERIOD_NS // 3, 2 * PERIOD_NS, 10**9, 30 * 10**9))
        elif src.chance(0.003):
            step = -choice(src, (PERIOD_NS, 10**9, 10**12))  # the sensor clock steps back
        if step < 0:
            self.host_offset_ns += PERIOD_NS - step
        self.tick_ns += step
        rig_too = src.chance(0.02)
        if src.chance(0.05):
            other = choice(src, self.corpus.scenes)
            rig_too = rig_too or other.source != self._scene.source
            self._scene = other
        scene: Scene = self._scene
        # Offsets from the sweep stamp (camera mid-exposure within the window) and the delay
        # until each arrives (a sweep leaves the sensor once complete).
        plan = [
            (scene.camera, src.integer(-8, 8) * MS, src.integer(5, 40) * MS),
            (scene.sweep, 0, PERIOD_NS + src.integer(1, 15) * MS),
            (scene.gnss, src.integer(0, 10) * MS, src.integer(1, 5) * MS),
        ]
        if rig_too:
            plan.insert(0, (scene.rig, 0, 0))
        if src.chance(0.3):
            i, j = src.integer(0, len(plan) - 1), src.integer(0, len(plan) - 1)
            plan[i], plan[j] = plan[j], plan[i]
        for tmpl, offset_ns, delay_ns in plan:
            stamp = self.tick_ns + offset_ns
            self._plan.append(_Planned(tmpl, stamp, stamp + self.host_offset_ns + delay_ns))

    def _receive_ns(self, src: Source, wanted_ns: int) -> int:
        """A host receive time at or after `wanted_ns` that never goes back; now and then the
        host stalls."""
        receive = max(self.last_receive_ns + 1, wanted_ns)
        if src.chance(0.01):
            receive += choice(src, (RECEIVE_STALL_NS, 10**9, 5 * 10**9))
        self.last_receive_ns = receive
        return receive

    # -- cases

    def next_case(self, src: Source) -> Case:
        """The next message to receive."""
        if not self._plan:
            self._tick(src)
        kind = weighted(src, ((30, "valid"), (38, "wire"), (17, "value"), (15, "extra")))
        if kind == "extra":
            frames, label = self._extra(src)
            receive = self._receive_ns(src, self.last_receive_ns + src.integer(0, 20) * MS)
        else:
            planned = self._plan.popleft()
            tmpl = planned.template
            receive = self._receive_ns(src, planned.receive_ns)
            self.seq += 1
            label = f"{tmpl.origin} {tmpl.kind}"
            if kind == "value":
                frames, what = self._valued(src, tmpl, planned.stamp_ns)
                label += f" | value: {what}"
            else:
                frames = tmpl.frames(planned.stamp_ns, self.seq)
            if kind == "wire" or (kind == "value" and src.chance(0.15)):
                label += f" | wire: {mutate_wire(src, frames)}"
            label = f"{kind}: {label}"
        self._recent.append(frames)
        return Case(frames, receive, label)

    def _valued(self, src: Source, tmpl: Template, stamp_ns: int) -> tuple[list[Any], str]:
        """The template's message with hostile but valid values, encoded; when the encoder
        refuses it, the template with a document edit instead."""
        msg = tmpl.message
        msg = dataclasses.replace(
            msg,
            header=dataclasses.replace(msg.header, stamp_ns=stamp_ns, seq=self.seq),
        )
        if src.chance(0.25):
            msg, what = header_message(src, msg, self.tick_ns)
        elif isinstance(msg, LidarSweep):
            msg, what = sweep_message(src, msg, self.config.limits.max_points)
        elif isinstance(msg, CameraFrame):
            msg, what = camera_message(src, msg, self.corpus.encoded_images)
        elif isinstance(msg, GnssFix):
            msg, what = fix_message(src, msg)
        elif isinstance(msg, RigMessage):
            msg, what = rig_message(src, msg)
        else:
            what = "as is"
        try:
            return list(wire.encode(msg, tmpl.topic)), what
        except WireError as e:
            frames = tmpl.frames(stamp_ns, self.seq)
            edited = mutate_document(src, frames)
            return frames, f"{what} (refused by the encoder: {e.problem:.60}) -> {edited}"

    def _extra(self, src: Source) -> tuple[list[Any], str]:
        """An out-of-turn message."""
        kind = weighted(
            src, ((4, "other scene"), (3, "repeat"), (2, "not an input"), (2, "garbage"))
        )
        if kind == "repeat" and self._recent:
            frames = list(choice(src, list(self._recent)))
            return frames, "extra: repeat of a recent message"
        if kind == "not an input" and self.others:
            tmpl = choice(src, self.others)
            frames = tmpl.frames(self.tick_ns, self.seq)
            label = f"extra: {tmpl.origin}"
            if src.chance(0.5):
                label += f" | wire: {mutate_wire(src, frames)}"
            return frames, label
        if kind == "garbage":
            n = src.integer(0, 6)
            frames = [src.raw(choice(src, (0, 1, 8, 100, 4096))) for _ in range(n)]
            if frames and src.chance(0.5):
                frames[0] = choice(src, (b"lidar/top", b"camera/front", b"rig", b"gnss"))
            return frames, f"extra: {n} garbage frames"
        tmpl = choice(src, self.corpus.templates())
        offset = choice(src, (-10 * PERIOD_NS, -PERIOD_NS, 0, PERIOD_NS // 2, 5 * PERIOD_NS))
        frames = tmpl.frames(max(0, self.tick_ns + offset), self.seq)
        label = f"extra: {tmpl.origin} {tmpl.kind} at tick {offset / PERIOD_NS:+.1f}"
        if src.chance(0.3):
            label += f" | wire: {mutate_wire(src, frames)}"
        return frames, label
