"""Keys of the project's graph exports: what an exported ONNX file depends on, without torch.

A config that is not the packaged one is exported on first use (which needs torch) into an
export directory, under a name derived from :func:`export_key`, so a changed config, graph
version, opset or torch version gets a fresh export instead of a stale one.
"""

from __future__ import annotations

import hashlib
import json
from importlib import metadata

from engines.cache import cache_root

__all__ = ["DEFAULT_EXPORT_DIR", "export_key", "torch_version"]

#: Where exports of non-packaged configs are kept unless told otherwise.
DEFAULT_EXPORT_DIR = cache_root() / "engines"


def torch_version() -> str:
    """The installed torch's version, read without importing it ("absent" without torch)."""
    try:
        return metadata.version("torch")
    except metadata.PackageNotFoundError:
        return "absent"


def export_key(config: object, *, graph_version: int, opset: int) -> str:
    """A sha256 hex digest of an export: ``config`` (JSON-able, or its ``repr``), the graph
    version, the opset and the torch version (the exporter's output may change between torch
    releases)."""
    payload = {
        "config": config,
        "graph_version": graph_version,
        "opset": opset,
        "torch": torch_version(),
    }
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=repr)
    return hashlib.sha256(text.encode()).hexdigest()
