"""What several commands share: the node config, signals, sources, per-topic endpoints, bars."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from perception.config import NodeConfig, load_config
from perception.errors import ConfigError, PerceptionError
from perception.io.runtime import unresolved_host
from perception.msgs.schema import MAX_TOPIC_BYTES, topic_bytes

__all__ = [
    "STOP_SIGNALS",
    "Stages",
    "cache_dir_arg",
    "check_drive_path",
    "check_reachable",
    "endpoints_for_topic",
    "is_output_topic",
    "load_node_config",
    "not_for",
    "progress_bar",
    "split_source",
    "stop_on_signals",
    "warn_unresolved",
]


def load_node_config(path: str | None) -> NodeConfig:
    """The node config of `--config` (validated), or the built-in defaults.

    Raises:
        ConfigError: naming the file and the problem, on one line (YAML parser messages span
            several).
    """
    if not path:
        return NodeConfig()
    try:
        return load_config(Path(path).expanduser())
    except ConfigError as e:
        raise ConfigError(" ".join(str(e).split())) from e


def check_drive_path(path: Path) -> Path:
    """`path` if it is a file (the drive reader says whether it is an MCAP one).

    Raises:
        PerceptionError: it does not exist, or is a folder.
    """
    if path.is_dir():
        raise PerceptionError(f"{path}: is a folder, not a drive (.mcap)")
    if not path.exists():
        raise PerceptionError(f"{path}: no such drive (.mcap)")
    return path


#: The signals that stop a command cleanly, and how its last line words each.
STOP_SIGNALS: dict[int, str] = {
    signal.SIGINT: "interrupted",
    signal.SIGTERM: "terminated",
    # A closed terminal or a dropped ssh session: its default action killed the recorder with
    # its drive unfinished and left the node's ipc socket files behind.
    signal.SIGHUP: "hung up",
}


class StopEvent(threading.Event):
    """A `threading.Event` set by a signal; `signum`, the first signal that set it (None
    before), so that a command ends with 128 + that signal (130 for SIGINT, 143 for SIGTERM,
    129 for SIGHUP)."""

    def __init__(self) -> None:
        super().__init__()
        self.signum: int | None = None

    @property
    def how(self) -> str:
        """How the command was stopped, for its last line ("interrupted", "terminated", "hung
        up"); "interrupted" before a signal."""
        return STOP_SIGNALS.get(self.signum or signal.SIGINT, "interrupted")


def stop_on_signals() -> StopEvent:
    """An event set by SIGINT, SIGTERM or SIGHUP (the commands finish their files, then
    stop)."""
    stop = StopEvent()
    # The handler runs on the main thread between two of its bytecodes, possibly while that
    # thread holds the event's lock (inside `stop.wait`, or inside an earlier handler's
    # `stop.set` when two signals come at once, as `timeout` sends them to the process and its
    # group): setting the event there waited on that lock forever. So the handler only writes
    # a byte, and a thread of its own sets the event.
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)

    def relay() -> None:
        try:
            received = os.read(read_fd, 1)
            stop.signum = received[0] if received else None
        finally:
            stop.set()

    threading.Thread(target=relay, name="signal-relay", daemon=True).start()

    def handler(signum: int, _frame: FrameType | None) -> None:
        with contextlib.suppress(OSError):  # the pipe full: the event is being set already
            os.write(write_fd, bytes([signum]))

    for signum in STOP_SIGNALS:
        signal.signal(signum, handler)
    return stop


def not_for(args: Any, what: str, options: Sequence[str]) -> None:
    """Refuses `options` (`--speed`, ...) given on the command line (away from their defaults)
    that do nothing for `what` ("a KITTI object folder, played at --rate"): silently ignored,
    they would let a user believe they took effect.

    Raises:
        PerceptionError: naming the options and what they are not for.
    """
    defaults = args.option_defaults  # the command's parser's (app.cli.with_option_defaults)
    given = [o for o in options if getattr(args, _dest(o)) != defaults[_dest(o)]]
    if given:
        verb = "does" if len(given) == 1 else "do"
        raise PerceptionError(f"{', '.join(given)} {verb} nothing for {what}")


def _dest(option: str) -> str:
    return option.lstrip("-").replace("-", "_")


def split_source(sources: Sequence[str], command: str) -> tuple[str, Path]:
    """("kitti-object", DIR) or ("drive", DRIVE.mcap) from `SOURCE [DIR]`.

    Raises:
        PerceptionError: the wrong number of arguments, or a folder given as a drive.
    """
    if not sources:
        raise PerceptionError("give a drive (.mcap) or `kitti-object DIR`")
    if sources[0] == "kitti-object":
        if len(sources) != 2:
            raise PerceptionError("kitti-object: give exactly one KITTI object folder after it")
        return "kitti-object", Path(sources[1]).expanduser()
    if len(sources) != 1:
        raise PerceptionError(
            f"expected one drive, got {len(sources)} arguments ({' '.join(sources)})"
        )
    path = Path(sources[0]).expanduser()
    if path.is_dir():
        raise PerceptionError(
            f"{path}: is a folder, not a drive (.mcap); for a KITTI object folder: "
            f"perception {command} kitti-object {path}"
        )
    return "drive", check_drive_path(path)


def cache_dir_arg(value: str | None, option: str = "--cache-dir") -> Path | None:
    """A cache folder option as a path (None: the default cache), refused when it names a
    file.

    Raises:
        PerceptionError: `value` is an existing file.
    """
    if value is None:
        return None
    path = Path(value).expanduser()
    if path.exists() and not path.is_dir():
        raise PerceptionError(f"{path}: is a file; {option} must be a folder")
    return path


