"""Opening a ROS 2 bag with rosbags and decoding its messages, every fault one Rosbag2Error.

A bag is a folder (`metadata.yaml` and its storage files) or one storage file (`.mcap`,
`.db3`). Message types are decoded with the definitions the bag stores with its topics, and
for types it stores none of (older sqlite3 bags) with rosbags' stock ROS 2 typestore.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rosbags.interfaces import Connection, MessageDefinitionFormat
from rosbags.rosbag2 import Reader
from rosbags.typesys import Stores, TypesysError, get_types_from_idl, get_types_from_msg
from rosbags.typesys import get_typestore as stock_typestore
from rosbags.typesys.store import Typestore

from replay.rosbag2.errors import Rosbag2Error

__all__ = ["Bag", "open_bag"]

_IDL_SEPARATOR = "=" * 80 + "\n"
#: Longest sequence a message may hold (elements): a corrupt length field must fail cleanly,
#: not allocate gigabytes. 1 << 28 bytes is well above any real sensor message.
_MAX_SEQUENCE = 1 << 28


def _types_of(connection: Connection) -> dict[str, Any]:
    definition = connection.msgdef
    if definition.format == MessageDefinitionFormat.NONE or not definition.data.strip():
        return {}
    if definition.format == MessageDefinitionFormat.MSG:
        return dict(get_types_from_msg(definition.data, connection.msgtype))
    types: dict[str, Any] = {}
    if definition.data.startswith(f"{_IDL_SEPARATOR}IDL: "):
        for part in definition.data.split(_IDL_SEPARATOR)[1:]:
            types.update(get_types_from_idl(part.split("\n", 1)[1]))
    else:
        types.update(get_types_from_idl(definition.data))
    return types


def _typestore(connections: Iterable[Connection]) -> Typestore:
    """The bag's own definitions, completed by the stock typestore. A definition that cannot
    be parsed or clashes with an earlier one is left out (its type is then unknown unless
    the stock typestore has it): a topic nobody imports must not fail the import."""
    store = stock_typestore(Stores.EMPTY)
    store.max_sequence_length = _MAX_SEQUENCE
    for connection in connections:
        try:
            store.register(_types_of(connection))
        except Exception:  # rosbags raises assorted errors on a bad definition
            continue
    stock = stock_typestore(Stores.LATEST)
    missing = {k: v for k, v in stock.fielddefs.items() if k not in store.fielddefs}
    try:
        store.register(missing)
    except TypesysError:
        # A bag type under a stock name with other fields: register the stock types one by
        # one, leaving out those that clash.
        for name, definition in missing.items():
            try:
                store.register({name: definition})
            except TypesysError:
                continue
    return store


class Bag:
    """An open bag: its connections, topic types, typestore, and checked reads."""

    def __init__(self, path: Path, reader: Reader) -> None:
        self.path = path
        self._reader = reader
        self.connections: list[Connection] = list(reader.connections)
        self.typestore = _typestore(self.connections)
        types: dict[str, set[str]] = {}
        for c in self.connections:
            types.setdefault(c.topic, set()).add(c.msgtype)
        #: topic -> message type, for topics of one type.
        self.topics = {t: next(iter(m)) for t, m in types.items() if len(m) == 1}
        #: topics holding messages of several types (never imported).
        self.mixed = {t: sorted(m) for t, m in types.items() if len(m) > 1}

    @property
    def known_types(self) -> frozenset[str]:
        return frozenset(self.typestore.fielddefs)

    def count(self, topics: Iterable[str]) -> int:
        wanted = set(topics)
        return sum(c.msgcount for c in self.connections if c.topic in wanted)

    def raw(self, topics: Iterable[str]) -> Iterator[tuple[str, str, int, bytes]]:
        """(topic, message type, receive time ns, serialized bytes) of `topics`, in receive
        order. Raises Rosbag2Error naming the bag when its storage cannot be read."""
        wanted = set(topics)
        connections = [c for c in self.connections if c.topic in wanted]
        if not connections:
            return
        try:
            for connection, log_time, data in self._reader.messages(connections=connections):
                yield connection.topic, connection.msgtype, int(log_time), data
        except Exception as e:  # a damaged storage file raises whatever its parser meets
            raise Rosbag2Error(
                f"{self.path}: cannot read the bag's messages ({type(e).__name__}: {e})"
            ) from e

    def decode(self, data: bytes, msgtype: str, where: str) -> Any:
        """One message decoded. Raises Rosbag2Error naming `where` when it cannot be."""
        try:
            return self.typestore.deserialize_cdr(data, msgtype)
        except Exception as e:  # the bytes are input: any fault is this message's
            raise Rosbag2Error(f"{where}: cannot decode {msgtype} ({type(e).__name__}: {e})") from e


@contextmanager
def open_bag(path: Path) -> Iterator[Bag]:
    """The bag at `path` (a bag folder, or its `.mcap` / `.db3` file), open for the block.

    Raises Rosbag2Error naming the path: missing, not a bag, or unreadable."""
    path = Path(path)
    if not path.exists():
        raise Rosbag2Error(f"{path}: ROS 2 bag does not exist")
    # A pipe would be opened for reading and wait for a writer for ever: the import hung.
    for entry in (path, *(sorted(path.iterdir()) if path.is_dir() else ())):
        if entry.exists() and not entry.is_dir() and not entry.is_file():
            raise Rosbag2Error(f"{entry}: not a regular file (a device, pipe or socket)")
    if path.is_dir() and not (path / "metadata.yaml").is_file():
        raise Rosbag2Error(f"{path}: not a ROS 2 bag folder (no metadata.yaml)")
    if path.is_file() and path.suffix not in (".mcap", ".db3"):
        raise Rosbag2Error(f"{path}: not a ROS 2 bag (a bag folder, .mcap or .db3 file)")
    try:
        reader = Reader(path)
        reader.open()
    except Exception as e:  # rosbags and its storage plugins raise assorted errors
        raise Rosbag2Error(
            f"{path}: not a readable ROS 2 bag ({type(e).__name__}: {' '.join(str(e).split())})"
        ) from e
    try:
        yield Bag(path, reader)
    finally:
        reader.close()
