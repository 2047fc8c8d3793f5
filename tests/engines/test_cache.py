"""Engine cache: keys, sidecars, lookup, stale detection and rebuild (pure Python, no GPU)."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Any

import pytest

from engines.cache import (
    DeviceInfo,
    EngineCache,
    EngineCacheKey,
    cache_root,
    describe_key_change,
    file_sha256,
)
from engines.errors import EngineError

RTX = DeviceInfo(
    tensorrt_version="10.0.1", gpu_name="NVIDIA GeForce RTX 3060", compute_capability="8.6"
)
ORIN = DeviceInfo(tensorrt_version="10.3.0", gpu_name="Orin", compute_capability="8.7")


def make_key(device: DeviceInfo = RTX, **changes: Any) -> EngineCacheKey:
    key = EngineCacheKey.create(
        model_name="yolox_nano_coco_416",
        onnx_sha256="e8af0749" + "0" * 56,
        device=device,
        precision="fp16",
        input_shapes={"images": (1, 3, 416, 416)},
        builder_options={"workspace_bytes": 1 << 30, "optimization_level": 3},
    )
    return dataclasses.replace(key, **changes)


class Builder:
    """A stand-in for the TensorRT build: counts calls, returns distinct bytes."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> bytes:
        self.calls += 1
        return f"engine #{self.calls}".encode()


# --- key ----------------------------------------------------------------------------------------


def test_digest_is_stable_and_ignores_name() -> None:
    a = make_key()
    assert a.digest() == make_key().digest()
    assert len(a.digest()) == 64
    assert dataclasses.replace(a, model_name="other").digest() == a.digest()
    # Option order does not matter.
    b = EngineCacheKey.create(
        model_name=a.model_name,
        onnx_sha256=a.onnx_sha256,
        device=RTX,
        precision="fp16",
        input_shapes=a.input_shapes,
        builder_options={"optimization_level": 3, "workspace_bytes": 1 << 30},
    )
    assert b == a and b.digest() == a.digest()


@pytest.mark.parametrize(
    "change",
    [
        {"tensorrt_version": "10.3.0"},
        {"gpu_name": "NVIDIA A100"},
        {"compute_capability": "8.0"},
        {"precision": "int8"},
        {"onnx_sha256": "f" * 64},
        {"input_shapes": (("images", (2, 3, 416, 416)),)},
        {"builder_options": (("workspace_bytes", "1"),)},
    ],
)
def test_every_field_changes_digest(change: dict[str, Any]) -> None:
    assert make_key(**change).digest() != make_key().digest()


def test_key_fields_roundtrip_through_json() -> None:
    key = make_key()
    assert EngineCacheKey.from_fields(json.loads(json.dumps(key.fields()))) == key
    with pytest.raises(EngineError, match="malformed"):
        EngineCacheKey.from_fields({"model_name": "x"})


def test_key_rejects_unsafe_names() -> None:
    with pytest.raises(EngineError, match="model name"):
        make_key(model_name="../evil")


def test_file_sha256(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"abc")
    assert file_sha256(path) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


# --- store / lookup -----------------------------------------------------------------------------


def test_miss_then_build_then_hit(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path / "engines")
    key = make_key()
    assert cache.lookup(key).status == "miss"
    assert cache.list_entries() == []
    build = Builder()
    entry, status = cache.get_or_build(key, build)
    assert status == "built" and build.calls == 1
    assert entry.engine_path == tmp_path / "engines" / f"{key.stem}.engine"
    assert entry.engine_path.name.startswith("yolox_nano_coco_416-")
    assert entry.engine_path.read_bytes() == b"engine #1"
    sidecar = json.loads(entry.sidecar_path.read_text())
    assert sidecar["key"]["tensorrt_version"] == "10.0.1"
    assert sidecar["key"]["gpu_name"] == "NVIDIA GeForce RTX 3060"
    assert sidecar["key"]["compute_capability"] == "8.6"
    assert sidecar["key"]["precision"] == "fp16"
    assert sidecar["key"]["input_shapes"] == [["images", [1, 3, 416, 416]]]
    assert sidecar["digest"] == key.digest()
    assert sidecar["size_bytes"] == len(b"engine #1")

    found = cache.lookup(key)
    assert found.status == "hit" and found.entry == entry
    again, status = cache.get_or_build(key, build)
    assert status == "cached" and build.calls == 1 and again.engine_path == entry.engine_path
    assert [e.key for e in cache.list_entries()] == [key]


