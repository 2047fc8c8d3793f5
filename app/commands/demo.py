"""`perception demo`: the synthetic drive through the pipeline, scored against ground truth."""

from __future__ import annotations

import argparse
from pathlib import Path

from app.common import Stages, check_drive_path, not_for
from calibration.monitor import Correction
from perception.errors import PerceptionError
from replay.output import check_output_dir
from replay.synth.demo import format_demo_report, run_demo

__all__ = ["cmd_demo"]

#: What makes the drive a demo generates: a drive given is taken as it is.
_NEW_DRIVE_OPTIONS = ("--seed", "--seconds", "--scene", "--rig-error")


def cmd_demo(args: argparse.Namespace) -> int:
    if args.drive is not None:
        not_for(args, "--drive (they make a new drive)", _NEW_DRIVE_OPTIONS)
    if args.learned_model is not None and not set(args.fusion) & {"learned", "ensemble"}:
        # Ignored, it let a user believe the learned engine had been scored.
        raise PerceptionError(
            f"--learned-model does nothing for --fusion {','.join(args.fusion)}: give --fusion "
            "learned, ensemble or all"
        )
    out_dir = check_output_dir(Path(args.out_dir).expanduser(), "--out-dir", create=False)
    labels = {"generate": "generating the drive", "replay": "running the pipeline"}
    for kind in args.fusion:
        labels[f"replay:{kind}"] = f"running the pipeline ({kind} fusion)"
    learned = Path(args.learned_model).expanduser() if args.learned_model else None
    with Stages("sweep", args.quiet, labels) as stages:
        try:
            report = run_demo(
                check_drive_path(Path(args.drive).expanduser()) if args.drive else None,
                seed=args.seed,
                seconds=args.seconds,
                out_dir=out_dir,
                progress=stages,
                fusion=args.fusion,
                without=args.without,
                learned_model=learned,
                scene=args.scene,
                rig_error=None
                if args.rig_error is None
                else Correction(args.rig_error[:3], args.rig_error[3:]),
            )
        except ValueError as e:
            raise PerceptionError(str(e)) from e
    print(format_demo_report(report))
    return 0