def check_reachable(endpoints: Sequence[str], option: str = "") -> None:
    """Refuses an endpoint no other process can reach: an inproc:// one (valid for a node core
    in a test process) would leave `play` publishing to no one, `record` and `echo` waiting on
    nothing, and `run` and `view` hearing nothing, without a word. `option` names where the
    endpoints come from ("--endpoint"; default: the node config).

    Also refuses an endpoint that is not UTF-8 text (bytes a shell passed on as they were):
    ZeroMQ takes endpoints as UTF-8, and binding one failed deep inside it with a
    UnicodeEncodeError, reported as a bug.

    Raises:
        PerceptionError: naming the endpoint and what to use instead, or that it is not UTF-8.
    """
    where = f"{option} " if option else ""
    for endpoint in endpoints:
        shown = _not_utf8(endpoint)
        if shown is not None:
            raise PerceptionError(
                f"{where}'{shown}': not UTF-8 text; ZeroMQ takes endpoints as UTF-8"
            )
        if endpoint.startswith("inproc://"):
            raise PerceptionError(
                f"{where}{endpoint}: inproc:// reaches only the process itself: no other "
                "process could send to it or receive from it; use ipc:// or tcp://"
            )


def _not_utf8(text: str) -> str | None:
    """`text` with its undecodable bytes escaped, where it is not UTF-8 text (bytes a shell
    passed on as they were, held as surrogates); None where it is."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return None


def warn_unresolved(endpoints: Sequence[str], prog: str) -> None:
    """Prints a warning for each tcp endpoint whose host does not resolve: libzmq connects to it
    once it does and waits in silence until then, so a misspelt host read only as "nothing
    arrived". A warning, not a refusal: a name server may come up after the command."""
    for endpoint in dict.fromkeys(endpoints):
        why = unresolved_host(endpoint)
        if why is not None:
            print(
                f"{prog}: warning: {endpoint}: {why}; nothing can arrive from it until it resolves",
                file=sys.stderr,
                flush=True,
            )


def check_topic_lengths(topics: Sequence[str]) -> None:
    """Refuses a topic too long to subscribe to: a publisher drops the connection of a
    subscription of a topic above `MAX_TOPIC_BYTES` (perception.msgs.schema), and the subscriber
    reconnects and resubscribes for ever, receiving nothing (`echo` and `record` of a topic
    over 64 KiB waited without a word).

    Also refuses a topic that is not UTF-8 text (bytes a shell passed on as they were):
    topics travel as UTF-8, so no publisher could send it, and subscribing to it failed deep in
    the transport with a UnicodeEncodeError.

    Raises:
        PerceptionError: naming the topic (its start; undecodable bytes escaped), and its length
            and the limit, or that it is not UTF-8.
    """
    for topic in topics:
        shown = _not_utf8(topic)
        if shown is not None:
            raise PerceptionError(
                f"topic '{shown}': not UTF-8 text; topics travel as UTF-8, so nothing could be "
                "published on it"
            )
        size = topic_bytes(topic)
        if size > MAX_TOPIC_BYTES:
            shown = f"{topic[:32]}..." if len(topic) > 32 else topic
            raise PerceptionError(
                f"topic {shown!r} is {size} bytes long; a subscription takes at most "
                f"{MAX_TOPIC_BYTES} "
                "(a publisher drops the connection of a longer one, so nothing would arrive)"
            )


def is_output_topic(topic: str, config: NodeConfig) -> bool:
    """Whether the node publishes `topic` (its detections, tracks or diagnostics), per
    `config`."""
    outputs = config.outputs
    return topic in (outputs.detections_topic, outputs.tracks_topic, outputs.diagnostics_topic)


def endpoints_for_topic(topic: str, config: NodeConfig) -> tuple[str, ...]:
    """Where `topic` is published: the node's outputs endpoint for its detections, tracks and
    diagnostics, else the sensors' (inputs) endpoints."""
    if is_output_topic(topic, config):
        return (config.outputs.endpoint,)
    return tuple(config.inputs.endpoints)


def progress_bar(
    *, total: int | None, unit: str, desc: str | None, quiet: bool, unit_scale: bool = False
) -> Any:
    """A tqdm bar on stderr; none with `quiet`, nor when stderr is not a terminal (logs and
    pipes get the result lines only)."""
    from tqdm import tqdm  # noqa: PLC0415 (tqdm only where a bar is drawn)

    disable = True if quiet else None
    return tqdm(total=total, unit=unit, unit_scale=unit_scale, desc=desc, disable=disable)


class Stages:
    """One bar per stage of a long command: `stages(label, done, total)` (the library's
    progress callback) starts a new bar when the label changes. `close` (also by `with`) ends
    the last one."""

    def __init__(self, unit: str, quiet: bool, labels: dict[str, str] | None = None) -> None:
        self._unit = unit
        self._quiet = quiet
        self._labels = labels or {}
        self._label: str | None = None
        self._bar: Any = None

    def __call__(self, label: str, done: int, total: int) -> None:
        if label != self._label:
            self.close()
            self._label = label
            self._bar = progress_bar(
                total=total, unit=self._unit, desc=self._labels.get(label, label), quiet=self._quiet
            )
        if self._bar.total != total:
            self._bar.total = total
            self._bar.refresh()
        self._bar.update(done - self._bar.n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Stages:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def callback(self, label: str) -> Callable[[int, int], None]:
        """A `progress(done, total)` callback feeding the bar `label`."""
        return lambda done, total: self(label, done, total)
