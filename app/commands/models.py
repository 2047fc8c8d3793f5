"""`perception models fetch|list`: the model registry and the model cache."""

from __future__ import annotations

import argparse
from pathlib import Path

from app.common import cache_dir_arg, progress_bar
from app.models import model_entries
from engines.registry import DEFAULT_MODEL_CACHE_DIR, fetch_model, get_model_info
from perception.errors import PerceptionError

__all__ = ["cmd_models_fetch", "cmd_models_list"]


def cmd_models_fetch(args: argparse.Namespace) -> int:
    cache = cache_dir_arg(args.cache_dir)
    source = Path(args.source_dir).expanduser() if args.source_dir else None
    if source is not None and not source.is_dir():
        raise PerceptionError(f"{source}: --source-dir must be a folder holding the model files")
    infos = [get_model_info(name) for name in args.names]  # every name checked before fetching
    for info in infos:
        if source is not None and not (source / info.filename).is_file():
            raise PerceptionError(
                f"{source}: no {info.filename} in it (--source-dir holds the registered files)"
            )
    for info in infos:
        with progress_bar(
            total=info.size_bytes, unit="B", desc=info.name, quiet=args.quiet, unit_scale=True
        ) as bar:

            def progress(done: int, _total: int | None) -> None:
                bar.update(done - bar.n)

            # A failed download's error says how to fetch from a local folder instead.
            path = fetch_model(info, cache, progress=progress, source_dir=source)
        print(f"{info.name}: {path} (sha256 verified)")
    return 0


def cmd_models_list(args: argparse.Namespace) -> int:
    cache = cache_dir_arg(args.cache_dir) or DEFAULT_MODEL_CACHE_DIR
    entries = model_entries(cache)
    print(f"model cache: {cache}")
    print(f"{'name':<26}{'file':<30}{'MB':>6}  {'sha256':<14}{'cached':<17}where")
    for e in entries:
        print(
            f"{e.name:<26}{e.filename:<30}{e.size_bytes / 1e6:>6.1f}  {e.sha256[:12]:<14}"
            f"{e.cached:<17}{e.path}"
        )
    missing = [e.name for e in entries if e.cached in ("no", "sha256 mismatch")]
    if missing:
        print(
            f"fetch with: perception models fetch {' '.join(missing)} "
            "(offline: add --source-dir DIR, a folder holding the files)"
        )
    return 0
