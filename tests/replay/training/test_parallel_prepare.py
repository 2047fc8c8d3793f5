"""Samples prepared in worker processes are the samples one process prepares, in order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engines.fusion.learned_config import LearnedFusionConfig
from replay.training.fusion_config import CameraPaintConfig
from replay.training.parallel_prepare import build_painter, prepare_in_workers
from replay.training.train_fusion import prepare_sources

SPECS = (
    {"kind": "synthetic", "seeds": [31], "seconds": 0.3},
    {"kind": "synthetic", "scene": "rich", "seeds": [32], "seconds": 0.2},
)


def test_two_workers_prepare_exactly_what_one_process_does(tmp_path: Path) -> None:
    camera = CameraPaintConfig()
    model = LearnedFusionConfig()
    seen: list[tuple[int, int]] = []
    parallel = prepare_in_workers(
        SPECS, tmp_path, camera, model, 2, progress=lambda done, total: seen.append((done, total))
    )
    single = prepare_sources(SPECS, tmp_path, build_painter(camera), model)
    assert [s.name for s in parallel] == [s.name for s in single]
    assert len(parallel) == 5 and seen[-1] == (5, 5)
    for a, b in zip(parallel, single, strict=True):
        np.testing.assert_array_equal(a.points, b.points)
        np.testing.assert_array_equal(a.boxes, b.boxes)
        np.testing.assert_array_equal(a.ignore, b.ignore)


def test_bad_specs_and_worker_counts_are_refused_before_any_worker_starts(
    tmp_path: Path,
) -> None:
    with pytest.raises(ValueError, match="scene"):
        prepare_in_workers(
            [{"kind": "synthetic", "scene": "city", "seeds": [1]}],
            tmp_path, CameraPaintConfig(), LearnedFusionConfig(), 2,
        )  # fmt: skip
    with pytest.raises(ValueError, match="workers must be >= 1"):
        prepare_in_workers(SPECS, tmp_path, CameraPaintConfig(), LearnedFusionConfig(), 0)
