"""Errors of the calibration package."""

from __future__ import annotations

import math
import os
import reprlib
import stat
import sys
from collections.abc import Callable
from io import BufferedReader
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "MAX_TEXT_BYTES",
    "CalibrationError",
    "load_yaml",
    "not_a_file",
    "not_utf8",
    "open_regular_file",
    "parse_float",
    "read_text",
    "shown",
    "unconverted",
    "unique_keys",
]

#: The largest text file (calibration, config, timestamps, labels) `read_text` reads.
MAX_TEXT_BYTES = 64 << 20


class CalibrationError(Exception):
    """A calibration file or value is invalid; the message names the file, field and problem."""


_REPR = reprlib.Repr()
_REPR.maxlevel = 3
_REPR.maxstring = 80
_REPR.maxother = 80
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = 8


def shown(value: Any) -> str:
    """`repr(value)` cut to a few lines, for error messages: a rig document may hold anything
    (a list nested 1,000 deep, a 4 MB string), and neither may make the error itself fail
    (`repr` recurses per level) or flood the log."""
    try:
        return _REPR.repr(value)
    except Exception:  # a value whose repr fails must not replace the error being reported
        return f"<{type(value).__name__}>"


def not_utf8(e: UnicodeDecodeError, offset: int = 0) -> str:
    """`not UTF-8 text (byte 0xff at offset 12)`: a decode failure said the same way for every
    text file the project reads. `offset` is where in the file the decoded bytes began, so the
    offset shown is the file's, not the chunk's."""
    return f"not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {offset + e.start})"


def not_a_file(path: Path) -> str | None:
    """Why `path` is no file to read: "is a folder", "is not a regular file (a device, pipe or
    socket)" (reading one would block or never end) or "does not exist"; None where it is a
    regular file (or a link to one)."""
    if path.is_file():
        return None
    if path.is_dir():
        return "is a folder"
    if path.exists():
        return "is not a regular file (a device, pipe or socket)"
    return "does not exist"


