"""Fusion engine buckets: the graph at smaller static shapes gives exactly (bitwise) the outputs
of the full padded shape, the runner picks the smallest shape that holds a call, and the
packaged bucket exports are today's graph.

The reference is the packaged full-shape export run by a plain engine (no buckets), as every
frame ran before the buckets existed.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from engines.engine import EngineDescription
from engines.errors import EngineError
from engines.factory import EngineFactory
from engines.fusion.buckets import BucketedFusionEngine
from engines.fusion.config import (
    PACKAGED_MODEL_PATH,
    FusionEngineConfig,
    Shape,
    packaged_model_path,
)
from engines.fusion.graph import cached_fusion_engine_onnx, export_fusion_engine_onnx
from engines.fusion.runner import FusionEngineResult, FusionEngineRunner
from engines.onnxruntime_backend import OnnxRuntimeEngine
from tests.conftest import KittiFrame
from tests.engines.fusion.test_fusion_engine import CAR, PEDESTRIAN, Inputs, _car_inputs, _inputs

CONFIG = FusionEngineConfig()
N_SIZES = CONFIG.point_sizes()
B_SIZES = CONFIG.box_sizes()


@pytest.fixture(scope="module")
def full_runner() -> FusionEngineRunner:
    """The full padded shape only: what every call ran at before the buckets."""
    return FusionEngineRunner(OnnxRuntimeEngine(PACKAGED_MODEL_PATH))


@pytest.fixture(scope="module")
def bucketed_runner() -> FusionEngineRunner:
    return FusionEngineRunner(EngineFactory().fusion_engine())


def _assert_same(a: FusionEngineResult, b: FusionEngineResult, what: str) -> None:
    np.testing.assert_array_equal(a.valid, b.valid, err_msg=what)
    np.testing.assert_array_equal(a.boxes3d, b.boxes3d, err_msg=what)
    np.testing.assert_array_equal(a.fused_score, b.fused_score, err_msg=what)


# ---------------------------------------------------------------------------------------------
# Choosing the shape


def test_default_shapes() -> None:
    assert N_SIZES == (8192, 16384, 24576, 32768) and B_SIZES == (4, 8, 16)
    assert CONFIG.shapes()[-1] == CONFIG.full_shape == (32768, 16)
    assert len(CONFIG.shapes()) == len(N_SIZES) * len(B_SIZES)


@pytest.mark.parametrize(
    ("boxes", "want"), [(0, 4), (1, 4), (4, 4), (5, 8), (8, 8), (9, 16), (16, 16)]
)
def test_box_bucket_at_the_edges(boxes: int, want: int) -> None:
    assert CONFIG.shape_for(100, boxes) == (8192, want)


@pytest.mark.parametrize(
    ("points", "want"),
    [(0, 8192), (8192, 8192), (8193, 16384), (16384, 16384), (16385, 24576), (24577, 32768)],
)
def test_point_bucket_at_the_edges(points: int, want: int) -> None:
    assert CONFIG.shape_for(points, 3) == (want, 4)


def test_too_many_rows_fit_no_shape() -> None:
    with pytest.raises(ValueError, match="n_max"):
        CONFIG.shape_for(CONFIG.n_max + 1, 1)
    with pytest.raises(ValueError, match="b_max"):
        CONFIG.shape_for(1, CONFIG.b_max + 1)


def test_buckets_follow_the_padded_sizes() -> None:
    # Sizes at or above the maxima are not buckets; nor are point counts below points_per_box
    # (they would shorten the per-box arrays and change the order of float sums).
    small = FusionEngineConfig(n_max=4096, b_max=4)
    assert small.shapes() == ((4096, 4),)
    odd = FusionEngineConfig(points_per_box=10000, point_buckets=(4096, 12000), box_buckets=(2,))
    assert odd.shapes() == ((12000, 2), (12000, 16), (32768, 2), (32768, 16))
    assert FusionEngineConfig(point_buckets=(), box_buckets=()).shapes() == ((32768, 16),)
    for bad in ((8, 4), (0, 4), (4, 4)):
        with pytest.raises(ValueError, match="box_buckets"):
            FusionEngineConfig(box_buckets=bad)


def test_cache_keys_and_names_cover_the_shape(tmp_path: Path) -> None:
    keys = {CONFIG.cache_key(s) for s in CONFIG.shapes()}
    assert len(keys) == len(CONFIG.shapes()) and CONFIG.cache_key() == CONFIG.cache_key((32768, 16))
    small = FusionEngineConfig(n_max=2048, b_max=4, box_buckets=(2,))
    path = cached_fusion_engine_onnx(small, tmp_path, (2048, 2))
    assert path.name.endswith("-n2048-b2.onnx") and small.cache_key((2048, 2))[:24] in path.name
    with pytest.raises(ValueError, match="not one of the config's shapes"):
        export_fusion_engine_onnx(tmp_path / "x.onnx", config=small, shape=(2048, 3))


# ---------------------------------------------------------------------------------------------
# Same outputs as the full shape


def test_bucketed_runner_equals_full_shape_on_kitti(
    kitti_frame: Callable[[str], KittiFrame],
    reference_dir: Path,
    full_runner: FusionEngineRunner,
    bucketed_runner: FusionEngineRunner,
) -> None:
    frame = kitti_frame("000000")
    cases: list[tuple[str, Inputs]] = [
        (
            "000000",
            _inputs(
                frame,
                [
                    [712.40, 143.00, 810.73, 307.92, 0.82, PEDESTRIAN],
                    [520.0, 300.0, 720.0, 370.0, 0.9, CAR],  # road only
                    [100.0, 120.0, 300.0, 250.0, 0.5, 99],  # generic prior
                ],
            ),
        )
    ]
    for frame_id in ("000003", "000004", "000005"):
        _, inputs = _car_inputs(kitti_frame, reference_dir, frame_id, 60.0)
        cases.append((frame_id, inputs))
    found = 0
    for name, inputs in cases:
        full = full_runner.run(*inputs.args())  # type: ignore[arg-type]
        bucketed = bucketed_runner.run(*inputs.args())  # type: ignore[arg-type]
        assert full_runner.last_shape == CONFIG.full_shape
        assert bucketed_runner.last_shape == (24576, 4), name  # 18-20k points in view
        _assert_same(full, bucketed, name)
        found += int(full.valid.sum())
    assert found >= 5  # the pedestrian and the cars: the comparison covers real fits


def _random_boxes(
    rng: np.random.Generator, count: int, image_size: tuple[float, float]
) -> npt.NDArray[np.float32]:
    width, height = image_size
    x1 = rng.uniform(-20.0, width - 10.0, count)
    y1 = rng.uniform(-20.0, height - 10.0, count)
    box_w, box_h = rng.uniform(5.0, 450.0, count), rng.uniform(5.0, 250.0, count)
    classes = rng.integers(0, len(CONFIG.priors) + 2, count)  # the generic prior too
    scores = rng.uniform(0.1, 1.0, count)
    return np.stack([x1, y1, x1 + box_w, y1 + box_h, scores, classes], 1).astype(np.float32)


def test_bucketed_runner_equals_full_shape_on_random_boxes(
    kitti_frame: Callable[[str], KittiFrame],
    full_runner: FusionEngineRunner,
    bucketed_runner: FusionEngineRunner,
) -> None:
    # Many boxes over real scans, and the point and box counts at every bucket's edges, so
    # that every shape runs, full ones and nearly empty ones.
    rng = np.random.default_rng(17)
    shapes_run: set[Shape] = set()
    found = 0
    for frame_id, other in (("000003", "000007"), ("000007", "000004")):
        base = _inputs(kitti_frame(frame_id), [])
        # Two scans together: more points than one holds, for the largest shapes.
        scan = np.concatenate([base.points, kitti_frame(other).points])
        scan[::101, 1] = np.nan  # non-finite rows are ignored at every shape
        scan[::137, 2] = np.inf
        shuffled = scan[rng.permutation(len(scan))]
        for n_points in (100, 8192, 8193, 16384, 16385, 24576, 24577, CONFIG.n_max):
            for n_boxes in (1, 4, 5, 8, 9, 16):
                boxes = _random_boxes(rng, n_boxes, base.image_size)
                args = (shuffled[:n_points], boxes, *base.args()[2:])
                full = full_runner.run(*args)  # type: ignore[arg-type]
                bucketed = bucketed_runner.run(*args)  # type: ignore[arg-type]
                shape = bucketed_runner.last_shape
                assert shape == CONFIG.shape_for(n_points, n_boxes)
                shapes_run.add(shape)
                _assert_same(full, bucketed, f"{frame_id}: {n_points} points, {n_boxes} boxes")
                found += int(full.valid.sum())
    assert {n for n, _ in shapes_run} == set(N_SIZES) and {b for _, b in shapes_run} == set(B_SIZES)
    assert found >= 20


def test_reused_buffers_hold_nothing_of_the_previous_call(
    kitti_frame: Callable[[str], KittiFrame], full_runner: FusionEngineRunner
) -> None:
    frame = kitti_frame("000000")
    ped = _inputs(frame, [[712.40, 143.00, 810.73, 307.92, 0.82, PEDESTRIAN]])
    crowded = _random_boxes(np.random.default_rng(3), 4, ped.image_size)
    runner = FusionEngineRunner(EngineFactory().fusion_engine())
    fresh = FusionEngineRunner(EngineFactory().fusion_engine())
    # A call that fills more rows of the same bucket, then one that fills fewer: the leftover
    # rows must be padding again; [N, 3] points after [N, 4] ones get a zero intensity.
    runner.run(ped.points[:8000], crowded, *ped.args()[2:])  # type: ignore[arg-type]
    assert runner.last_shape == (8192, 4)
    few = (ped.points[:5000, :3], *ped.args()[1:])
    _assert_same(runner.run(*few), fresh.run(*few), "fewer rows after more")  # type: ignore[arg-type]
    _assert_same(runner.run(*few), full_runner.run(*few), "against the full shape")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# The bucketed engine


def test_buckets_are_made_on_first_use() -> None:
    made: list[Shape] = []

    def make(shape: Shape) -> OnnxRuntimeEngine:
        made.append(shape)
        return OnnxRuntimeEngine(packaged_model_path(shape), num_threads=1)

    engine = BucketedFusionEngine(CONFIG, make)
    assert made == [CONFIG.full_shape] and engine.loaded == (CONFIG.full_shape,)
    assert engine.engine_for((8192, 4)) is engine.engine_for((8192, 4))
    assert made == [CONFIG.full_shape, (8192, 4)]
    with pytest.raises(EngineError, match="no bucket of shape"):
        engine.engine_for((100, 4))
    description = engine.describe()
    assert description.model == "fusion_engine.onnx"
    assert dict(description.extra)["buckets"].startswith("8192x4,8192x8,")
    # A bucket whose engine has other tensors is refused.
    wrong = BucketedFusionEngine(CONFIG, lambda s: make(CONFIG.full_shape))
    with pytest.raises(EngineError, match=r"fusion engine at shape 8192x4: .* has inputs"):
        wrong.engine_for((8192, 4))


def test_bucketed_engine_runs_full_shape_inputs_on_a_bucket(
    kitti_frame: Callable[[str], KittiFrame], full_runner: FusionEngineRunner
) -> None:
    # The Engine interface at the full shape (what a caller without the runner sees): the
    # outputs are full-shape arrays, padding rows False and zero, as the full engine gives.
    frame = kitti_frame("000000")
    ped = _inputs(frame, [[712.40, 143.00, 810.73, 307.92, 0.82, PEDESTRIAN]])
    feed = full_runner.pad(*ped.args())  # type: ignore[arg-type]
    engine = EngineFactory().fusion_engine()
    assert isinstance(engine, BucketedFusionEngine)
    want = full_runner.engine.run(feed)
    got = engine.run(feed)
    assert (24576, 4) in engine.loaded
    for name, value in want.items():
        assert got[name].shape == value.shape and got[name].dtype == value.dtype
        np.testing.assert_array_equal(got[name], value, err_msg=name)
    assert bool(got["valid"][0]) and not got["valid"][1:].any()


def test_runner_refuses_buckets_of_another_config() -> None:
    engine = EngineFactory().fusion_engine()
    with pytest.raises(EngineError, match="buckets"):
        FusionEngineRunner(engine, FusionEngineConfig(box_buckets=(2,)))


# ---------------------------------------------------------------------------------------------
# Packaged exports


def test_every_shape_is_packaged() -> None:
    for shape in CONFIG.shapes():
        assert packaged_model_path(shape).is_file(), shape
    assert packaged_model_path(CONFIG.full_shape) == PACKAGED_MODEL_PATH


# Two shapes byte for byte (an export takes seconds); the full one is checked by
# test_fusion_engine.py, and every packaged shape runs against it bitwise above.
@pytest.mark.parametrize("shape", [(8192, 4), (24576, 16)], ids=lambda s: f"n{s[0]}_b{s[1]}")
def test_packaged_buckets_are_the_default_exports(shape: Shape, tmp_path: Path) -> None:
    # The runtime install ships them (no torch there): they must be today's graph.
    fresh = export_fusion_engine_onnx(tmp_path / "fresh.onnx", shape=shape)
    packaged = packaged_model_path(shape)
    assert packaged.read_bytes() == fresh.read_bytes(), (
        f"{packaged} is stale: run `python -m engines.fusion.graph`"
    )


class _CapturingEngine(OnnxRuntimeEngine):
    """A bucket whose first run would capture a CUDA graph (as torch's on CUDA): it says so
    until it has run."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, num_threads=1)
        self.runs = 0

    @property
    def capture_pending(self) -> bool:
        return self.runs == 0

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.runs += 1
        return super().run(inputs)


def test_make_all_runs_once_only_the_buckets_that_capture_on_their_first_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A CUDA graph capture stalled a mid-drive frame by 70 ms on an H200: such buckets run
    at start-up. ONNX Runtime's stay unrun (their buffers only for the shapes a drive needs)."""
    capturing = BucketedFusionEngine(CONFIG, lambda s: _CapturingEngine(packaged_model_path(s)))
    FusionEngineRunner(capturing, CONFIG).make_all()
    engines = [capturing.engine_for(s) for s in CONFIG.shapes()]
    assert all(isinstance(e, _CapturingEngine) and e.runs == 1 for e in engines)
    plain = BucketedFusionEngine(
        CONFIG, lambda s: OnnxRuntimeEngine(packaged_model_path(s), num_threads=1)
    )
    runs: list[object] = []
    original = OnnxRuntimeEngine.run

    def counted(self, inputs):
        runs.append(self)
        return original(self, inputs)

    monkeypatch.setattr(OnnxRuntimeEngine, "run", counted)
    FusionEngineRunner(plain, CONFIG).make_all()
    assert plain.loaded == CONFIG.shapes() and runs == []


class _GpuDescribed(OnnxRuntimeEngine):
    """An ONNX Runtime session that describes itself as a GPU engine."""

    def describe(self) -> EngineDescription:
        return dataclasses.replace(super().describe(), backend="torch", device="cuda:0")


def _made_by(make: Callable[[Shape], OnnxRuntimeEngine]) -> tuple[BucketedFusionEngine, set[str]]:
    threads: set[str] = set()

    def recorded(shape: Shape) -> OnnxRuntimeEngine:
        threads.add(threading.current_thread().name)
        return make(shape)

    engine = BucketedFusionEngine(CONFIG, recorded)
    FusionEngineRunner(engine, CONFIG).make_all()
    assert engine.loaded == CONFIG.shapes()
    return engine, threads


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: sessions are made in turn")
def test_make_all_makes_cpu_sessions_side_by_side_and_others_in_turn() -> None:
    """Making the fusion engine's eleven smaller sessions one after another was most of a
    node's start (1.8 s here); CPU sessions are made on worker threads. A GPU engine's making is
    not raced: the caller's thread makes each."""
    _, threads = _made_by(lambda s: OnnxRuntimeEngine(packaged_model_path(s), num_threads=1))
    assert len({t for t in threads if t.startswith("make-engine")}) >= 2, threads
    _, threads = _made_by(lambda s: _GpuDescribed(packaged_model_path(s), num_threads=1))
    assert threads == {threading.current_thread().name}


def test_a_bucket_that_cannot_be_made_fails_make_all_with_its_error() -> None:
    def make(shape: Shape) -> OnnxRuntimeEngine:
        if shape == (8192, 8):
            raise EngineError("fusion engine at shape 8192x8: model file is truncated")
        return OnnxRuntimeEngine(packaged_model_path(shape), num_threads=1)

    engine = BucketedFusionEngine(CONFIG, make)
    with pytest.raises(EngineError, match="8192x8: model file is truncated"):
        FusionEngineRunner(engine, CONFIG).make_all()
