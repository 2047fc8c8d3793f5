"""Offline replays of many drives: locally one after the other, or on Ray, one task per drive.

A source is a drive (MCAP file, replay.drive) or a KITTI object folder. Each replay builds the
pipeline from the node configuration (`Pipeline.from_config`) and runs the source through the
node core into one JSON Lines file of DetectionLists per source, `<out_dir>/<name>.jsonl`
(`name`: the drive's file stem or the folder's name), with `replay.offline.replay_to_file`, the
function `perception replay` uses for one source: the same topics, rig and sync settings.

With Ray (`ray_address`), each source is a Ray task that runs on any node of the cluster and
writes its output file there: `out_dir` and the sources must be on storage all nodes share, and
every node needs this package installed (or a `runtime_env` in `ray_init_kwargs`). Results come
back as tasks finish; `progress` is called for each, in completion order. Ray is imported only
when asked for (it is a dev / cluster dependency, not a runtime one).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from calibration import CalibrationError
from engines.errors import EngineError
from perception.config import NodeConfig
from perception.errors import PerceptionError
from perception.pipeline import Pipeline
from replay.errors import ReplayError
from replay.offline import replay_to_file
from replay.output import check_name_fits, check_outputs_not_inputs
from replay.synth.world import drive_files

__all__ = [
    "RAY_CONNECT_TIMEOUT_S",
    "DuplicateOutputError",
    "ProgressFn",
    "ReplayResult",
    "check_ray_address",
    "connect_ray",
    "replay_many",
    "replay_source",
]

#: How long a Ray address may take to accept a connection before it is called unreachable.
RAY_CONNECT_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class ReplayResult:
    """The outcome of one source's replay: its output file, DetectionLists (`sweeps`) and
    detections written, wall time (s), and `error` (the message) when it failed."""

    source: Path
    out_path: Path
    sweeps: int = 0
    detections: int = 0
    wall_s: float = 0.0
    error: str | None = None
    counters: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None


#: Called as each source finishes: (sources done, sources in all, that source's result).
ProgressFn = Callable[[int, int, ReplayResult], None]

# Failures of one source that do not stop the others (bugs still raise).
_SOURCE_ERRORS = (PerceptionError, EngineError, CalibrationError, OSError)


def replay_source(
    source: Path,
    out_path: Path,
    config: NodeConfig | None = None,
    model_path: Path | None = None,
    pipeline: Pipeline | None = None,
    *,
    topics_from_drive: bool = False,
) -> ReplayResult:
    """Replay one source into the JSON Lines file `out_path` through the node core, as
    `perception replay` does (replay.offline.replay_to_file; the pipeline is built from
    `config.camera_model` / `model_path` unless given). Failures of the source (missing or
    malformed input, model, calibration, unwritable output) are returned in `error`; the
    output file is then left as it was (absent, or the previous run's)."""
    config = config or NodeConfig()
    start = time.perf_counter()
    out_path = Path(out_path)
    try:
        pipeline = pipeline or Pipeline.from_config(
            config.camera_model,
            model_path,
            config.engines,
            config.pipeline,
            detections_stream=config.outputs.detections_topic,
        )
        summary = replay_to_file(
            Path(source), out_path, config, pipeline, topics_from_drive=topics_from_drive
        )
    except _SOURCE_ERRORS as e:
        return ReplayResult(
            Path(source), out_path, wall_s=time.perf_counter() - start, error=str(e)
        )
    return ReplayResult(
        Path(source),
        out_path,
        summary.sweeps,
        summary.detections,
        time.perf_counter() - start,
        counters=summary.counters,
    )


class DuplicateOutputError(ReplayError, ValueError):
    """Two sources would write the same output file (a ValueError too, as it always was)."""


def _output_name(source: Path) -> str:
    """The name of `source`'s output: the folder's name or the drive's stem, of the path made
    absolute (not resolved: a link's own name is kept), since `.` and `..` have no name of
    their own (`.` failed as a bug, `..` wrote a hidden `...jsonl`).

    Raises ReplayError for the root folder, which has no name.
    """
    path = Path(os.path.abspath(source))
    name = path.name if path.is_dir() else path.stem
    if not name:
        raise ReplayError(f"{source}: has no name to name its output after")
    return name


def _out_paths(sources: Sequence[Path], out_dir: Path) -> list[Path]:
    names = [_output_name(p) for p in sources]
    seen: dict[str, Path] = {}
    for name, src in zip(names, sources, strict=True):
        if name in seen:
            raise DuplicateOutputError(
                f"{src} and {seen[name]} would both write {out_dir / name}.jsonl"
            )
        seen[name] = src
    outs = [out_dir / f"{name}.jsonl" for name in names]
    for src, out in zip(sources, outs, strict=True):
        # A name too long for the file system failed its source with the raw OSError, after
        # the sources before it had been replayed.
        check_name_fits(out, f"the output of {src} (named after it)")
    # A source (or the ground truth beside a drive) named like an output, or linked from one,
    # would be replaced by another source's detections.
    inputs = [file for s in sources for file in drive_files(s)]
    check_outputs_not_inputs(outs, inputs, "an output")
    return outs


def replay_many(
    drives: Sequence[Path],
    out_dir: Path,
    *,
    config: NodeConfig | None = None,
    model_path: Path | None = None,
    ray_address: str | None = None,
    ray_init_kwargs: Mapping[str, Any] | None = None,
    num_cpus_per_task: float = 1.0,
    progress: ProgressFn | None = None,
    topics_from_drive: bool = False,
) -> list[ReplayResult]:
    """Replay every source (drive file or KITTI object folder) into `out_dir/<name>.jsonl`;
    the results in the order of `drives`.

    `ray_address` None: locally, one after the other, one pipeline for all. Otherwise one Ray
    task per source (`num_cpus_per_task` CPUs each): "local" starts a Ray instance on this
    machine, any other value is given to `ray.init(address=...)` (e.g. "auto",
    "ray://head:10001"); `ray_init_kwargs` go to `ray.init` too. An already initialised Ray is
    used as it is and left running; one started here is shut down at the end.
    `topics_from_drive`: each drive is read on its own topics (replay.offline.open_source).

    Raises DuplicateOutputError (a ReplayError and ValueError) when two sources would write the
    same output file, ReplayError when `out_dir` cannot be created, OutputError when an output
    file would replace a source or the ground truth beside one (a file of that name, or a
    link to it, in `out_dir`), ImportError when Ray is asked for but not installed.
    """
    sources = [Path(d) for d in drives]
    out_dir = Path(out_dir)
    if ray_address is not None:
        check_ray_address(ray_address)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ReplayError(f"{out_dir}: cannot create the output folder ({e.strerror})") from e
    outs = _out_paths(sources, out_dir)
    config = config or NodeConfig()
    if ray_address is None:
        return _replay_locally(
            sources, outs, config, model_path, progress, topics_from_drive=topics_from_drive
        )
    return _replay_on_ray(
        sources,
        outs,
        config,
        model_path,
        topics_from_drive=topics_from_drive,
        address=ray_address,
        init_kwargs=dict(ray_init_kwargs or {}),
        num_cpus_per_task=num_cpus_per_task,
        progress=progress,
    )


def _replay_locally(
    sources: list[Path],
    outs: list[Path],
    config: NodeConfig,
    model_path: Path | None,
    progress: ProgressFn | None,
    *,
    topics_from_drive: bool,
) -> list[ReplayResult]:
    pipeline: Pipeline | None = None
    results: list[ReplayResult] = []
    for source, out in zip(sources, outs, strict=True):
        if pipeline is None:
            try:
                pipeline = Pipeline.from_config(
                    config.camera_model,
                    model_path,
                    config.engines,
                    config.pipeline,
                    detections_stream=config.outputs.detections_topic,
                )
            except _SOURCE_ERRORS:
                pipeline = None  # reported per source by replay_source
        results.append(
            replay_source(
                source, out, config, model_path, pipeline, topics_from_drive=topics_from_drive
            )
        )
        if progress is not None:
            progress(len(results), len(sources), results[-1])
    return results


def check_ray_address(address: str) -> None:
    """Refuses a Ray address that cannot work before any work starts: `local` and `auto` pass
    (Ray itself says when `auto` finds no cluster); `HOST:PORT` (a cluster's GCS) and
    `ray://HOST:PORT` (Ray Client) must accept a TCP connection and answer as a gRPC server
    does, each within `RAY_CONNECT_TIMEOUT_S`, since Ray retries an unreachable one, or one
    where another server listens, for minutes.

    Raises ReplayError naming the address and what is wrong.
    """
    if address in ("local", "auto"):
        return
    where = address.removeprefix("ray://")
    host, sep, port_text = where.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ReplayError(
            f"--ray-address {address!r}: expected local, auto, HOST:PORT or ray://HOST:PORT"
        )
    try:
        connection = socket.create_connection((host, int(port_text)), timeout=RAY_CONNECT_TIMEOUT_S)
    except OSError as e:
        reason = "timed out" if isinstance(e, TimeoutError) else (e.strerror or str(e))
        raise ReplayError(
            f"--ray-address {address}: cannot reach {host}:{port_text} ({reason}); is the Ray "
            "cluster's head running there?"
        ) from None
    with connection:
        answer = _http2_answer(connection)
    # Ray's GCS and its client server speak gRPC: something else there (the dashboard's port,
    # 8265, is the usual mistake) left Ray retrying for minutes. With TLS (Ray's own
    # RAY_USE_TLS), the plain preface is not understood: Ray is left to say.
    if answer is not None and not _tls_asked():
        raise ReplayError(
            f"--ray-address {address}: what listens on {host}:{port_text} is not a Ray cluster "
            f"({answer}); give the head's address (HOST:6379 by default, or ray://HOST:10001), "
            "not the dashboard's"
        )


#: An HTTP/2 client's connection preface, then its (empty) SETTINGS frame.
_HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
_HTTP2_SETTINGS = 4


def _http2_answer(connection: socket.socket) -> str | None:
    """None when `connection`'s server answers the HTTP/2 preface as a gRPC server does (its
    first frame a SETTINGS frame), else what it did instead."""
    try:
        connection.settimeout(RAY_CONNECT_TIMEOUT_S)
        connection.sendall(_HTTP2_PREFACE)
        header = b""
        while len(header) < 9:
            chunk = connection.recv(9 - len(header))
            if not chunk:
                return "it closed the connection" if not header else "it answered no HTTP/2"
            header += chunk
    except TimeoutError:
        return f"no answer within {RAY_CONNECT_TIMEOUT_S:g} s"
    except OSError as e:
        return f"the connection failed: {e.strerror or e}"
    if header[3] != _HTTP2_SETTINGS:
        shown = header.decode("ascii", "replace").split("\r")[0].strip()
        return (
            f"it answered {shown!r}, not gRPC" if shown.isprintable() else "it answered no HTTP/2"
        )
    return None


def _tls_asked() -> bool:
    """Whether Ray connects with TLS (its RAY_USE_TLS, which Ray reads itself)."""
    return os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true", "yes")


def connect_ray(address: str, **init_kwargs: Any) -> bool:
    """`ray.init(address=...)` quietly (no dashboard, warnings only, workers' logs not
    forwarded) unless Ray is initialised already; whether it was initialised here.

    Raises ReplayError naming the address when Ray Client (`ray://`) is not installed or no
    cluster answers there; ImportError when Ray is not installed.
    """
    import ray  # noqa: PLC0415 - optional dependency, imported only when asked for

    if ray.is_initialized():
        return False
    init_kwargs.setdefault("include_dashboard", False)
    init_kwargs.setdefault("logging_level", logging.WARNING)
    init_kwargs.setdefault("log_to_driver", False)
    try:
        ray.init(address=address, **init_kwargs)
    except ValueError as e:
        if "ray[client]" not in str(e):
            raise
        raise ReplayError(
            f"--ray-address {address}: Ray Client is not installed (pip install 'ray[client]')"
        ) from None
    except ConnectionError as e:
        raise ReplayError(f"--ray-address {address}: {e}") from None
    return True


def _replay_on_ray(
    sources: list[Path],
    outs: list[Path],
    config: NodeConfig,
    model_path: Path | None,
    *,
    topics_from_drive: bool,
    address: str,
    init_kwargs: dict[str, Any],
    num_cpus_per_task: float,
    progress: ProgressFn | None,
) -> list[ReplayResult]:
    import ray  # noqa: PLC0415 - optional dependency, imported only when asked for

    started_here = connect_ray(address, **init_kwargs)
    try:
        task: Any = ray.remote(num_cpus=num_cpus_per_task)(replay_source)
        # Absolute paths: a task's working folder is not the caller's.
        model = None if model_path is None else Path(model_path).expanduser().resolve()
        refs = [
            task.remote(
                source.resolve(), out.resolve(), config, model, topics_from_drive=topics_from_drive
            )
            for source, out in zip(sources, outs, strict=True)
        ]
        index = {ref: i for i, ref in enumerate(refs)}
        results: list[ReplayResult | None] = [None] * len(refs)
        pending = list(refs)
        done = 0
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            for ref in ready:
                i = index[ref]
                result = replace(ray.get(ref), source=sources[i], out_path=outs[i])
                results[i] = result
                done += 1
                if progress is not None:
                    progress(done, len(refs), result)
        return [r for r in results if r is not None]
    finally:
        if started_here:
            ray.shutdown()