def open_regular_file(
    path: Path, what: str, error: Callable[[str], Exception] = CalibrationError
) -> BufferedReader:
    """`path` open for reading (binary), once it is known to be a regular file; the caller
    closes it (`with`). Every reader of a file a user names goes through here: a FIFO with no
    writer blocks the open itself and a device such as /dev/zero never ends, so the file is
    opened without blocking and refused unless it is a regular file, before a byte is read.

    Raises:
        error: `"PATH: cannot read WHAT (reason)"` (missing, a folder, no permission) or
            `"PATH: WHAT is not a regular file (a device, pipe or socket)"`.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise error(f"{path}: cannot read {what} ({e.strerror or e})") from e
    try:
        f = os.fdopen(fd, "rb")  # refuses a folder (Is a directory)
    except OSError as e:
        os.close(fd)  # not closed by fdopen's failure
        raise error(f"{path}: cannot read {what} ({e.strerror or e})") from e
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        f.close()
        raise error(f"{path}: {what} is not a regular file (a device, pipe or socket)")
    return f


def read_text(path: Path, what: str, error: Callable[[str], Exception] = CalibrationError) -> str:
    """The UTF-8 text of a file a user gave (a calibration, config or dataset text file).

    Every package reads such files, and a binary one given by mistake must fail as a malformed
    file of that package does, so the package's own error type is `error`.

    Raises:
        error: `"PATH: cannot read WHAT (reason)"` when the file cannot be read,
            `"PATH: WHAT is not a regular file (a device, pipe or socket)"` (`open_regular_file`),
            or `"PATH: not UTF-8 text (byte 0xff at offset N)"` when it is not UTF-8.
    """
    with open_regular_file(path, what, error) as f:
        size = os.fstat(f.fileno()).st_size
        if size > MAX_TEXT_BYTES:
            raise error(
                f"{path}: {what} is {size} bytes, larger than the {MAX_TEXT_BYTES >> 20} MiB a "
                "text file of this kind may be"
            )
        try:
            data = f.read(MAX_TEXT_BYTES + 1)
        except OSError as e:
            raise error(f"{path}: cannot read {what} ({e.strerror or e})") from e
    try:
        # Decoded whole, not through a text stream, so the offset reported is the file's.
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(f"{path}: {not_utf8(e)}") from e


class DuplicateKeyError(ValueError):
    """A JSON object gives `key` twice; `record` is the object (the last value of each key)."""

    def __init__(self, key: str, record: dict[str, Any]) -> None:
        super().__init__(f"the key {shown(key)} given twice")
        self.key = key
        self.record = record


def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """`json.load`'s `object_pairs_hook` refusing a key given twice: json keeps the last without
    a word, so which of two values a file holds would be its order's choice. About 20% of
    json.load's own time (only a short object's keys are walked, and only when some repeat).

    Raises:
        DuplicateKeyError: naming the key.
    """
    record = dict(pairs)
    if len(record) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise DuplicateKeyError(key, record)
            seen.add(key)
    return record


def parse_float(text: str) -> float:
    """`float(text)` for a number in a text data file (a calibration, label, timestamps or
    header field), refusing what float() takes that no such file holds.

    float() reads `7_00` as 700.0 (Python's digit grouping) and digits of any script (U+FF17,
    a full-width 7) as ASCII ones: in a file written by a program either is damage, and read
    as a number it is a wrong value, not an error. `nan` and `inf` are returned, for the
    caller to refuse in its own words where a finite value is needed.

    Raises:
        ValueError: float()'s own message, `could not convert string to float: '7_00'`.
    """
    # Cheaper than a pattern per token: with ASCII and no underscore, what float() takes is
    # a decimal number, nan or inf.
    if not text.isascii() or "_" in text:
        raise ValueError(f"could not convert string to float: {text!r}")
    return float(text)


def unconverted(e: ValueError) -> str:
    """What a parser's ValueError says, for a value Python refuses to convert (JSON's and
    YAML's integers go through `int()`, which takes at most `sys.get_int_max_str_digits()`
    digits): the digit limit said plainly (the message's advice, to raise the limit, is not
    the user's to take), any other as it is."""
    problem = str(e)
    if "integer string conversion" in problem:
        return f"an integer of more than {sys.get_int_max_str_digits()} digits"
    return problem


def load_yaml(
    text: str, where: str | Path, invalid: str, error: Callable[[str], Exception] = CalibrationError
) -> Any:
    """`yaml.safe_load` of a user's file, whatever PyYAML cannot take said in one line:
    `"WHERE: INVALID (the parser's message)"`, `"WHERE: INVALID (nests too deep)"`, or
    `"WHERE: INVALID value (...)"` for a scalar Python refuses to convert. Refuses, besides,
    a key given twice and a number YAML 1.1 reads as another value than its reader sees
    (`7_00`, `1:30`, `0755`, `0b101`): `"WHERE: INVALID (line L, column C: `7_00` reads as
    700 in YAML 1.1, which drops the underscores: write 700, or quote it for text)"`.

    Raises:
        error: as above.
    """
    loader = _BoundedLoader(text)
    try:
        return loader.get_single_data()
    except _AliasBombError as e:
        raise error(
            f"{where}: {invalid} (its aliases repeat more than {e.limit:,} values: "
            "an alias bomb, or anchors used far more than a file of this kind needs)"
        ) from None
    except yaml.YAMLError as e:
        raise error(f"{where}: {invalid} ({' '.join(str(e).split())})") from e
    except RecursionError:
        # PyYAML composes nested collections recursively: thousands of `[` exhaust the stack.
        raise error(f"{where}: {invalid} (nests too deep)") from None
    except ValueError as e:
        # PyYAML converts scalars with Python's int() and datetime(), which refuse some values
        # (a 31st of February, an integer of more digits than Python converts).
        raise error(f"{where}: {invalid} value ({unconverted(e).split(';')[0]})") from None
    finally:
        loader.dispose()


#: What a YAML document may hold with its aliases expanded, at least: an alias (`*name`) is one
#: value in the text and its whole anchored collection to whoever walks what was read, so nine
#: lines of nested aliases hold 9^9 values (a "billion laughs"), which the readers of the
#: document then walked until memory ran out. Without aliases a document holds fewer values
#: than it has characters, so the limit is also at least its length.
MAX_YAML_VALUES = 1_000_000


class _AliasBombError(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.limit = limit


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader that refuses a document whose aliases expand past
    `MAX_YAML_VALUES` values (or twice its length), counted as each alias is composed, before
    anything is built: documents without aliases cost nothing more."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self._limit = max(MAX_YAML_VALUES, 2 * len(text))
        self._repeated = 0
        self._sizes: dict[int, int] = {}

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]  # (untyped in the stubs)
            anchored = self.anchors.get(event.anchor)
            if anchored is not None:
                self._repeated += _expanded_size(anchored, self._sizes)
                if self._repeated > self._limit:
                    raise _AliasBombError(self._limit)
        node: yaml.Node | None = super().compose_node(parent, index)
        return node

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        # PyYAML keeps the last of two equal keys: a section written twice lost the first
        # without a word. Merge keys (`<<: *base`) may still be overridden, as YAML means.
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _MERGE_TAG:
                continue
            key = self.construct_object(key_node)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"found the key {key!r} twice",
                    key_node.start_mark,
                )
            seen.add(key)
        mapping: dict[Any, Any] = super().construct_mapping(node, deep)
        return mapping

    # YAML 1.1's number rules, which PyYAML follows, read some plain scalars as a number other
    # than the one a reader of the file sees (`7_00` is 700, `1:30` is 90, `0755` is 493, and
    # YAML 1.2 reads all three as other values or text): those are refused, naming the scalar,
    # what it reads as and what to write instead. Keys too: they are built here as well.
    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        value = super().construct_yaml_int(node)
        _refuse_misread_number(node, value)
        return value

    def construct_yaml_float(self, node: yaml.ScalarNode) -> float:
        value = super().construct_yaml_float(node)
        _refuse_misread_number(node, value)
        return value


