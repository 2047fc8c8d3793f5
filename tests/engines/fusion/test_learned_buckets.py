"""The learned fusion engine at several pillar counts: the packaged exports, on real KITTI scans,
give the full count's table bitwise, on the smallest count that holds each sweep."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from engines.errors import EngineError
from engines.factory import EngineFactory
from engines.fusion.learned_buckets import BucketedLearnedEngine
from engines.fusion.learned_config import (
    PACKAGED_LEARNED_MODEL,
    LearnedFusionConfig,
    bucket_onnx_path,
)
from engines.fusion.learned_runner import LearnedFusionRunner
from engines.fusion.pillars import pillarize
from engines.onnxruntime_backend import OnnxRuntimeEngine
from engines.settings import EngineSettings
from perception.pipeline.learned_model import load_learned_model
from tests.conftest import KittiFrame

FRAMES = ("000000", "000003", "000004", "000005", "000006", "000007", "000008", "000009")
MODEL = load_learned_model("learned_fusion")


def _painted(points: np.ndarray, seed: int) -> np.ndarray:
    """The scan with painted channels: random class scores on a tenth of it, all seen."""
    rng = np.random.default_rng(seed)
    paint = np.zeros((len(points), 4), np.float32)
    paint[:, :3] = rng.random((len(points), 3)) * (rng.random((len(points), 1)) < 0.1)
    paint[:, 3] = 1.0
    return np.concatenate([points[:, :4], paint], axis=1).astype(np.float32)


@pytest.fixture(scope="module")
def engines() -> tuple[BucketedLearnedEngine, OnnxRuntimeEngine]:
    bucketed = EngineFactory(EngineSettings(threads=2)).learned_fusion_engine(MODEL)
    assert isinstance(bucketed, BucketedLearnedEngine)
    return bucketed, OnnxRuntimeEngine(PACKAGED_LEARNED_MODEL, num_threads=2)


def test_the_packaged_model_has_every_bucket() -> None:
    sizes = MODEL.config.pillar_buckets
    assert sizes == (1536, 3072, 4608, 6000)
    assert [n for n, _ in MODEL.bucket_paths] == list(sizes[:-1])
    for n, path in MODEL.bucket_paths:
        assert path == bucket_onnx_path(PACKAGED_LEARNED_MODEL, n) and path.is_file()


def test_kitti_scans_run_on_the_smallest_bucket_with_the_full_counts_table(
    engines: tuple[BucketedLearnedEngine, OnnxRuntimeEngine],
    kitti_frame: Callable[[str], KittiFrame],
) -> None:
    bucketed, full = engines
    used_sizes = set()
    for k, frame_id in enumerate(FRAMES):
        pin = pillarize(_painted(kitti_frame(frame_id).points, k), MODEL.config)
        feeds = pin.as_feeds()
        want = full.run(feeds)
        got = bucketed.run(feeds)
        size = bucketed.size_for(pin.pillars_used)
        assert size >= pin.pillars_used and size in bucketed.sizes
        assert bucketed._last is bucketed.engine_for(size)
        used_sizes.add(size)
        for name in ("detections", "camera_free_score"):
            assert np.array_equal(got[name], want[name]), (frame_id, name)
    # The frames span three buckets (1,300 to 3,900 pillars).
    assert used_sizes == {1536, 3072, 4608}


def test_a_real_pillar_past_the_front_runs_on_a_bucket_that_holds_it(
    engines: tuple[BucketedLearnedEngine, OnnxRuntimeEngine],
    kitti_frame: Callable[[str], KittiFrame],
) -> None:
    """Pillars need not come first: the bucket holds the last real one, whatever the order."""
    bucketed, full = engines
    cfg = MODEL.config
    feeds = pillarize(_painted(kitti_frame("000003").points, 0), cfg).as_feeds()
    moved = {name: value.copy() for name, value in feeds.items()}
    for name, value in moved.items():  # the first pillar moves to row 5,000
        value[5000], value[0] = feeds[name][0], feeds[name][5000]
    got = bucketed.run(moved)
    assert bucketed._last is bucketed.engine_for(6000)
    want = full.run(feeds)
    np.testing.assert_allclose(got["detections"], want["detections"], atol=1e-5)
    # No pillar at all: the smallest bucket, the empty sweep's table.
    nx, ny = cfg.grid_size
    empty = {
        "pillars": np.zeros_like(feeds["pillars"]),
        "pillar_points": np.zeros_like(feeds["pillar_points"]),
        "pillar_cells": np.full_like(feeds["pillar_cells"], nx * ny),
    }
    got = bucketed.run(empty)
    assert bucketed._last is bucketed.engine_for(1536)
    assert np.array_equal(got["detections"], full.run(empty)["detections"])


def test_inputs_of_another_shape_are_judged_by_the_full_engine(
    engines: tuple[BucketedLearnedEngine, OnnxRuntimeEngine],
) -> None:
    bucketed, _ = engines
    cfg = MODEL.config
    short: dict[str, np.ndarray] = {
        "pillars": np.zeros((10, cfg.points_per_pillar, cfg.point_features), np.float32),
        "pillar_points": np.zeros(10, np.int32),
        "pillar_cells": np.zeros(10, np.int64),
    }
    with pytest.raises(EngineError, match="pillar"):
        bucketed.run(short)


def test_buckets_refuse_counts_without_the_full_one() -> None:
    cfg = LearnedFusionConfig()
    with pytest.raises(EngineError, match="6000 among them"):
        BucketedLearnedEngine(
            cfg, (1536, 3072), lambda n: OnnxRuntimeEngine(PACKAGED_LEARNED_MODEL)
        )
    bucketed = BucketedLearnedEngine(
        cfg, (6000,), lambda n: OnnxRuntimeEngine(PACKAGED_LEARNED_MODEL, num_threads=1)
    )
    with pytest.raises(EngineError, match="no bucket of 1536 pillars"):
        bucketed.engine_for(1536)
    assert bucketed.size_for(10) == 6000


def test_an_export_without_buckets_runs_its_full_count(tmp_path: Path) -> None:
    """An export made before buckets existed (no `.p<N>.onnx` beside it) still loads, as one
    engine at its full count; with them beside it, it is bucketed, and warm-up makes all."""
    for suffix in (".onnx", ".yaml"):
        shutil.copy(PACKAGED_LEARNED_MODEL.with_suffix(suffix), tmp_path / f"old{suffix}")
    factory = EngineFactory(EngineSettings(threads=1))
    model = load_learned_model(tmp_path / "old.onnx")
    engine = factory.learned_fusion_engine(model)
    assert model.bucket_paths == () and not isinstance(engine, BucketedLearnedEngine)
    for n, path in MODEL.bucket_paths:
        shutil.copy(path, bucket_onnx_path(tmp_path / "old.onnx", n))
    engine = factory.learned_fusion_engine(load_learned_model(tmp_path / "old.onnx"))
    assert isinstance(engine, BucketedLearnedEngine)
    before = engine.loaded
    engine.warmup()
    assert before == (6000,) and engine.loaded == (1536, 3072, 4608, 6000)
    assert ("pillar_buckets", "1536,3072,4608,6000") in engine.describe().extra


def test_the_torch_backend_runs_the_buckets_too(kitti_frame: Callable[[str], KittiFrame]) -> None:
    pytest.importorskip("torch")
    engine = EngineFactory(EngineSettings(backend="torch", threads=2)).learned_fusion_engine(MODEL)
    assert isinstance(engine, BucketedLearnedEngine)
    runner = LearnedFusionRunner.for_model(engine, MODEL, 0.0)
    result = runner.run(_painted(kitti_frame("000003").points, 0))
    assert engine._last is engine.engine_for(1536)
    full = engine.engine_for(6000).run(result.pillars.as_feeds())
    np.testing.assert_allclose(result.rows, full["detections"], atol=1e-5)


def test_the_pipelines_warm_up_makes_every_pillar_count() -> None:
    """No sweep of a live node pays for making a bucket's session mid-drive."""
    from perception.config import CameraModelConfig, FusionConfig
    from perception.pipeline import Pipeline, PipelineConfig

    pipeline = Pipeline.from_config(
        CameraModelConfig(path=str(PACKAGED_LEARNED_MODEL.with_name("synth_detector.onnx"))),
        engines=EngineSettings(threads=1),
        config=PipelineConfig(fusion=FusionConfig(kind="learned", model="learned_fusion")),
    )
    assert pipeline.learned is not None
    engine = pipeline.learned.engine
    assert isinstance(engine, BucketedLearnedEngine)
    before = engine.loaded
    pipeline.warm_up()
    assert before == (6000,) and engine.loaded == (1536, 3072, 4608, 6000)