def test_tensorrt_upgrade_is_detected_and_rebuilt(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = EngineCache(tmp_path)
    old_key = make_key(RTX)
    old_entry, _ = cache.get_or_build(old_key, Builder())
    new_key = make_key(dataclasses.replace(RTX, tensorrt_version="10.3.0"))
    found = cache.lookup(new_key)
    assert found.status == "stale"
    assert [e.key for e in found.stale] == [old_key]
    build = Builder()
    with caplog.at_level(logging.WARNING, logger="engines.cache"):
        _, status = cache.get_or_build(new_key, build)
    assert status == "rebuilt" and build.calls == 1
    assert (
        "rebuilding yolox_nano_coco_416: cached engine was built for TensorRT 10.0.1 on "
        "NVIDIA GeForce RTX 3060 (sm 8.6), now 10.3.0 on NVIDIA GeForce RTX 3060 (sm 8.6)"
    ) in caplog.text
    # The engine for the old TensorRT can never load again: it is gone.
    assert not old_entry.engine_path.exists() and not old_entry.sidecar_path.exists()
    assert [e.key for e in cache.list_entries()] == [new_key]
    assert cache.lookup(new_key).status == "hit"


def test_gpu_change_is_detected(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache = EngineCache(tmp_path)
    cache.get_or_build(make_key(RTX), Builder())
    with caplog.at_level(logging.WARNING, logger="engines.cache"):
        _, status = cache.get_or_build(make_key(ORIN), Builder())
    assert status == "rebuilt"
    assert "on NVIDIA GeForce RTX 3060 (sm 8.6), now 10.3.0 on Orin (sm 8.7)" in caplog.text
    assert len(cache.list_entries()) == 1


def test_precision_change_rebuilds_but_keeps_the_other_engine(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = EngineCache(tmp_path)
    fp16 = make_key()
    int8 = make_key(precision="int8")
    cache.get_or_build(fp16, Builder())
    with caplog.at_level(logging.WARNING, logger="engines.cache"):
        _, status = cache.get_or_build(int8, Builder())
    assert status == "rebuilt"
    assert "changed: precision fp16 -> int8" in caplog.text
    # Still valid for fp16 on this GPU, so both stay.
    assert {e.key.precision for e in cache.list_entries()} == {"fp16", "int8"}
    assert cache.lookup(fp16).status == "hit" and cache.lookup(int8).status == "hit"


def test_describe_key_change_lists_every_difference() -> None:
    old = make_key()
    new = make_key(
        ORIN,
        onnx_sha256="ab" * 32,
        input_shapes=(("images", (4, 3, 416, 416)),),
    )
    text = describe_key_change(old, new)
    assert text.startswith("cached engine was built for TensorRT 10.0.1 on NVIDIA GeForce RTX")
    assert "now 10.3.0 on Orin (sm 8.7)" in text
    assert "ONNX file e8af07490000… -> abababababab…" in text
    assert "input shapes images[1x3x416x416] -> images[4x3x416x416]" in text


def test_other_models_are_not_stale(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)
    cache.get_or_build(make_key(model_name="yolo_fastestv2_coco_352"), Builder())
    assert cache.lookup(make_key()).status == "miss"


def test_truncated_engine_is_rebuilt(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache = EngineCache(tmp_path)
    key = make_key()
    entry, _ = cache.get_or_build(key, Builder())
    entry.engine_path.write_bytes(b"eng")
    with caplog.at_level(logging.WARNING, logger="engines.cache"):
        assert cache.lookup(key).status == "miss"
    assert "truncated" in caplog.text
    build = Builder()
    _, status = cache.get_or_build(key, build)
    assert status == "built" and build.calls == 1
    assert cache.lookup(key).status == "hit"


def test_unreadable_sidecars_and_orphans_are_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = EngineCache(tmp_path)
    entry, _ = cache.get_or_build(make_key(), Builder())
    (tmp_path / "junk.json").write_text("{not json")
    (tmp_path / "orphan.json").write_text(entry.sidecar_path.read_text())  # no orphan.engine
    with caplog.at_level(logging.WARNING, logger="engines.cache"):
        entries = cache.list_entries()
    assert [e.engine_path for e in entries] == [entry.engine_path]
    assert "junk.json" in caplog.text


def test_build_failure_leaves_cache_untouched(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)
    old, _ = cache.get_or_build(make_key(RTX), Builder())

    def failing() -> bytes:
        raise EngineError("TensorRT build failed")

    with pytest.raises(EngineError, match="build failed"):
        cache.get_or_build(make_key(ORIN), failing)
    assert [e.engine_path for e in cache.list_entries()] == [old.engine_path]
    assert not list(tmp_path.glob(".*"))  # no temp files left


def test_store_into_unwritable_location_is_engine_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(EngineError, match="cannot write"):
        EngineCache(blocker / "sub").store(make_key(), b"x")


def test_foreign_sidecars_are_skipped_with_a_plain_reason(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = EngineCache(tmp_path / "engines")
    entry, _ = cache.get_or_build(make_key(), Builder())
    folder = entry.sidecar_path.parent
    (folder / "a.json").write_text('{"size_bytes": 3}')
    (folder / "b.json").write_text("[1, 2, 3]")
    (folder / "c.json").write_text("{not json")
    with caplog.at_level(logging.WARNING, logger="engines.cache"):
        assert [e.key for e in cache.list_entries()] == [entry.key]
    lines = sorted(r.getMessage() for r in caplog.records)
    assert lines[0] == f"engine cache: ignoring sidecar {folder / 'a.json'}: no field 'key'"
    assert lines[1] == (
        f"engine cache: ignoring unreadable sidecar {folder / 'b.json'}: not a sidecar of this "
        "cache"
    )
    assert lines[2].startswith(f"engine cache: ignoring unreadable sidecar {folder / 'c.json'}: ")


def test_damaged_engine_of_the_right_size_is_rebuilt(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Only the size was checked: `engines build` called a damaged engine "cached", and the node
    found out at its start."""
    cache = EngineCache(tmp_path)
    key = make_key()
    entry, _ = cache.get_or_build(key, Builder())
    data = entry.engine_path.read_bytes()
    entry.engine_path.write_bytes(bytes([data[0] ^ 0xFF]) + data[1:])
    with caplog.at_level(logging.WARNING, logger="engines.cache"):
        assert cache.lookup(key).status == "miss"
    assert "is damaged" in caplog.text
    build = Builder()
    rebuilt, status = cache.get_or_build(key, build)
    assert (status, build.calls) == ("built", 1)
    assert rebuilt.engine_path.read_bytes() == b"engine #1"


def test_sidecars_that_are_no_sidecars_never_stop_the_listing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A pipe named *.json blocked `engines list` (and the node's start) for ever; a JSON
    document nested thousands deep or with an infinite size was an unexpected RecursionError or
    OverflowError (exit 1)."""
    cache = EngineCache(tmp_path)
    entry, _ = cache.get_or_build(make_key(), Builder())
    os.mkfifo(tmp_path / "pipe.json")
    (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    record = json.loads(entry.sidecar_path.read_text())
    (tmp_path / "inf.json").write_text(json.dumps({**record, "size_bytes": 1e400}))
    (tmp_path / "inf.engine").write_bytes(entry.engine_path.read_bytes())
    (tmp_path / "big.json").write_text(" " * (2 << 20))
    with caplog.at_level(logging.WARNING, logger="engines.cache"):
        assert [e.engine_path for e in cache.list_entries()] == [entry.engine_path]
    for name in ("pipe", "deep", "inf", "big"):
        assert f"{tmp_path / name}.json" in caplog.text


def test_the_cache_root_follows_xdg_cache_home(monkeypatch, tmp_path: Path) -> None:
    """$XDG_CACHE_HOME where it is an absolute path (the XDG base directory specification),
    else ~/.cache: a relative or empty value is ignored, as the specification says."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_root() == tmp_path / "perception-node"
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for ignored in ("", "relative/cache"):
        monkeypatch.setenv("XDG_CACHE_HOME", ignored)
        assert cache_root() == tmp_path / "home" / ".cache" / "perception-node"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_root() == tmp_path / "home" / ".cache" / "perception-node"
