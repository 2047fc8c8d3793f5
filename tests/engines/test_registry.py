"""Model registry: entries match the real files; fetch verifies sha256 (copy and download)."""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import http.client
import io
import stat
import tempfile
import urllib.request
from pathlib import Path

import pytest

from engines.camera.detector import KINDS, CameraDetector
from engines.camera.labels import COCO_NAMES
from engines.errors import ModelError
from engines.onnxruntime_backend import OnnxRuntimeEngine
from engines.registry import (
    MODELS,
    PACKAGED_MODELS_DIR,
    fetch_model,
    get_model_info,
    resolve_model,
)


@pytest.fixture(scope="module")
def source_dir(data_dir: Path) -> Path:
    return data_dir / "camera_detector"


@pytest.mark.parametrize("name", sorted(MODELS))
def test_registry_matches_real_files(name: str, source_dir: Path) -> None:
    info = MODELS[name]
    path = source_dir / info.filename
    assert path.stat().st_size == info.size_bytes
    assert hashlib.sha256(path.read_bytes()).hexdigest() == info.sha256
    assert info.url.startswith("https://raw.githubusercontent.com/")
    assert info.kind in KINDS
    assert info.labels == COCO_NAMES
    names = (source_dir / "coco.names").read_text().split("\n")
    assert list(info.labels) == [n for n in names if n]
    detector = CameraDetector(OnnxRuntimeEngine(path), kind=info.kind)
    assert detector.engine.inputs == (info.input_spec,)
    assert detector.engine.outputs == (info.output_spec,)


def test_fetch_from_source_dir_then_cached(source_dir: Path, tmp_path: Path) -> None:
    seen: list[tuple[int, int | None]] = []
    path = fetch_model(
        "yolo_fastestv2_coco_352",
        tmp_path,
        source_dir=source_dir,
        progress=lambda done, total: seen.append((done, total)),
    )
    assert path == tmp_path / "yolo_fastestv2_coco_352.onnx"
    assert path.read_bytes() == (source_dir / path.name).read_bytes()
    assert seen[-1] == (980_824, 980_824)
    # Already present and verified: no copy (a bogus source dir is never touched).
    assert fetch_model("yolo_fastestv2_coco_352", tmp_path, source_dir=tmp_path / "nope") == path


def test_corrupted_source_is_rejected_and_not_cached(source_dir: Path, tmp_path: Path) -> None:
    info = MODELS["yolo_fastestv2_coco_352"]
    bad_src = tmp_path / "src"
    bad_src.mkdir()
    data = bytearray((source_dir / info.filename).read_bytes())
    data[1000] ^= 0xFF
    (bad_src / info.filename).write_bytes(bytes(data))
    cache = tmp_path / "cache"
    with pytest.raises(ModelError) as err:
        fetch_model(info.name, cache, source_dir=bad_src)
    msg = str(err.value)
    assert info.filename in msg
    assert f"expected {info.sha256}" in msg
    assert f"got {hashlib.sha256(data).hexdigest()}" in msg
    assert list(cache.iterdir()) == []  # no partial or unverified file left behind


def test_corrupted_cached_file_is_replaced(source_dir: Path, tmp_path: Path) -> None:
    info = MODELS["yolo_fastestv2_coco_352"]
    (tmp_path / info.filename).write_bytes(b"truncated")
    path = fetch_model(info.name, tmp_path, source_dir=source_dir)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == info.sha256


def test_download_over_file_url(source_dir: Path, tmp_path: Path) -> None:
    # urllib handles file:// like http(s)://, so this exercises the real download path.
    info = dataclasses.replace(
        MODELS["yolox_nano_coco_416"],
        url=(source_dir / "yolox_nano_coco_416.onnx").resolve().as_uri(),
    )
    seen: list[int] = []
    path = fetch_model(info, tmp_path / "cache", progress=lambda done, _total: seen.append(done))
    assert hashlib.sha256(path.read_bytes()).hexdigest() == info.sha256
    assert seen[-1] == info.size_bytes
    assert not list((tmp_path / "cache").glob(".*part"))


