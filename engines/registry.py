"""Model registry: the pretrained models the node knows by name, and verified fetching.

Every model has a public source URL pinned to a commit and a sha256; :func:`fetch_model`
downloads (or, offline, copies from ``source_dir``) into a cache directory, and a file is only
ever renamed into place after its sha256 matched, so the cache never holds an unverified model.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import logging
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from engines.cache import cache_root, file_sha256
from engines.camera.labels import COCO_NAMES
from engines.engine import TensorSpec
from engines.errors import ModelError

__all__ = [
    "DEFAULT_MODEL_CACHE_DIR",
    "MODELS",
    "PACKAGED_MODELS",
    "PACKAGED_MODELS_DIR",
    "ModelInfo",
    "ProgressCallback",
    "cached_sha256",
    "fetch_model",
    "get_model_info",
    "resolve_model",
]

_log = logging.getLogger(__name__)

DEFAULT_MODEL_CACHE_DIR = cache_root() / "models"
#: The models that ship inside the package (the project's own exports).
PACKAGED_MODELS_DIR = Path(__file__).resolve().parent / "models"
#: Their names, usable wherever a model name is (``perception engines build lidar_encoder``):
#: the lidar encoder and fusion engine exports, and the detector trained on synthetic drives.
PACKAGED_MODELS: tuple[str, ...] = ("lidar_encoder", "fusion_engine", "synth_detector")

# progress(bytes_done, bytes_total or None when the server does not say).
ProgressCallback = Callable[[int, int | None], None]

_CHUNK = 1 << 16


@dataclass(frozen=True)
class ModelInfo:
    """A registered model.

    ``kind`` selects the output decoding (``engines.camera.detector.KINDS``); ``preprocessing``
    states the input convention in words; ``labels`` are the class names by class id.
    """

    name: str
    filename: str
    sha256: str
    size_bytes: int
    url: str
    input_spec: TensorSpec
    output_spec: TensorSpec
    labels: tuple[str, ...]
    kind: str
    preprocessing: str
    source: str


MODELS: dict[str, ModelInfo] = {
    m.name: m
    for m in (
        ModelInfo(
            name="yolox_nano_coco_416",
            filename="yolox_nano_coco_416.onnx",
            sha256="e8af074932d4ed7e232278e3055cefcdea3edf178874a3694ae292649fb464dd",
            size_bytes=3_678_356,
            url=(
                "https://raw.githubusercontent.com/Bigisland1729/object-detection-models/"
                "7f3f2fa34b351e3d2af150893458106ad3f3a84f/yolox_nano.onnx"
            ),
            input_spec=TensorSpec("images", "float32", (1, 3, 416, 416)),
            output_spec=TensorSpec("output", "float32", (1, 3549, 85)),
            labels=COCO_NAMES,
            kind="yolox",
            preprocessing=(
                "BGR, values 0-255 (no mean/std); letterbox: resize by min(416/h, 416/w), paste "
                "top-left on a 416x416 canvas of 114; HWC->CHW"
            ),
            source=(
                "Megvii YOLOX-Nano COCO export, from Bigisland1729/object-detection-models "
                "(no licence file in that repository; YOLOX upstream is Apache-2.0)"
            ),
        ),
        ModelInfo(
            name="yolo_fastestv2_coco_352",
            filename="yolo_fastestv2_coco_352.onnx",
            sha256="27c34bbd0d054cf799ab45d31cba11dcf86cf482ccfb43fa002349f495db7671",
            size_bytes=980_824,
            url=(
                "https://raw.githubusercontent.com/hpc203/yolo-fastestv2-opencv/"
                "f865b7c18780c5e5f699e5fcb66074fad0ba3497/model.onnx"
            ),
            input_spec=TensorSpec("input.1", "float32", (1, 3, 352, 352)),
            output_spec=TensorSpec("845", "float32", (605, 95)),
            labels=COCO_NAMES,
            kind="yolo_fastestv2",
            preprocessing="BGR, plain resize to 352x352 (no letterbox), scale 1/255, no mean/std",
            source=(
                "dog-qiuqiu/Yolo-FastestV2 COCO weights exported by hpc203/yolo-fastestv2-opencv "
                "(no licence file in either repository)"
            ),
        ),
    )
}


def get_model_info(name: str) -> ModelInfo:
    """The registry entry for ``name``.

    Raises:
        ModelError: unknown name (the message lists the known ones).
    """
    try:
        return MODELS[name]
    except KeyError:
        raise ModelError(f"unknown model {name!r}; known models: {sorted(MODELS)}") from None


def cached_sha256(path: Path, info: ModelInfo) -> str:
    """The sha256 of the cached file `path` of `info`, or a note of its size where that is
    not the registered one: such a file cannot match, and hashing it first took a minute per
    20 GB (a wrong file of that name in the cache held `models list` and every fetch).

    Raises:
        OSError: the file cannot be read.
    """
    size = path.stat().st_size
    if size != info.size_bytes:
        return f"(not hashed: {size} bytes, {info.size_bytes} registered)"
    return file_sha256(path)


def _cache_write_error(info: ModelInfo, cache: Path, exc: OSError) -> ModelError:
    # Neither the network nor the source is at fault: said as such, with no advice to fetch
    # from elsewhere (a ModelError passes the handlers of read and download failures).
    return ModelError(
        f"{info.filename}: cannot write the model cache {cache} ({exc.strerror or exc})"
    )


def _copy_verified(
    src: BinaryIO,
    *,
    info: ModelInfo,
    dest: Path,
    total: int | None,
    origin: str,
    progress: ProgressCallback | None,
) -> None:
    """Streams ``src`` to a temp file beside ``dest``, verifies sha256, renames into place.

    Raises:
        ModelError: the cache cannot be written; more bytes than registered; a sha256 mismatch.
        OSError: ``src`` cannot be read, or ended before the ``total`` bytes it announced.
    """
    try:
        fd, tmp_name = tempfile.mkstemp(
            prefix=f".{info.filename}.", suffix=".part", dir=dest.parent
        )
    except OSError as exc:
        raise _cache_write_error(info, dest.parent, exc) from exc
    tmp = Path(tmp_name)
    digest = hashlib.sha256()
    done = 0
    try:
        with os.fdopen(fd, "wb") as out:
            # mkstemp makes the file private; a model is no secret, and a cache filled by one
            # account is often read by the service account that runs the node.
            os.fchmod(out.fileno(), 0o644)
            # Reads at most one byte more than the registered size: a server sending without
            # end must not fill the disk before the hash could tell.
            while chunk := src.read(min(_CHUNK, info.size_bytes + 1 - done)):
                try:
                    out.write(chunk)
                except OSError as exc:
                    raise _cache_write_error(info, dest.parent, exc) from exc
                digest.update(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, total)
        if done > info.size_bytes:
            raise ModelError(
                f"{info.filename}: {origin} is larger than the registered {info.size_bytes} "
                "bytes; the file was not cached"
            )
        if total is not None and done < total:
            # A connection closed early reads as a short file, not as an error.
            raise ConnectionError(f"the transfer ended after {done} of {total} bytes")
        actual = digest.hexdigest()
        if actual != info.sha256:
            raise ModelError(
                f"{info.filename}: sha256 mismatch for {origin}: expected {info.sha256}, "
                f"got {actual} ({done} bytes); the file was not cached"
            )
        try:
            os.replace(tmp, dest)
        except OSError as exc:
            raise _cache_write_error(info, dest.parent, exc) from exc
    finally:
        tmp.unlink(missing_ok=True)


def fetch_model(
    name: str | ModelInfo,
    cache_dir: Path | None = None,
    *,
    progress: ProgressCallback | None = None,
    source_dir: Path | None = None,
    timeout_s: float = 60.0,
) -> Path:
    """The verified local path of a registered model, downloading it when needed.

    A file already in ``cache_dir`` with the right sha256 is returned as is; one with the wrong
    sha256 is replaced. Without ``source_dir`` the model is downloaded from its URL (``https``,
    or ``file`` for mirrors) with urllib; with ``source_dir`` it is copied from
    ``source_dir / filename`` (offline machines, tests).

    Args:
        name: a registry name, or a :class:`ModelInfo` (e.g. pointing at a mirror URL).
        cache_dir: where models are kept (default ``~/.cache/perception-node/models``).
        progress: called as ``progress(bytes_done, bytes_total_or_None)`` while copying.
        source_dir: a local folder holding the model file, used instead of the network.
        timeout_s: network timeout per blocking operation.

    Raises:
        ModelError: unknown name; download or copy failure (naming the URL or path); a sha256
            mismatch (naming the file, expected and actual hash).
    """
    info = get_model_info(name) if isinstance(name, str) else name
    cache = Path(cache_dir or DEFAULT_MODEL_CACHE_DIR).expanduser()
    dest = cache / info.filename
    if dest.is_file():
        actual = cached_sha256(dest, info)
        if actual == info.sha256:
            _log.debug("model %s: using cached %s", info.name, dest)
            return dest
        _log.warning(
            "model %s: cached %s has sha256 %s, expected %s; fetching again",
            info.name,
            dest,
            actual,
            info.sha256,
        )
    elif dest.exists():
        # A folder (or a pipe) where the model belongs: never replaced, and no fetch could be.
        kind = "a folder" if dest.is_dir() else "not a regular file"
        raise ModelError(f"{dest}: is {kind}, where the model cache keeps {info.name}; remove it")
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except FileExistsError as exc:
        raise ModelError(
            f"{cache}: the model cache is not a folder (a file, or a symbolic link to nothing)"
        ) from exc
    except OSError as exc:
        raise ModelError(
            f"{info.filename}: cannot create cache directory {cache} ({exc.strerror or exc})"
        ) from exc

    if source_dir is not None:
        src_path = Path(source_dir) / info.filename
        _log.info("model %s: copying from %s", info.name, src_path)
        try:
            with src_path.open("rb") as src:
                size = src_path.stat().st_size
                _copy_verified(
                    src, info=info, dest=dest, total=size, origin=str(src_path), progress=progress
                )
        except OSError as exc:
            raise ModelError(f"{info.filename}: cannot copy from {src_path}: {exc}") from exc
        return dest

    _log.info("model %s: downloading %s", info.name, info.url)
    request = urllib.request.Request(info.url, headers={"User-Agent": "perception-node"})
    try:
        with contextlib.closing(urllib.request.urlopen(request, timeout=timeout_s)) as resp:
            length = resp.headers.get("Content-Length") if resp.headers else None
            total = int(length) if length and length.isdigit() else None
            _copy_verified(
                resp, info=info, dest=dest, total=total, origin=info.url, progress=progress
            )
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        # Vehicles and CI machines are often offline: say how to get the file in without the
        # network, and where it is looked for.
        cache_option = "" if cache == DEFAULT_MODEL_CACHE_DIR else f" --cache-dir {cache}"
        # http.client's own errors say little alone ("garbage" for a reply that is not HTTP).
        why = f"a broken HTTP reply: {exc!r}" if isinstance(exc, http.client.HTTPException) else exc
        raise ModelError(
            f"{info.filename}: not in the model cache {cache}, and the download from {info.url} "
            f"failed ({' '.join(str(why).split())}); copy it from a local folder holding "
            f"{info.filename} with `perception models fetch {info.name} --source-dir DIR"
            f"{cache_option}`"
        ) from exc
    return dest


def resolve_model(
    name_or_path: str | Path,
    cache_dir: Path | None = None,
    *,
    source_dir: Path | None = None,
    progress: ProgressCallback | None = None,
) -> Path:
    """A model file path: an existing path as is, a packaged model's name
    (:data:`PACKAGED_MODELS`), or a registry name fetched via the cache.

    Raises:
        ModelError: neither an existing file nor a registered name (or a path that exists but
            is a folder or not a regular file), or the fetch fails.
    """
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    key = str(name_or_path)
    if key in PACKAGED_MODELS:
        return PACKAGED_MODELS_DIR / f"{key}.onnx"
    if key not in MODELS and key.endswith(".onnx"):
        # Accept the registered file name too ("yolox_nano_coco_416.onnx").
        key = key.removesuffix(".onnx")
    if key in MODELS:
        return fetch_model(key, cache_dir, progress=progress, source_dir=source_dir)
    if path.exists():
        # A folder, a device or a pipe: there, but nothing a model is read from.
        kind = "a folder" if path.is_dir() else "not a regular file"
        raise ModelError(f"{name_or_path}: is {kind}, not a model file (.onnx)")
    raise ModelError(
        f"{name_or_path}: no such file and not a registered model (known: {sorted(MODELS)}; "
        f"packaged: {list(PACKAGED_MODELS)})"
    )
