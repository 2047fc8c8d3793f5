"""Recording ZeroMQ topics into a drive (MCAP) without ever blocking the sockets.

A receiver thread per set of endpoints takes each multipart message off its subscriber, stamps
its receive time (host clock, ns), decodes it (perception.msgs.wire) and pushes it into a
bounded queue (messages and bytes) without waiting: when the queue is full the message is
dropped and counted. A writer thread takes messages off the queue and writes them with
`DriveWriter`. So a slow disk costs counted drops, never a stalled socket.

What can go wrong, and what it costs:
- one message cannot be decoded: it is counted `undecodable` (so is one the subscriber
  refuses while receiving it: too many frames or bytes, a bad shared-memory descriptor; one
  whose shared-memory slot was recycled before it was read is counted `dropped`); one that
  cannot be written (any exception while writing it) is counted `failed`; the recording goes
  on, and these are logged at a bounded rate (perception.ratelimit);
- the disk is full (or the file cannot be written at all): the recording stops by itself
  (`stats.error` says why), the drive keeps every chunk written before, and the messages of
  the lost chunk are counted `failed`, those still queued `dropped`;
- a transport fault on a subscriber: the recording stops the same way;
- the recorder is killed: the chunk being filled is cut and handed to the operating system at
  least every `flush_interval_s` (and whenever it reaches `chunk_size`), so a kill loses at
  most the messages of the last `flush_interval_s` plus what was queued;
- stopping (`close`, SIGINT in the CLI) takes at most about `stop_timeout_s`: what is queued is
  written until then, the rest is counted `dropped`.

Once closed, exactly: received == written + dropped + undecodable + failed, and `written` is
the number of messages the drive holds.
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from perception.errors import StalePayloadError, WireError
from perception.io.curve import CurveKeys
from perception.io.transport import Subscriber
from perception.msgs import wire
from perception.msgs.schema import DEFAULT_LIMITS, WireLimits
from perception.msgs.types import Message
from perception.ratelimit import RateLimitedLogger
from replay.drive import DriveWriter
from replay.errors import DriveStorageError, ReplayError

__all__ = ["RECORDER_CHUNK_SIZE", "Recorder", "RecorderStats"]

log = logging.getLogger(__name__)

#: Chunk size (uncompressed bytes) of recorded drives: small, so a killed recorder loses little.
RECORDER_CHUNK_SIZE = 256 * 1024

_POLL_MS = 50
_IDLE_WAKE_S = 0.1  # how soon an idle writer notices that the receivers have stopped
# After the stop deadline the writer finishes the message in hand; a disk that does not return
# within this is given up on (the drive is left as the operating system has it).
_ABORT_GRACE_S = 1.0
# The receivers stop within a poll and the message in hand, whatever `stop_timeout_s` allows
# the writer: a stop timeout under a poll (--stop-timeout 0.001) left them running, their
# sockets open, and called them stuck.
_RECEIVER_STOP_S = 1.0


@dataclass(frozen=True)
class RecorderStats:
    """Counts of a recording. `received`: multipart messages taken off the sockets; `written`:
    messages in the drive (in chunks handed to the operating system: a kill now loses none of
    them); `dropped`: received and decoded but never written because the queue was full, or
    still queued when the recording stopped (or, sent in shared memory, recycled by their
    publisher before they were read); `undecodable`: messages the wire decoder rejected, and
    those the subscriber refused while receiving them (above its frame or byte limits);
    `failed`: messages the writer could not write (the message itself, or a storage
    failure that lost the chunk holding it); `bytes`: bytes received (all frames); `error`:
    why the recording stopped by itself (storage or transport failure), None when it ran until
    stopped. Messages still queued or in the chunk being filled count in `received` only, so
    the counts add up once the recorder is closed. `arrived`: per topic subscribed to, the
    messages decoded on it (0 for one on which nothing arrived: a topic published under
    another name is recorded as nothing, and says so here)."""

    received: int = 0
    written: int = 0
    dropped: int = 0
    undecodable: int = 0
    failed: int = 0
    bytes: int = 0
    error: str | None = None
    arrived: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True)
class _Item:
    topic: str
    message: Message
    log_time_ns: int
    size: int


class Recorder:
    """Records `topics` published on `endpoints` (connecting) into the drive `out_path`.

    `topic_endpoints`: topic -> the endpoints that topic is subscribed at instead of
    `endpoints` (sensors and the node publish on different endpoints); topics it names need not
    be in `topics`. One receiver thread per distinct set of endpoints.
    `queue_size` / `queue_bytes`: messages / received bytes buffered between the receivers and
    the writer; `hwm`: receive high-water mark per topic socket (ZeroMQ drops beyond it,
    uncounted here: keep it large); `compression`: as `DriveWriter`; `chunk_size`: bytes per
    MCAP chunk; `flush_interval_s`: the longest a written message waits before its chunk is
    handed to the operating system; `stop_timeout_s`: how long `close` goes on writing what is
    queued. `curve`: CURVE keys for tcp
    endpoints (perception.io.curve). `limits`: what a message may hold, as the node that
    receives them is configured (its `limits:`); the drive keeps them, so that what was
    recorded under raised limits is read back (`replay.drive.LIMITS_METADATA`).

    Raises (constructor):
        ValueError: no endpoints or topics, or a size or time that is not positive.
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
        queue_bytes: int = 512 * 1024 * 1024,
        compression: str | None = "zstd",
        hwm: int = 1000,
        chunk_size: int = RECORDER_CHUNK_SIZE,
        flush_interval_s: float = 0.5,
        stop_timeout_s: float = 3.0,
        topic_endpoints: Mapping[str, Sequence[str]] | None = None,
        curve: CurveKeys | None = None,
        limits: WireLimits = DEFAULT_LIMITS,
    ) -> None:
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        if queue_bytes < 1:
            raise ValueError(f"queue_bytes must be >= 1, got {queue_bytes}")
        if not flush_interval_s > 0:
            raise ValueError(f"flush_interval_s must be > 0, got {flush_interval_s}")
        if not stop_timeout_s > 0:
            raise ValueError(f"stop_timeout_s must be > 0, got {stop_timeout_s}")
        self.out_path = Path(out_path)
        self._flush_interval_s = flush_interval_s
        self._stop_timeout_s = stop_timeout_s
        self._queue_bytes = queue_bytes
        self._limits = limits
        groups: dict[tuple[str, ...], list[str]] = {}
        self._arrived = dict.fromkeys([*topics, *(topic_endpoints or {})], 0)
        for topic in self._arrived:
            where = (topic_endpoints or {}).get(topic, endpoints)
            groups.setdefault(tuple(where), []).append(topic)
        if not groups:
            raise ValueError("at least one topic is required")
        self._subscribers: list[Subscriber] = []
        try:
            for where, group in groups.items():
                # Copies: a message waits in the queue for the disk longer than a publisher's
                # shared-memory ring holds it (perception.io.shm).
                # Refused while receiving (too many frames or bytes): received all the same,
                # and counted, or a flood of them was recorded as "nothing arrived".
                self._subscribers.append(
                    Subscriber(
                        where,
                        group,
                        hwm=hwm,
                        curve=curve,
                        limits=limits,
                        shm_copy=True,
                        on_refused=functools.partial(self._refused, RateLimitedLogger(log)),
                    )
                )
            self._writer = DriveWriter(
                self.out_path, compression=compression, chunk_size=chunk_size, limits=limits
            )
        except BaseException:
            for subscriber in self._subscribers:
                subscriber.close()
            raise
        self._queue: queue.Queue[_Item] = queue.Queue(maxsize=queue_size)
        # Everything below `_lock` is shared by the threads; counts change under it.
        self._lock = threading.Lock()
        self._received = 0
        self._dropped = 0
        self._undecodable = 0
        self._failed = 0  # messages the writer refused (the lost chunk is added at the end)
        self._bytes = 0
        self._queued_bytes = 0
        self._accepted = 0  # messages the DriveWriter took (written or in the open chunk)
        self._flushed = 0  # of those, in the file
        self._in_hand: _Item | None = None  # taken off the queue, not yet accounted for
        self._error: str | None = None
        self._final: RecorderStats | None = None
        self._stop_receiving = threading.Event()
        self._receivers_done = threading.Event()
        self._abort = threading.Event()
        self._stopped_by_itself = threading.Event()
        self._receivers: list[threading.Thread] = []
        self._writer_thread: threading.Thread | None = None
        self._closed = False

    @property
    def stats(self) -> RecorderStats:
        """The counts so far (a consistent snapshot); final once the recorder is closed."""
        with self._lock:
            if self._final is not None:
                return self._final
            return RecorderStats(
                received=self._received,
                written=self._flushed,
                dropped=self._dropped,
                undecodable=self._undecodable,
                failed=self._failed,
                bytes=self._bytes,
                error=self._error,
                arrived=tuple(self._arrived.items()),
            )

    @property
    def stopped_by_itself(self) -> threading.Event:
        """Set when the recording stopped on a storage or transport failure (`stats.error`)."""
        return self._stopped_by_itself

    def start(self) -> None:
        """Start the receiver and writer threads (idempotent)."""
        if self._closed:
            raise ReplayError(f"{self.out_path}: recorder is closed")
        if self._receivers:
            return
        # Daemon threads: a disk that never returns must not keep the process alive (`close`
        # gives up on it after its deadline).
        self._writer_thread = threading.Thread(
            target=self._write_loop, name="recorder-writer", daemon=True
        )
        # Each subscriber's sockets are owned by one thread (ZeroMQ sockets are not thread-safe).
        self._receivers = [
            threading.Thread(
                target=self._receive_loop,
                args=(sub,),
                name=f"recorder-receiver-{i}",
                daemon=True,
            )
            for i, sub in enumerate(self._subscribers)
        ]
        self._writer_thread.start()
        for receiver in self._receivers:
            receiver.start()

    def run(self, stop: threading.Event) -> RecorderStats:
        """Record until `stop` is set or the recording stops by itself (`stats.error`), then
        finish the drive (`close`); returns the stats."""
        self.start()
        try:
            while not stop.wait(0.1) and not self._stopped_by_itself.is_set():
                pass
        finally:
            self.close()
        return self.stats

    def _stop_by_itself(self, error: str) -> None:
        with self._lock:
            if self._error is None:
                self._error = error
        self._stop_receiving.set()
        self._stopped_by_itself.set()

    # -- receiving

    def _receive_loop(self, subscriber: Subscriber) -> None:
        bad = RateLimitedLogger(log)
        while not self._stop_receiving.is_set():
            try:
                frames = subscriber.recv(_POLL_MS)
            except Exception as e:  # a transport fault ends the recording, the file is kept
                self._stop_by_itself(f"receiving on {', '.join(subscriber.endpoints)} failed: {e}")
                return
            if frames is None:
                continue
            try:
                self._receive_one([f.buffer for f in frames], bad)
            except Exception as e:  # a fault of one message must not end the thread
                bad.warning("receiver", f"{self.out_path}: message lost in the receiver: {e!r}")

    def _refused(self, bad: RateLimitedLogger, error: WireError) -> None:
        """A message the subscriber dropped while receiving it (on the receiver's thread)."""
        stale = isinstance(error, StalePayloadError)
        with self._lock:
            self._received += 1
            if stale:  # the receiver fell behind its publisher's ring: a drop, not a fault
                self._dropped += 1
            else:
                self._undecodable += 1
        what = "dropped" if stale else "refused"
        bad.warning(f"{what}:{error.stream}", f"{self.out_path}: message {what}: {error}")

    def _receive_one(self, buffers: list[memoryview], bad: RateLimitedLogger) -> None:
        log_time_ns = time.time_ns()
        size = sum(b.nbytes for b in buffers)
        try:
            topic, msg = wire.decode(buffers, self._limits)
        except Exception as e:  # a decoder fault on hostile input is that message's fault
            with self._lock:
                self._received += 1
                self._bytes += size
                self._undecodable += 1
            stream = e.stream if isinstance(e, WireError) else "?"
            detail = str(e) if isinstance(e, WireError) else f"{type(e).__name__}: {e}"
            bad.warning(f"undecodable:{stream}", f"{self.out_path}: undecodable message: {detail}")
            return
        item = _Item(topic, msg, log_time_ns, size)
        # Counted in one step with its fate, so that every received message is accounted for.
        with self._lock:
            self._received += 1
            self._bytes += size
            self._arrived[topic] = self._arrived.get(topic, 0) + 1
            if self._queued_bytes + size > self._queue_bytes:
                self._dropped += 1
                return
            try:
                self._queue.put_nowait(item)
            except queue.Full:
                self._dropped += 1
                return
            self._queued_bytes += size

    # -- writing

    def _write_loop(self) -> None:
        bad = RateLimitedLogger(log)
        try:
            self._write_until_done(bad)
        except DriveStorageError as e:
            self._stop_by_itself(str(e))
        except Exception as e:  # a fault outside one message: stop, keeping the file
            self._stop_by_itself(f"{self.out_path}: the writer failed ({type(e).__name__}: {e})")
        finally:
            self._account_writer()

    def _write_until_done(self, bad: RateLimitedLogger) -> None:
        next_flush = time.monotonic() + self._flush_interval_s
        while not self._abort.is_set():
            try:
                wait_s = min(_IDLE_WAKE_S, max(0.0, next_flush - time.monotonic()))
                item = self._queue.get(timeout=wait_s)
            except queue.Empty:
                if self._receivers_done.is_set() and self._queue.empty():
                    return
            else:
                with self._lock:
                    self._in_hand = item
                    self._queued_bytes -= item.size
                self._write_one(item, bad)
            if time.monotonic() >= next_flush:
                # Time, not only size: a slow topic's messages reach the file within the
                # interval, so a killed recorder loses at most that much.
                self._writer.flush()
                self._account_writer()
                next_flush = time.monotonic() + self._flush_interval_s

    def _write_one(self, item: _Item, bad: RateLimitedLogger) -> None:
        accepted = self._writer.messages_written
        try:
            self._writer.write(item.message, item.log_time_ns, item.topic)
        except DriveStorageError:
            if self._writer.messages_written == accepted:  # refused before it was taken
                with self._lock:
                    self._failed += 1
            raise
        except Exception as e:  # any fault writing one message costs that message only
            with self._lock:
                self._failed += 1
                self._in_hand = None
            # A ReplayError names the drive already.
            where = "" if isinstance(e, ReplayError) else f"{self.out_path}: "
            named = isinstance(e, ReplayError | WireError)
            detail = str(e) if named else f"{type(e).__name__}: {e}"
            bad.warning(
                f"failed:{item.topic}", f"{where}message on {item.topic} not written: {detail}"
            )
            return
        self._account_writer()

    def _account_writer(self) -> None:
        with self._lock:
            self._in_hand = None
            self._accepted = self._writer.messages_written
            self._flushed = self._writer.messages_flushed

    # -- stopping

    def close(self) -> None:
        """Stop receiving, write what is queued for up to `stop_timeout_s` (the rest is counted
        as dropped), finish the drive (summary and footer) and close the sockets. Idempotent;
        never raises for a failure of the drive: that is `stats.error`.
        """
        if self._closed:
            return
        self._closed = True
        deadline = time.monotonic() + self._stop_timeout_s
        self._stop_receiving.set()
        for receiver in self._receivers:
            receiver.join(max(_RECEIVER_STOP_S, deadline - time.monotonic()))
        stuck_receivers = [r.name for r in self._receivers if r.is_alive()]
        self._receivers_done.set()
        writer_done = True
        if self._writer_thread is not None:
            self._writer_thread.join(max(0.0, deadline - time.monotonic()))
            if self._writer_thread.is_alive():
                # Out of time: the writer stops after the message in hand; the rest is dropped.
                self._abort.set()
                self._writer_thread.join(_ABORT_GRACE_S)
            writer_done = not self._writer_thread.is_alive()
        left = 0
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
            left += 1
        if self._receivers:
            for receiver, subscriber in zip(self._receivers, self._subscribers, strict=True):
                if not receiver.is_alive():
                    subscriber.close()
        else:
            # Never started: no receiver owns the sockets (zipped with none, they raised).
            for subscriber in self._subscribers:
                subscriber.close()
        error = None
        if writer_done:
            try:
                self._writer.close()
            except ReplayError as e:
                error = str(e)
            self._account_writer()
        else:
            error = (
                f"{self.out_path}: the disk did not finish a write within "
                f"{self._stop_timeout_s + _ABORT_GRACE_S:g} s; the drive is left unfinished "
                "(readable up to its last complete chunk)"
            )
        if stuck_receivers:
            log.error("%s: receiver(s) did not stop: %s", self.out_path, ", ".join(stuck_receivers))
        with self._lock:
            self._error = self._error or error
            in_hand = 1 if self._in_hand is not None else 0
            lost_in_chunk = self._accepted - self._flushed
            self._final = RecorderStats(
                received=self._received,
                written=self._flushed,
                dropped=self._dropped + left,
                undecodable=self._undecodable,
                failed=self._failed + lost_in_chunk + in_hand,
                bytes=self._bytes,
                error=self._error,
                arrived=tuple(self._arrived.items()),
            )
        s = self._final
        log.info(
            "%s: recorded %d message(s) of %d received, %d dropped (queue full or left at the "
            "stop), %d undecodable, %d failed",
            self.out_path,
            s.written,
            s.received,
            s.dropped,
            s.undecodable,
            s.failed,
        )
