"""The drive as `perception bench` plays it: messages grouped by lidar sweep and restamped to
the send time, and the node config that reads them.

Timing: a lidar sweep is sent when it is complete, as a live lidar delivers it: the messages of
each sweep are restamped so that the sweep's last point (its stamp + its largest per-point time
offset; the stamp itself without offsets) is the host time it is sent, the others keeping their
recorded offset to the sweep (a camera exposed 62 ms into the sweep stays 62 ms after its stamp).
Each other message is sent at its own stamp, the instant it was captured (`send_times`): a camera
that fired mid-sweep reaches the node before the sweep is complete, as on a car (none is sent after
its sweep). So the node sees current stamps and a lidar clock that agrees with the host, and its
`latency_ns` (sensor-to-publish, from the sweep stamp) is the sweep's own span plus the node's
*response*: from handing it the complete sweep to publishing its detections.
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from engines.settings import EngineSettings
from perception.config import NodeConfig, parse_config
from perception.errors import PerceptionError
from perception.msgs.types import (
    DetectionList,
    LidarSweep,
    Message,
)
from replay.drive_config import config_for_messages
from replay.errors import ReplayError

__all__ = [
    "Record",
    "Sweep",
    "config_for_sweeps",
    "group_sweeps",
    "lidar_of",
    "node_config_document",
    "plain",
    "restamp_sweep",
    "send_times",
    "sweep_span_ns",
    "with_engines",
]

#: A message and the topic it is published on.
Record = tuple[str, Message]
#: One sweep's messages in send order, the lidar sweep last.
Sweep = tuple[Record, ...]


def group_sweeps(records: Iterable[Record], limit: int | None = None) -> list[Sweep]:
    """A drive's (topic, message) records, in log order, grouped by lidar sweep: every other
    input joins the last sweep stamped at or before it (those before the first sweep join the
    first), in its recorded order, and the sweep itself goes last (it is the synchroniser's
    reference). Recorded DetectionLists are left out. Reading stops after `limit` sweeps.

    Raises:
        PerceptionError: no lidar sweep, or lidar sweeps on more than one topic.
    """
    lidar: list[Record] = []
    others: list[Record] = []
    for topic, msg in records:
        if isinstance(msg, DetectionList):
            continue
        if not isinstance(msg, LidarSweep):
            others.append((topic, msg))
            continue
        if lidar and topic != lidar[0][0]:
            raise PerceptionError(
                f"lidar sweeps on two topics ({lidar[0][0]}, {topic}): the bench plays one"
            )
        if limit is not None and len(lidar) >= limit:
            break
        lidar.append((topic, msg))
    if not lidar:
        raise PerceptionError("no lidar sweep to play")
    order = sorted(range(len(lidar)), key=lambda i: lidar[i][1].header.stamp_ns)
    stamps = [lidar[i][1].header.stamp_ns for i in order]
    members: list[list[Record]] = [[] for _ in lidar]
    for rec in others:
        k = bisect.bisect_right(stamps, rec[1].header.stamp_ns) - 1
        members[order[max(k, 0)]].append(rec)
    return [(*m, sweep) for m, sweep in zip(members, lidar, strict=True)]


def sweep_span_ns(sweep: LidarSweep) -> int:
    """From the sweep's stamp to its last point (its largest per-point time offset; 0 without
    offsets)."""
    offsets = sweep.point_time_offsets_ns
    return 0 if offsets is None or len(offsets) == 0 else max(0, int(offsets.max()))


def lidar_of(sweep: Sweep) -> LidarSweep:
    """The sweep's LidarSweep (its last message).

    Raises:
        TypeError: the last message is not a LidarSweep.
    """
    lidar = sweep[-1][1]
    if not isinstance(lidar, LidarSweep):
        raise TypeError(f"a sweep ends with its LidarSweep, not {type(lidar).__name__}")
    return lidar


def restamp_sweep(sweep: Sweep, send_ns: int) -> Sweep:
    """`sweep` with every stamp shifted by the same amount so that the lidar sweep (last) ends
    at `send_ns`: its last point is stamped `send_ns` (see `sweep_span_ns`)."""
    lidar = lidar_of(sweep)
    shift = send_ns - sweep_span_ns(lidar) - lidar.header.stamp_ns
    return tuple((topic, _shifted(msg, shift)) for topic, msg in sweep)


def send_times(sweep: Sweep) -> list[tuple[int, str, Message]]:
    """When to send each message of a restamped `sweep` (host time, ns), in send order: the
    lidar sweep at its last point, each other message at its stamp but not after the sweep
    (ties keep the sweep's order)."""
    lidar = lidar_of(sweep)
    end_ns = lidar.header.stamp_ns + sweep_span_ns(lidar)
    times = [(min(msg.header.stamp_ns, end_ns), topic, msg) for topic, msg in sweep[:-1]]
    times.append((end_ns, sweep[-1][0], lidar))
    return sorted(times, key=lambda t: t[0])  # stable: ties keep the sweep's order


def _shifted(msg: Message, shift_ns: int) -> Message:
    header = dataclasses.replace(msg.header, stamp_ns=msg.header.stamp_ns + shift_ns)
    return dataclasses.replace(msg, header=header)


def config_for_sweeps(sweeps: Sequence[Sweep], base: NodeConfig) -> NodeConfig:
    """`base` with its input topics taken from the sweeps (lidar, cameras, GNSS, rig) and each
    camera's expected offset after its sweep (`sync.camera_offsets_ms`) set to the median
    recorded one, as `perception replay` reads a drive without a config
    (replay.drive_config)."""
    try:
        return config_for_messages((rec for sweep in sweeps for rec in sweep), base)
    except ReplayError as e:
        raise PerceptionError(f"cannot play these sweeps into the node: {e}") from None


def with_engines(config: NodeConfig, backend: str | None, device: str | None) -> NodeConfig:
    """`config` with its `engines` backend and device replaced by those given (None: kept)."""
    engines: EngineSettings = dataclasses.replace(
        config.engines,
        backend=config.engines.backend if backend is None else backend,
        device=config.engines.device if device is None else device,
    )
    return dataclasses.replace(config, engines=engines)


def plain(value: Any) -> Any:
    """`value` with dict keys as strings and tuples as lists, for YAML."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def node_config_document(
    config: NodeConfig, sensors: str, detections: str, rig_path: Path | None = None
) -> dict[str, Any]:
    """The YAML document of `config` for the node child: inputs on `sensors`, outputs on
    `detections`, file paths absolute (model, rig, key files), `rig_path` as its rig when
    given. The sensor stamps are on the host clock (the bench restamps them to the send time),
    as PTP-synchronised sensors' are: the node takes them as they are
    (`budgets.apply_clock_offset` off), so its latency counts the transport too instead of
    leaning on a clock estimate that takes the fastest transport for the clocks' offset.

    Raises:
        ConfigError: the result is not a valid node config.
    """
    doc: dict[str, Any] = plain(dataclasses.asdict(config))
    doc["inputs"]["endpoints"] = [sensors]
    doc["outputs"]["endpoint"] = detections
    doc["budgets"]["apply_clock_offset"] = False
    model = Path(config.camera_model.path).expanduser()
    if model.is_file():
        doc["camera_model"]["path"] = str(model.resolve())
    if rig_path is not None:
        doc["rig"] = str(rig_path.resolve())
    elif config.rig is not None:
        doc["rig"] = str(Path(config.rig).expanduser().resolve())
    for key in ("secret_key", "server_key", "allowed_clients"):
        if doc["security"][key] is not None:
            doc["security"][key] = str(Path(doc["security"][key]).expanduser().resolve())
    parse_config(doc, "bench node config")
    return doc