# The constructor table holds functions, not method names: the overrides are registered on the
# subclass (`add_constructor` gives it its own copy of the table; SafeLoader's stays as it is).
_BoundedLoader.add_constructor("tag:yaml.org,2002:int", _BoundedLoader.construct_yaml_int)
_BoundedLoader.add_constructor("tag:yaml.org,2002:float", _BoundedLoader.construct_yaml_float)


def _refuse_misread_number(node: yaml.ScalarNode, value: float) -> None:
    """Refuses a number written in a form of YAML 1.1 that means something else to its reader:
    digits grouped with `_` (dropped), `a:b` (base 60), a leading `0` (octal) and `0b`
    (binary, text in YAML 1.2). `0x1F` is kept: 31 in YAML 1.1, YAML 1.2 and Python alike.

    Raises:
        yaml.constructor.ConstructorError: `line L, column C: `7_00` reads as 700 in YAML 1.1,
            which drops the underscores: write 700, or quote it for text`.
    """
    written = node.value
    body = written.lstrip("+-")
    sign = "-" if written.startswith("-") else ""
    lower = body.lower()
    if ":" in body:
        why, instead = "which reads numbers with colons as base 60", _yaml_number(value)
    elif lower.startswith("0b"):
        why = "which reads 0b as binary (YAML 1.2 reads it as text)"
        instead = _yaml_number(value)
    elif lower.startswith("0x"):
        if "_" not in body:
            return
        why, instead = "which drops the underscores", f"{sign}0x{body[2:].replace('_', '')}"
    elif isinstance(value, int) and len(body) > 1 and body.startswith("0"):
        why = "which reads a leading 0 as octal"
        decimal = int(sign + body.replace("_", ""))
        instead = str(value)
        if decimal != value:
            octal = body.replace("_", "").lstrip("0")
            instead = (
                f"{decimal} for the decimal or {value} for the octal value (YAML 1.1 reads "
                f"{sign}0o{octal} as text)"
            )
    elif "_" in body:
        why, instead = "which drops the underscores", _yaml_number(value)
    else:
        return
    mark = node.start_mark
    raise yaml.constructor.ConstructorError(
        problem=f"line {mark.line + 1}, column {mark.column + 1}: `{written}` reads as "
        f"{_yaml_number(value)} in YAML 1.1, {why}: write {instead}, or quote it for text"
    )


def _yaml_number(value: float) -> str:
    """`value` spelled as YAML 1.1 reads it back: an exponent needs a dot there (`1e+16` is
    text, `1.0e+16` a float)."""
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return ".nan"
    if math.isinf(value):
        return "-.inf" if value < 0 else ".inf"
    spelled = repr(value)
    mantissa, e, exponent = spelled.partition("e")
    if e and "." not in mantissa:
        spelled = f"{mantissa}.0e{exponent}"
    return spelled


_MERGE_TAG = "tag:yaml.org,2002:merge"


def _expanded_size(root: yaml.Node, sizes: dict[int, int]) -> int:
    """How many nodes `root` holds with its aliases expanded (an alias composes to the very
    node it names, so a node reached twice is counted twice). `sizes`: each node's size,
    computed once and reused. A node still being counted when a recursive alias reaches it
    again counts one (the readers stop at their depth limits there). Without recursion: the
    documents may nest deep."""
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if children_done:
            sizes[id(node)] = 1 + sum(sizes.get(id(child), 1) for child in _children(node))
        elif id(node) not in sizes:
            sizes[id(node)] = 1  # in progress: what a recursive alias back to it counts
            stack.append((node, True))
            stack.extend((child, False) for child in _children(node) if id(child) not in sizes)
    return sizes[id(root)]


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []
