"""`perception train CONFIG`: train the learned fusion engine (needs torch: `pip install
-e '.[dev]'`)."""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

from app.common import Stages, progress_bar
from perception.errors import PerceptionError

__all__ = ["cmd_train"]


def cmd_train(args: argparse.Namespace) -> int:
    if importlib.util.find_spec("torch") is None:
        raise PerceptionError(
            "training needs torch, which is not installed: pip install -e '.[dev]' "
            "(or pip install torch==2.13.0)"
        )
    from replay.training.fusion_config import load_train_config  # noqa: PLC0415 - torch below
    from replay.training.train_fusion import run_files, train  # noqa: PLC0415 - imports torch

    config_path = Path(args.config).expanduser()
    try:
        config = load_train_config(config_path)
    except ValueError as e:
        raise PerceptionError(str(e)) from e
    if args.steps is not None:
        from dataclasses import replace  # noqa: PLC0415

        try:
            config = replace(config, optim=replace(config.optim, steps=args.steps))
        except ValueError as e:
            raise PerceptionError(f"--steps {args.steps}: {e}") from e
    out = Path(args.out).expanduser()
    if out.exists() and not out.is_dir():
        raise PerceptionError(f"{out}: --out is a file, not a folder")
    for written in run_files(out, config.model):
        if _same_file(written, config_path):
            raise PerceptionError(
                f"{config_path}: the training config is {written}, which the run writes: it "
                "would be replaced; move it or choose another --out"
            )
    if not args.resume and (out / "checkpoints" / "last.pt").exists():
        raise PerceptionError(
            f"{out}: holds a training run already; --resume continues it, or choose another --out"
        )
    bar: Any = None
    with Stages("sample", args.quiet) as stages:

        def progress(done: int, total: int, loss: float) -> None:
            nonlocal bar
            if bar is None:
                stages.close()
                bar = progress_bar(total=total, unit="step", desc="train", quiet=args.quiet)
            bar.update(done - bar.n)
            bar.set_postfix(loss=f"{loss:.3f}", refresh=False)

        try:
            result = train(
                config,
                out,
                resume=args.resume,
                progress=progress,
                prepare_progress=lambda done, total: stages("prepare samples", done, total),
                log=lambda text: print(text, file=sys.stderr),
                ray_address=args.ray_address,
                workers=args.workers,
                prepare_workers=args.prepare_workers,
            )
        except ValueError as e:
            raise PerceptionError(str(e)) from e
        except ImportError as e:
            if args.ray_address is None:
                raise
            raise PerceptionError(
                f"--ray-address needs Ray Train, which does not import ({e}): "
                "pip install 'ray[train]==2.60.0'"
            ) from e
        finally:
            if bar is not None:
                bar.close()
    print(f"trained {result.steps} steps in {result.seconds:.0f} s (this run), loss "
          f"{result.final_loss:.3f}")  # fmt: skip
    for label, figures in result.validation.items():
        if not figures.get("references"):
            continue
        fmt = {k: "-" if v is None else f"{v:.3f}" for k, v in figures.items()}
        print(f"  {label}: recall {fmt['recall']} precision {fmt['precision']} "
              f"AP {fmt['ap_bev']} ({figures['references']} objects within 40 m)")  # fmt: skip
    print(f"model: {result.onnx_path}")
    print(f"checkpoint: {result.checkpoint_path}; curves: {out / 'curves.png'}")
    return 0


def _same_file(a: Path, b: Path) -> bool:
    """Whether `a` and `b` name one existing file (links, hard links and `..` included)."""
    try:
        return a.exists() and os.path.samefile(a, b)
    except OSError:
        return False
