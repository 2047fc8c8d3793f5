"""`perception train CONFIG`: train the learned fusion engine (needs torch: `pip install
-e '.[dev]'`)."""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.common import Stages, not_for, progress_bar
from perception.errors import PerceptionError

if TYPE_CHECKING:
    from replay.training.train_fusion import TrainResult

__all__ = ["cmd_train"]


def cmd_train(args: argparse.Namespace) -> int:
    if importlib.util.find_spec("torch") is None:
        raise PerceptionError(
            "training needs torch, which is not installed: pip install -e '.[dev]' "
            "(or pip install torch==2.13.0)"
        )
    from replay.training.fusion_config import load_train_config  # noqa: PLC0415 - torch below
    from replay.training.train_fusion import run_files, train  # noqa: PLC0415 - imports torch

    if args.ray_address is None:
        not_for(args, "a run without --ray-address (it sets the Ray Train workers)", ("--workers",))
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
    if not args.resume:
        _refuse_a_run_there(out, run_files(out, config.model))
    bar: Any = None
    started = time.monotonic()
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
    print(_summary(result, time.monotonic() - started))
    for label, figures in result.validation.items():
        if not figures.get("references"):
            continue
        fmt = {k: "-" if v is None else f"{v:.3f}" for k, v in figures.items()}
        print(f"  {label}: recall {fmt['recall']} precision {fmt['precision']} "
              f"AP {fmt['ap_bev']} ({figures['references']} objects within 40 m)")  # fmt: skip
    print(f"model: {result.onnx_path}")
    print(f"checkpoint: {result.checkpoint_path}; curves: {out / 'curves.png'}")
    return 0


def _refuse_a_run_there(out: Path, written: list[Path]) -> None:
    """Refuses an `--out` that holds files a run writes (a run without --resume replaced
    them, a model or a log the user meant to keep), before anything is prepared. A folder where
    a file goes is the training's own refusal (replay.training.train_fusion)."""
    held = [p for p in written if p.is_file()]
    if not held:
        return
    names = ", ".join(str(p.relative_to(out)) for p in held)
    if out / "checkpoints" / "last.pt" in held:
        advice = "--resume continues its run, or choose another --out"
    else:
        advice = "a run would replace them; move them away, or choose another --out"
    raise PerceptionError(f"{out}: holds a training run's files already ({names}); {advice}")


def _summary(result: TrainResult, seconds: float) -> str:
    """The line saying what this run trained, in how long (`seconds`: all of it, from the
    samples' preparation to the export; the steps' own time in brackets)."""
    loss = f"loss {result.final_loss:.3f}"
    if result.resumed_at == 0:
        return (
            f"trained {result.steps} steps in {seconds:.0f} s (steps {result.seconds:.1f} s), "
            f"{loss}"
        )
    at = f"resumed at step {result.resumed_at} of {result.steps}"
    if result.steps_this_run == 0:
        return f"{at}: the run had finished, no step trained (exported in {seconds:.0f} s), {loss}"
    return (
        f"{at}: trained {result.steps_this_run} steps in {seconds:.0f} s "
        f"(steps {result.seconds:.1f} s), {loss}"
    )


def _same_file(a: Path, b: Path) -> bool:
    """Whether `a` and `b` name one existing file (links, hard links and `..` included)."""
    try:
        return a.exists() and os.path.samefile(a, b)
    except OSError:
        return False
