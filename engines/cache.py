"""The TensorRT engine cache: serialized engines keyed by everything that makes them valid.

A serialized TensorRT engine only loads on the TensorRT version and GPU (compute capability) it
was built for, and only means what was asked for at the precision, shapes and builder options it
was built with. Stale engines after a TensorRT upgrade or a GPU swap are a common failure, so the
cache key holds all of these, every entry has a JSON sidecar naming them, and a lookup that finds
an entry for the same model with a different key says exactly what changed before rebuilding.

Layout of the cache directory::

    <name>-<digest>.engine   the serialized engine
    <name>-<digest>.json     the sidecar: the key fields, engine size/sha256, creation time

Everything here is pure Python; the GPU facts come in as a :class:`DeviceInfo`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import stat
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from engines.errors import EngineError

__all__ = [
    "DEFAULT_ENGINE_CACHE_DIR",
    "CacheEntry",
    "CacheLookup",
    "DeviceInfo",
    "EngineCache",
    "EngineCacheKey",
    "cache_root",
    "describe_key_change",
    "file_sha256",
]

_log = logging.getLogger(__name__)


def cache_root() -> Path:
    """The project's cache folder, `$XDG_CACHE_HOME/perception-node` (the XDG base directory
    specification: `~/.cache` where the variable is unset, empty or not an absolute path).
    Read once, at import: the engine cache, the model cache and the exports live under it."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if os.path.isabs(xdg) else Path("~/.cache").expanduser()
    return base / "perception-node"


DEFAULT_ENGINE_CACHE_DIR = cache_root() / "engines"

_SIDECAR_VERSION = 1
#: A sidecar is under a kilobyte; anything much larger is not one.
_MAX_SIDECAR_BYTES = 1 << 20
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in chunks.

    Raises:
        OSError: the file cannot be read.
    """
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class DeviceInfo:
    """The build-relevant facts of the machine: TensorRT version, GPU name, compute capability.

    ``compute_capability`` is ``"<major>.<minor>"`` (``"8.6"``).
    """

    tensorrt_version: str
    gpu_name: str
    compute_capability: str


@dataclass(frozen=True)
class EngineCacheKey:
    """Everything a serialized engine depends on.

    ``model_name`` names the entry (file prefix, log lines) and is not part of :meth:`digest`:
    two names for the same ONNX file and settings share nothing but are equally valid.
    ``input_shapes`` is ``((name, (d0, d1, ...)), ...)`` in the model's input order;
    ``builder_options`` is sorted ``(option, value)`` pairs (workspace size, optimisation
    level, CUDA graphs are runtime-only and do not belong here).
    """

    model_name: str
    onnx_sha256: str
    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    precision: str
    input_shapes: tuple[tuple[str, tuple[int, ...]], ...]
    builder_options: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if not _NAME_RE.match(self.model_name):
            raise EngineError(
                f"engine cache: model name {self.model_name!r} must be letters, digits, "
                "'_', '.', '+' or '-'"
            )

    @classmethod
    def create(
        cls,
        *,
        model_name: str,
        onnx_sha256: str,
        device: DeviceInfo,
        precision: str,
        input_shapes: Mapping[str, tuple[int, ...]] | tuple[tuple[str, tuple[int, ...]], ...],
        builder_options: Mapping[str, object] | None = None,
    ) -> EngineCacheKey:
        """Builds a key from the device facts and build settings (options are stringified).

        Raises:
            EngineError: an invalid model name.
        """
        shapes = tuple(input_shapes.items()) if isinstance(input_shapes, Mapping) else input_shapes
        return cls(
            model_name=model_name,
            onnx_sha256=onnx_sha256,
            tensorrt_version=device.tensorrt_version,
            gpu_name=device.gpu_name,
            compute_capability=device.compute_capability,
            precision=precision,
            input_shapes=tuple((str(n), tuple(int(d) for d in s)) for n, s in shapes),
            builder_options=tuple(
                sorted((str(k), str(v)) for k, v in (builder_options or {}).items())
            ),
        )

    def fields(self) -> dict[str, Any]:
        """The key as JSON-ready values (shapes as lists)."""
        data = asdict(self)
        data["input_shapes"] = [[n, list(s)] for n, s in self.input_shapes]
        data["builder_options"] = [[k, v] for k, v in self.builder_options]
        return data

    @classmethod
    def from_fields(cls, data: Mapping[str, Any]) -> EngineCacheKey:
        """Inverse of :meth:`fields`.

        Raises:
            EngineError: missing or malformed fields.
        """
        try:
            return cls(
                model_name=str(data["model_name"]),
                onnx_sha256=str(data["onnx_sha256"]),
                tensorrt_version=str(data["tensorrt_version"]),
                gpu_name=str(data["gpu_name"]),
                compute_capability=str(data["compute_capability"]),
                precision=str(data["precision"]),
                input_shapes=tuple(
                    (str(n), tuple(int(d) for d in s)) for n, s in data["input_shapes"]
                ),
                builder_options=tuple((str(k), str(v)) for k, v in data["builder_options"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise EngineError(f"engine cache: malformed key fields: {exc!r}") from exc

    def digest(self) -> str:
        """Hex sha256 over every field except :attr:`model_name`, order-independent JSON."""
        data = self.fields()
        del data["model_name"]
        blob = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()

    @property
    def stem(self) -> str:
        """``<model_name>-<first 16 hex of digest>``: the entry's file name without suffix."""
        return f"{self.model_name}-{self.digest()[:16]}"