def test_download_with_wrong_hash(source_dir: Path, tmp_path: Path) -> None:
    info = dataclasses.replace(
        MODELS["yolox_nano_coco_416"],
        url=(source_dir / "yolo_fastestv2_coco_352.onnx").resolve().as_uri(),  # the wrong file
    )
    with pytest.raises(ModelError, match=r"yolox_nano_coco_416\.onnx: sha256 mismatch.*expected"):
        fetch_model(info, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_download_failure_says_how_to_fetch_offline(tmp_path: Path) -> None:
    info = dataclasses.replace(
        MODELS["yolox_nano_coco_416"], url=(tmp_path / "missing.onnx").as_uri()
    )
    cache = tmp_path / "cache"
    with pytest.raises(ModelError) as err:
        fetch_model(info, cache)
    message = str(err.value)
    assert message.startswith(f"yolox_nano_coco_416.onnx: not in the model cache {cache}, ")
    assert "missing.onnx" in message  # the URL that failed
    assert message.endswith(
        f"`perception models fetch yolox_nano_coco_416 --source-dir DIR --cache-dir {cache}`"
    )
    assert "\n" not in message


def test_resolve_model_offline_names_the_default_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A registered name missing from the (default) cache, and no network: the node's start
    # error says where the cache is and how to fill it from a local folder.
    from engines import registry

    info = dataclasses.replace(
        MODELS["yolo_fastestv2_coco_352"], url=(tmp_path / "offline.onnx").as_uri()
    )
    monkeypatch.setitem(registry.MODELS, info.name, info)
    monkeypatch.setattr(registry, "DEFAULT_MODEL_CACHE_DIR", tmp_path / "models")
    with pytest.raises(ModelError) as err:
        resolve_model(info.name)
    message = str(err.value)
    assert f"not in the model cache {tmp_path / 'models'}" in message
    assert message.endswith("`perception models fetch yolo_fastestv2_coco_352 --source-dir DIR`")


def test_resolve_model(source_dir: Path, tmp_path: Path) -> None:
    direct = source_dir / "yolox_nano_coco_416.onnx"
    assert resolve_model(direct, tmp_path) == direct
    assert resolve_model(str(direct), tmp_path) == direct
    fetched = resolve_model("yolox_nano_coco_416", tmp_path, source_dir=source_dir)
    assert fetched == tmp_path / "yolox_nano_coco_416.onnx"
    assert resolve_model("yolox_nano_coco_416.onnx", tmp_path) == fetched  # cached, by file name
    with pytest.raises(ModelError, match="not a registered model"):
        resolve_model("no_such_model", tmp_path)
    # There, but nothing a model is read from: said so, not "no such file".
    with pytest.raises(ModelError, match=r"^/dev/null: is not a regular file, not a model file"):
        resolve_model("/dev/null", tmp_path)
    with pytest.raises(ModelError, match=r": is a folder, not a model file \(\.onnx\)$"):
        resolve_model(tmp_path, tmp_path)
    assert resolve_model("lidar_encoder") == PACKAGED_MODELS_DIR / "lidar_encoder.onnx"
    assert resolve_model("fusion_engine").is_file()
    with pytest.raises(ModelError, match="known models"):
        get_model_info("no_such_model")


class _Reply(io.BytesIO):
    """What `urlopen` returns, as far as `fetch_model` reads it: a body and its headers."""

    def __init__(self, body: bytes, length: int | None, fail: Exception | None = None) -> None:
        super().__init__(body)
        self.headers = {} if length is None else {"Content-Length": str(length)}
        self._fail = fail

    def read(self, size: int | None = -1) -> bytes:
        chunk = super().read(size)
        if not chunk and self._fail is not None:
            raise self._fail
        return chunk


def _serving(monkeypatch: pytest.MonkeyPatch, reply: _Reply) -> list[int]:
    """`urlopen` answering `reply`; the sizes of the reads asked of it."""
    asked: list[int] = []
    real_read = reply.read

    def read(size: int | None = -1) -> bytes:
        asked.append(-1 if size is None else size)
        return real_read(size)

    reply.read = read  # type: ignore[method-assign]
    monkeypatch.setattr(urllib.request, "urlopen", lambda *_a, **_k: reply)
    return asked


def test_a_download_cut_short_is_said_to_be_cut_short(
    source_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A connection closed early reads as a short body: it was reported as a sha256 mismatch
    (a tampered file, to the reader) rather than as the network failure it is."""
    info = MODELS["yolox_nano_coco_416"]
    body = (source_dir / info.filename).read_bytes()
    _serving(monkeypatch, _Reply(body[:1000], len(body)))
    with pytest.raises(ModelError) as err:
        fetch_model(info.name, tmp_path)
    message = str(err.value)
    assert f"the transfer ended after 1000 of {len(body)} bytes" in message
    assert "sha256" not in message and "--source-dir DIR" in message
    assert list(tmp_path.iterdir()) == []


def test_a_broken_http_reply_is_a_failed_download(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """http.client's errors are no OSError: they escaped as "unexpected IncompleteRead" (exit
    1)."""
    _serving(monkeypatch, _Reply(b"abc", None, fail=http.client.IncompleteRead(b"")))
    with pytest.raises(ModelError, match=r"download from .* failed \(a broken HTTP reply: "):
        fetch_model("yolox_nano_coco_416", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_download_longer_than_registered_stops_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server sending without end fills no disk: reading stops one byte past the registered
    size."""
    info = MODELS["yolo_fastestv2_coco_352"]
    asked = _serving(monkeypatch, _Reply(b"x" * (3 * info.size_bytes), None))
    with pytest.raises(ModelError, match=f"larger than the registered {info.size_bytes} bytes"):
        fetch_model(info.name, tmp_path)
    assert sum(asked) <= info.size_bytes + 1 + 65536
    assert list(tmp_path.iterdir()) == []


def test_a_folder_where_the_cached_model_belongs_is_named(source_dir: Path, tmp_path: Path) -> None:
    """It was reported as a failure to copy from the source folder (or to download), advice
    that could never help."""
    folder = tmp_path / "yolo_fastestv2_coco_352.onnx"
    (folder / "inside").mkdir(parents=True)
    with pytest.raises(ModelError) as err:
        fetch_model("yolo_fastestv2_coco_352", tmp_path, source_dir=source_dir)
    assert str(err.value) == (
        f"{folder}: is a folder, where the model cache keeps yolo_fastestv2_coco_352; remove it"
    )
    assert (folder / "inside").is_dir()


@pytest.mark.parametrize("offline", [True, False])
def test_an_unwritable_cache_is_not_blamed_on_the_source(
    source_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, offline: bool
) -> None:
    """A read-only cache was reported as "cannot copy from <source>" or as a failed download
    with advice to fetch from a local folder, which fails the same way."""

    def read_only(*_args: object, **_kwargs: object) -> tuple[int, str]:
        raise OSError(errno.EROFS, "Read-only file system")

    info = dataclasses.replace(
        MODELS["yolo_fastestv2_coco_352"],
        url=(source_dir / "yolo_fastestv2_coco_352.onnx").resolve().as_uri(),
    )
    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    with pytest.raises(ModelError) as err:
        fetch_model(info, tmp_path, source_dir=source_dir if offline else None)
    assert str(err.value) == (
        f"yolo_fastestv2_coco_352.onnx: cannot write the model cache {tmp_path} "
        "(Read-only file system)"
    )


def test_a_cached_model_is_readable_by_other_accounts(source_dir: Path, tmp_path: Path) -> None:
    """The temporary file's private mode (0600) was kept: a cache filled by one account could
    not be read by the service account running the node."""
    path = fetch_model("yolo_fastestv2_coco_352", tmp_path, source_dir=source_dir)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
