"""A Foxglove WebSocket client for tests, speaking the protocol itself (`websockets`): the
server's `serverInfo` and `advertise` JSON, a `subscribe` to every channel advertised, and the
binary message data frames (opcode 0x01, uint32 subscription id, uint64 log time, payload),
decoded with the schema each channel advertised (protobuf: its FileDescriptorSet; json).

The foxglove-sdk server speaks the protocol under the subprotocol name `foxglove.sdk.v1`
(`foxglove.websocket.v1` before the SDK renamed it); the client offers both, as the app does.
"""

from __future__ import annotations

import base64
import json
import signal
import struct
import sys
import threading
import time
import urllib.request
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Subprotocol

SUBPROTOCOLS = [Subprotocol("foxglove.sdk.v1"), Subprotocol("foxglove.websocket.v1")]
MESSAGE_DATA = 0x01
_HEADER = struct.Struct("<BIQ")


@dataclass(frozen=True)
class Received:
    """One message: its channel's topic and schema, the log time, the decoded message."""

    topic: str
    schema_name: str
    log_time_ns: int
    message: Any
    size: int


class FoxgloveClient:
    """Connects to `url`, subscribes to every channel the server advertises (now and later)
    and keeps what arrives, per topic, in `received`."""

    def __init__(self, url: str, timeout_s: float = 5.0, *, decode: bool = True) -> None:
        """`decode` False: keep only each message's size (`message` None), as a viewer that
        costs its machine as little as possible (the benchmark's)."""
        # Entered here, left in `close`: websockets wants its connections used as contexts.
        self.ws: ClientConnection = connect(
            url, subprotocols=SUBPROTOCOLS, max_size=None, open_timeout=timeout_s
        ).__enter__()
        self.subprotocol = self.ws.subprotocol
        self.server_info = json.loads(self.ws.recv(timeout_s))
        assert self.server_info["op"] == "serverInfo", self.server_info
        self.channels: dict[int, dict[str, Any]] = {}
        self._classes: dict[int, type[Any] | None] = {}
        self._subscriptions: dict[int, int] = {}
        self.received: dict[str, list[Received]] = defaultdict(list)
        self._decode = decode
        #: The server's status messages (errors and warnings about this client).
        self.statuses: list[dict[str, Any]] = []

    def close(self) -> None:
        self.ws.close()

    def __enter__(self) -> FoxgloveClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def poll(self, duration_s: float) -> None:
        """Handle what the server sends for `duration_s`."""
        deadline = time.monotonic() + duration_s
        while (left := deadline - time.monotonic()) > 0:
            try:
                data = self.ws.recv(min(left, 0.1))
            except TimeoutError:
                continue
            except ConnectionClosed:
                return
            if isinstance(data, str):
                self._control(json.loads(data))
            else:
                self._data(data)

    def wait_for(self, topics: set[str], timeout_s: float) -> None:
        """Until a message of every topic in `topics` arrived; AssertionError after
        `timeout_s` naming those that did not."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if topics <= set(self.received):
                return
            self.poll(0.1)
        missing = sorted(topics - set(self.received))
        advertised = sorted(c["topic"] for c in self.channels.values())
        raise AssertionError(f"no message on {missing}; advertised: {advertised}")

    def _control(self, doc: dict[str, Any]) -> None:
        if doc["op"] == "status":
            self.statuses.append(doc)
        if doc["op"] != "advertise":
            return
        subscribe = []
        for channel in doc["channels"]:
            cid = int(channel["id"])
            self.channels[cid] = channel
            self._classes[cid] = _message_class(channel)
            sid = len(self._subscriptions) + 1
            self._subscriptions[sid] = cid
            subscribe.append({"id": sid, "channelId": cid})
        self.ws.send(json.dumps({"op": "subscribe", "subscriptions": subscribe}))

    def _data(self, data: bytes) -> None:
        opcode, sid, log_time_ns = _HEADER.unpack_from(data)
        if opcode != MESSAGE_DATA:
            return
        cid = self._subscriptions[sid]
        channel = self.channels[cid]
        payload = data[_HEADER.size :]
        cls = self._classes[cid]
        if not self._decode:
            message: Any = None
        elif channel["encoding"] == "json":
            message = json.loads(payload)
        else:
            assert channel["encoding"] == "protobuf" and cls is not None, channel
            message = cls.FromString(payload)
        self.received[channel["topic"]].append(
            Received(channel["topic"], channel["schemaName"], log_time_ns, message, len(payload))
        )


def _message_class(channel: dict[str, Any]) -> type[Any] | None:
    """The protobuf message class of a channel, from the FileDescriptorSet it advertised."""
    if channel["encoding"] != "protobuf":
        return None
    assert channel["schemaEncoding"] == "protobuf", channel
    files = descriptor_pb2.FileDescriptorSet.FromString(base64.b64decode(channel["schema"]))
    pool = descriptor_pool.DescriptorPool()
    for file in files.file:
        pool.Add(file)
    descriptor = pool.FindMessageTypeByName(channel["schemaName"])
    cls: type[Any] = message_factory.GetMessageClass(descriptor)
    return cls


def main(argv: list[str]) -> int:
    """`python -m tests.foxglove_client URL SECONDS [METRICS_URL]`: a viewer subscribed to every
    channel, keeping sizes only, scraping the metrics endpoint once a second, until SECONDS
    passed, SIGINT or the server goes away; prints the messages and bytes per topic and the
    scrapes as one JSON line at the end."""
    url, seconds = argv[0], float(argv[1])
    metrics_url = argv[2] if len(argv) > 2 else None
    scrapes = 0
    # SIGINT or SIGTERM ends the watch at the next poll, with the report: a KeyboardInterrupt
    # raised inside the WebSocket library could leave its locks held, and closing would hang.
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda _signum, _frame: stop.set())
    with FoxgloveClient(url, decode=False) as client:
        end = time.monotonic() + seconds
        next_scrape = time.monotonic()
        try:
            while not stop.is_set() and time.monotonic() < end:
                client.poll(0.2)
                if metrics_url is not None and time.monotonic() >= next_scrape:
                    next_scrape += 1.0
                    with urllib.request.urlopen(metrics_url, timeout=5) as response:
                        response.read()
                    scrapes += 1
        except OSError:  # the server went away: the watch ends, with the report
            pass
    counts = {t: [len(r), sum(x.size for x in r)] for t, r in client.received.items()}
    print(json.dumps({"received": counts, "scrapes": scrapes}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