def _shapes_text(shapes: tuple[tuple[str, tuple[int, ...]], ...]) -> str:
    return ", ".join(f"{n}[{'x'.join(str(d) for d in s)}]" for n, s in shapes)


def describe_key_change(old: EngineCacheKey, new: EngineCacheKey) -> str:
    """Why an engine built for ``old`` is not valid for ``new``, for the rebuild log line.

    Starts with the platform (``"cached engine was built for TensorRT 10.0 on <gpu> (sm 8.6),
    now 10.3 on <gpu> (sm 8.6)"``) and appends every other field that changed.
    """
    text = (
        f"cached engine was built for TensorRT {old.tensorrt_version} on {old.gpu_name} "
        f"(sm {old.compute_capability}), now {new.tensorrt_version} on {new.gpu_name} "
        f"(sm {new.compute_capability})"
    )
    changes: list[str] = []
    if old.precision != new.precision:
        changes.append(f"precision {old.precision} -> {new.precision}")
    if old.onnx_sha256 != new.onnx_sha256:
        changes.append(f"ONNX file {old.onnx_sha256[:12]}… -> {new.onnx_sha256[:12]}…")
    if old.input_shapes != new.input_shapes:
        changes.append(
            f"input shapes {_shapes_text(old.input_shapes)} -> {_shapes_text(new.input_shapes)}"
        )
    if old.builder_options != new.builder_options:
        changes.append(
            f"builder options {dict(old.builder_options)} -> {dict(new.builder_options)}"
        )
    return text + ("; changed: " + ", ".join(changes) if changes else "")


@dataclass(frozen=True)
class CacheEntry:
    """One cached engine as recorded by its sidecar."""

    key: EngineCacheKey
    engine_path: Path
    sidecar_path: Path
    size_bytes: int
    engine_sha256: str
    created: float

    @property
    def name(self) -> str:
        """The model name of the entry."""
        return self.key.model_name


@dataclass(frozen=True)
class CacheLookup:
    """The result of :meth:`EngineCache.lookup`.

    ``status``: ``"hit"`` (``entry`` is valid for the key), ``"stale"`` (no valid entry, but
    ``stale`` lists entries of the same model built for another key, ``reason`` says how they
    differ), or ``"miss"``.
    """

    status: Literal["hit", "stale", "miss"]
    entry: CacheEntry | None = None
    stale: tuple[CacheEntry, ...] = ()
    reason: str = ""


