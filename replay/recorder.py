"""Recording ZeroMQ topics into a drive (MCAP) without ever blocking the sockets.

A receiver thread takes each multipart message off the subscriber, stamps its receive time
(host clock, ns), decodes it (perception.msgs.wire) and pushes it into a bounded queue without
waiting: when the queue is full the message is dropped and counted. A writer thread takes
messages off the queue and writes them with `DriveWriter`. So a slow disk costs counted drops,
never a stalled socket. Exactly: received == written + dropped + undecodable + failed.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from perception.errors import WireError
from perception.io.curve import CurveKeys
from perception.io.transport import Subscriber
from perception.msgs import wire
from perception.msgs.types import Message
from replay.drive import DriveWriter
from replay.errors import ReplayError

__all__ = ["RECORDER_CHUNK_SIZE", "Recorder", "RecorderStats"]

log = logging.getLogger(__name__)

#: Chunk size (uncompressed bytes) of recorded drives: small, so a killed recorder loses little.
RECORDER_CHUNK_SIZE = 256 * 1024

_POLL_MS = 50


@dataclass(frozen=True)
class RecorderStats:
    """Counts of a recording. `received`: multipart messages taken off the sockets; `written`:
    messages in the drive; `dropped`: messages dropped because the queue was full;
    `undecodable`: messages the wire decoder rejected; `failed`: messages the drive writer
    rejected; `bytes`: bytes received (all frames)."""

    received: int = 0
    written: int = 0
    dropped: int = 0
    undecodable: int = 0
    failed: int = 0
    bytes: int = 0


_Item = tuple[str, Message, int]


class Recorder:
    """Records `topics` published on `endpoints` (connecting) into the drive `out_path`.

    `topic_endpoints`: topic -> the endpoints that topic is subscribed at instead of
    `endpoints` (sensors and the node publish on different endpoints); topics it names need not
    be in `topics`. One receiver thread per distinct set of endpoints.
    `queue_size`: messages buffered between the receivers and the writer; `hwm`: receive
    high-water mark per topic socket (ZeroMQ drops beyond it, uncounted here: keep it large);
    `compression`: as `DriveWriter`; `chunk_size`: bytes per MCAP chunk. `curve`: CURVE keys
    for tcp endpoints (perception.io.curve).

    Raises (constructor):
        ValueError: no endpoints or topics, or `queue_size` < 1.
        TransportError: an endpoint cannot be connected.
        ReplayError: the drive cannot be created.
    """

    def __init__(
        self,
        endpoints: Sequence[str],
        topics: Sequence[str],
        out_path: Path,
        *,
        queue_size: int = 1000,
        compression: str | None = "zstd",
        hwm: int = 1000,
        chunk_size: int = RECORDER_CHUNK_SIZE,
        topic_endpoints: Mapping[str, Sequence[str]] | None = None,
        curve: CurveKeys | None = None,
    ) -> None:
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        self.out_path = Path(out_path)
        groups: dict[tuple[str, ...], list[str]] = {}
        for topic in dict.fromkeys([*topics, *(topic_endpoints or {})]):
            where = (topic_endpoints or {}).get(topic, endpoints)
            groups.setdefault(tuple(where), []).append(topic)
        if not groups:
            raise ValueError("at least one topic is required")
        self._subscribers: list[Subscriber] = []
        try:
            for where, group in groups.items():
                self._subscribers.append(Subscriber(where, group, hwm=hwm, curve=curve))
            self._writer = DriveWriter(
                self.out_path, compression=compression, chunk_size=chunk_size
            )
        except BaseException:
            for subscriber in self._subscribers:
                subscriber.close()
            raise
        self._queue: queue.Queue[_Item | None] = queue.Queue(maxsize=queue_size)
        self._lock = threading.Lock()
        self._received = 0
        self._written = 0
        self._dropped = 0
        self._undecodable = 0
        self._failed = 0
        self._bytes = 0
        self._stop_receiving = threading.Event()
        self._receivers: list[threading.Thread] = []
        self._writer_thread: threading.Thread | None = None
        self._closed = False

    @property
    def stats(self) -> RecorderStats:
        """The counts so far (consistent snapshot)."""
        with self._lock:
            return RecorderStats(
                received=self._received,
                written=self._written,
                dropped=self._dropped,
                undecodable=self._undecodable,
                failed=self._failed,
                bytes=self._bytes,
            )

    def start(self) -> None:
        """Start the receiver and writer threads (idempotent)."""
        if self._closed:
            raise ReplayError(f"{self.out_path}: recorder is closed")
        if self._receivers:
            return
        self._writer_thread = threading.Thread(target=self._write_loop, name="recorder-writer")
        # Each subscriber's sockets are owned by one thread (ZeroMQ sockets are not thread-safe).
        self._receivers = [
            threading.Thread(target=self._receive_loop, args=(sub,), name=f"recorder-receiver-{i}")
            for i, sub in enumerate(self._subscribers)
        ]
        self._writer_thread.start()
        for receiver in self._receivers:
            receiver.start()

    def run(self, stop: threading.Event) -> RecorderStats:
        """Record until `stop` is set, then finish the drive (`close`); returns the stats."""
        self.start()
        try:
            while not stop.wait(0.1):
                pass
        finally:
            self.close()
        return self.stats

    def _receive_loop(self, subscriber: Subscriber) -> None:
        while not self._stop_receiving.is_set():
            try:
                frames = subscriber.recv(_POLL_MS)
            except Exception as e:  # a transport fault ends the recording, the file is kept
                log.error("%s: receiving failed, recording stops: %s", self.out_path, e)
                return
            if frames is None:
                continue
            log_time_ns = time.time_ns()
            size = sum(len(f.buffer) for f in frames)
            with self._lock:
                self._received += 1
                self._bytes += size
            try:
                topic, msg = wire.decode([f.buffer for f in frames])
            except WireError as e:
                with self._lock:
                    self._undecodable += 1
                log.warning("%s: undecodable message dropped: %s", self.out_path, e)
                continue
            try:
                self._queue.put_nowait((topic, msg, log_time_ns))
            except queue.Full:
                with self._lock:
                    self._dropped += 1

    def _write_loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            topic, msg, log_time_ns = item
            try:
                self._writer.write(msg, log_time_ns, topic)
            except (ReplayError, WireError, ValueError) as e:
                with self._lock:
                    self._failed += 1
                log.warning("%s: message on %s not written: %s", self.out_path, topic, e)
                continue
            with self._lock:
                self._written += 1

    def close(self) -> None:
        """Stop receiving, write everything already queued, finish the drive (summary and
        footer) and close the sockets. Idempotent.

        Raises:
            ReplayError: the drive cannot be finished.
        """
        if self._closed:
            return
        self._closed = True
        self._stop_receiving.set()
        for receiver in self._receivers:
            receiver.join()
        if self._writer_thread is not None:
            self._queue.put(None)  # the receivers have stopped: this wait is bounded
            self._writer_thread.join()
        for subscriber in self._subscribers:
            subscriber.close()
        self._writer.close()
        s = self.stats
        log.info(
            "%s: recorded %d message(s) of %d received, %d dropped (queue full), "
            "%d undecodable, %d failed",
            self.out_path,
            s.written,
            s.received,
            s.dropped,
            s.undecodable,
            s.failed,
        )