class EngineCache:
    """A directory of serialized engines with JSON sidecars.

    Args:
        directory: the cache directory (created on first store).
    """

    def __init__(self, directory: Path = DEFAULT_ENGINE_CACHE_DIR) -> None:
        self.directory = Path(directory).expanduser()

    def engine_path(self, key: EngineCacheKey) -> Path:
        """Where the engine for ``key`` lives (whether or not it exists)."""
        return self.directory / f"{key.stem}.engine"

    def sidecar_path(self, key: EngineCacheKey) -> Path:
        """Where the sidecar for ``key`` lives."""
        return self.directory / f"{key.stem}.json"

    def _read_entry(self, sidecar: Path) -> CacheEntry | None:
        # A half-written or foreign JSON file is not an entry; skip it rather than fail the node.
        try:
            # Only a regular file of a sidecar's size is read: a pipe named *.json would block
            # the read (the node's start, `engines list`) for ever.
            st = sidecar.stat()
            if not stat.S_ISREG(st.st_mode) or st.st_size > _MAX_SIDECAR_BYTES:
                _log.warning("engine cache: ignoring %s: not a sidecar of this cache", sidecar)
                return None
            data = json.loads(sidecar.read_text())
            key = EngineCacheKey.from_fields(data["key"])
            engine = sidecar.with_suffix(".engine")
            if not engine.is_file():
                return None
            return CacheEntry(
                key=key,
                engine_path=engine,
                sidecar_path=sidecar,
                size_bytes=int(data["size_bytes"]),
                engine_sha256=str(data["engine_sha256"]),
                created=float(data["created"]),
            )
        except KeyError as exc:
            _log.warning("engine cache: ignoring sidecar %s: no field %s", sidecar, exc)
            return None
        except (
            OSError,
            ValueError,
            TypeError,
            ArithmeticError,
            RecursionError,
            EngineError,
        ) as exc:
            # A JSON document of another shape (a list, a number) reads as a TypeError, one
            # nested thousands deep as a RecursionError, an infinite size as an OverflowError.
            why = (
                "not a sidecar of this cache"
                if isinstance(exc, TypeError | RecursionError)
                else exc
            )
            _log.warning("engine cache: ignoring unreadable sidecar %s: %s", sidecar, why)
            return None

    def list_entries(self) -> list[CacheEntry]:
        """Every valid entry, sorted by model name then newest first."""
        if not self.directory.is_dir():
            return []
        entries = [e for p in self.directory.glob("*.json") if (e := self._read_entry(p))]
        return sorted(entries, key=lambda e: (e.name, -e.created))

    def lookup(self, key: EngineCacheKey) -> CacheLookup:
        """Finds the engine for ``key``.

        An entry whose sidecar key equals ``key`` and whose engine file has the recorded size and
        sha256 is a hit. Otherwise entries of the same model name are stale, and ``reason``
        describes the difference to the newest of them.
        """
        entries = self.list_entries()
        for entry in entries:
            if entry.key == key:
                problem = _damage(entry)
                if problem is None:
                    return CacheLookup("hit", entry=entry)
                _log.warning("engine cache: %s %s; rebuilding", entry.engine_path, problem)
        stale = tuple(e for e in entries if e.name == key.model_name and e.key != key)
        if stale:
            return CacheLookup("stale", stale=stale, reason=describe_key_change(stale[0].key, key))
        return CacheLookup("miss")

    def store(self, key: EngineCacheKey, engine: bytes) -> CacheEntry:
        """Writes ``engine`` and its sidecar atomically (temp file + rename).

        Raises:
            EngineError: the cache directory cannot be written.
        """
        path = self.engine_path(key)
        sidecar = self.sidecar_path(key)
        entry = CacheEntry(
            key=key,
            engine_path=path,
            sidecar_path=sidecar,
            size_bytes=len(engine),
            engine_sha256=hashlib.sha256(engine).hexdigest(),
            created=time.time(),
        )
        record = {
            "version": _SIDECAR_VERSION,
            "key": key.fields(),
            "digest": key.digest(),
            "size_bytes": entry.size_bytes,
            "engine_sha256": entry.engine_sha256,
            "created": entry.created,
        }
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            # Engine first, sidecar last: a sidecar only ever names a complete engine.
            _atomic_write(path, engine)
            _atomic_write(sidecar, (json.dumps(record, indent=2) + "\n").encode())
        except OSError as exc:
            raise EngineError(f"engine cache: cannot write {path}: {exc}") from exc
        return entry

    def remove(self, entry: CacheEntry) -> None:
        """Deletes an entry's engine and sidecar (missing files are fine)."""
        for p in (entry.sidecar_path, entry.engine_path):
            p.unlink(missing_ok=True)

    def get_or_build(
        self, key: EngineCacheKey, build: Callable[[], bytes]
    ) -> tuple[CacheEntry, Literal["cached", "built", "rebuilt"]]:
        """The entry for ``key``, calling ``build()`` for the serialized engine when needed.

        A stale entry is reported (``"rebuilding <model>: cached engine was built for ..."``
        at WARNING) and rebuilt; stale entries for another TensorRT version or GPU are removed
        once the new engine is stored.

        Raises:
            EngineError: from ``build`` or from :meth:`store`.
        """
        found = self.lookup(key)
        if found.status == "hit" and found.entry is not None:
            _log.info("engine cache: using %s", found.entry.engine_path)
            return found.entry, "cached"
        if found.status == "stale":
            _log.warning("rebuilding %s: %s", key.model_name, found.reason)
        else:
            _log.info("engine cache: no engine for %s; building", key.model_name)
        entry = self.store(key, build())
        for old in found.stale:
            # An engine for another TensorRT/GPU can never load here again; one for another
            # precision or shape is still valid for that configuration, so it is kept.
            if _platform(old.key) != _platform(key):
                self.remove(old)
        return entry, "rebuilt" if found.status == "stale" else "built"


def _damage(entry: CacheEntry) -> str | None:
    """What is wrong with an entry's engine file (None: it is the one its sidecar records).

    Hashed, not only sized: a damaged engine of the right size was a hit, so `engines build`
    said "cached" for it and the node found out at its start, rebuilding for minutes.
    """
    try:
        actual = entry.engine_path.stat().st_size
        if actual != entry.size_bytes:
            return f"is truncated ({actual} of {entry.size_bytes} bytes)"
        if file_sha256(entry.engine_path) != entry.engine_sha256:
            return "is damaged (its sha256 is not the one recorded when it was built)"
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    return None


def _platform(key: EngineCacheKey) -> tuple[str, str, str]:
    return (key.tensorrt_version, key.gpu_name, key.compute_capability)


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
