"""Lidar encoder: numpy reference, padding/range handling, ONNX export, torch vs ONNX Runtime."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest

from engines.errors import EngineError
from engines.factory import EngineFactory
from engines.lidar.buckets import BucketedLidarEncoder
from engines.lidar.config import (
    FEATURES,
    MIN_POINT_BUCKET,
    OBSTACLE_CONFIG,
    ONNX_OPSET,
    PACKAGED_MODEL_PATH,
    LidarEncoderConfig,
    packaged_model_path,
)
from engines.lidar.graph import cached_lidar_encoder_onnx, export_lidar_encoder_onnx
from engines.lidar.runner import LidarEncoderRunner
from engines.onnxruntime_backend import OnnxRuntimeEngine
from engines.settings import EngineSettings

# torch and ONNX Runtime run the same float32 ops; only the summation order of the scatter-add
# (means) may differ, which on real scans stays within a few ulp of values <= ~6.
PARITY_ATOL = 1e-5

SMALL = LidarEncoderConfig(
    x_range=(0.0, 4.0), y_range=(-2.0, 2.0), z_range=(-1.0, 1.0), cell_size=0.5, max_points=64
)


def reference_bev(points: np.ndarray, cfg: LidarEncoderConfig) -> np.ndarray:
    """A plain numpy version of the encoder, point by point (np.*.at), float32 throughout."""
    x, y, z, inten = (points[:, k].astype(np.float32) for k in range(4))
    f32 = np.float32
    with np.errstate(invalid="ignore"):
        fx = np.floor((x - f32(cfg.x_range[0])) / f32(cfg.cell_size))
        fy = np.floor((y - f32(cfg.y_range[0])) / f32(cfg.cell_size))
        keep = (
            (fx >= 0)
            & (fx < cfg.width)
            & (fy >= 0)
            & (fy < cfg.height)
            & (z >= f32(cfg.z_range[0]))
            & (z < f32(cfg.z_range[1]))
            & np.isfinite(inten)
        )
    cell = (fy[keep] * cfg.width + fx[keep]).astype(np.int64)
    z, inten = z[keep], inten[keep]
    n = cfg.width * cfg.height
    count = np.zeros(n, np.float32)
    np.add.at(count, cell, f32(1))
    zmax = np.full(n, -np.inf, np.float32)
    np.maximum.at(zmax, cell, z)
    zmin = np.full(n, np.inf, np.float32)
    np.minimum.at(zmin, cell, z)
    zsum = np.zeros(n, np.float32)
    np.add.at(zsum, cell, z)
    imax = np.full(n, -np.inf, np.float32)
    np.maximum.at(imax, cell, inten)
    isum = np.zeros(n, np.float32)
    np.add.at(isum, cell, inten)
    occ = count > 0
    denom = np.maximum(count, f32(1))
    feats = {
        "max_z": np.where(occ, zmax, f32(0)),
        "min_z": np.where(occ, zmin, f32(0)),
        "mean_z": np.where(occ, zsum / denom, f32(0)),
        "z_range": np.where(occ, zmax - zmin, f32(0)),
        "density": np.log1p(count),
        "max_intensity": np.where(occ, imax, f32(0)),
        "mean_intensity": np.where(occ, isum / denom, f32(0)),
        "occupancy": occ.astype(np.float32),
    }
    return np.stack([feats[f] for f in cfg.features]).reshape(cfg.output_shape)


def load_scan(path: Path) -> np.ndarray:
    return np.fromfile(path, dtype=np.float32).reshape(-1, 4)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("engines")


def runner(
    config: LidarEncoderConfig, backend: str, cache_dir: Path | None = None, threads: int = 0
) -> LidarEncoderRunner:
    """The encoder for ``config`` as the engine factory builds it (exports go to ``cache_dir``)."""
    factory = EngineFactory(EngineSettings(backend=backend, threads=threads), export_dir=cache_dir)
    return LidarEncoderRunner(factory.lidar_encoder(config), config)


@pytest.fixture(scope="module")
def small_engines(cache_dir: Path) -> dict[str, LidarEncoderRunner]:
    return {
        "onnxruntime": runner(SMALL, "onnxruntime", cache_dir),
        "torch": runner(SMALL, "torch"),
    }


@pytest.fixture(scope="module")
def kitti_engines(cache_dir: Path) -> dict[str, LidarEncoderRunner]:
    cfg = LidarEncoderConfig()
    return {
        "onnxruntime": runner(cfg, "onnxruntime", cache_dir, threads=2),
        "torch": runner(cfg, "torch"),
    }


@pytest.fixture
def small_cloud() -> np.ndarray:
    """Points with values exact in binary (multiples of 1/8), several sharing cells, one at each
    grid edge, so float32 sums and means are exact and the reference must match bit for bit."""
    rng = np.random.default_rng(0)
    n = 40
    x = rng.integers(0, 32, n) / 8.0  # [0, 3.875]: inside x [0, 4)
    y = rng.integers(-16, 16, n) / 8.0  # [-2, 1.875]: inside y [-2, 2)
    z = rng.integers(-8, 8, n) / 8.0  # [-1, 0.875]: inside z [-1, 1)
    i = rng.integers(0, 16, n) / 16.0
    pts = np.stack([x, y, z, i], axis=1).astype(np.float32)
    # Repeat a few points into the same cells with other heights, so reductions see > 1 value.
    extra = pts[:6].copy()
    extra[:, 2] = np.float32(0.5) - extra[:, 2]
    return np.concatenate([pts, extra])


# --- config --------------------------------------------------------------------------------


def test_default_grid_is_pointpillars() -> None:
    cfg = LidarEncoderConfig()
    assert (cfg.width, cfg.height) == (432, 496)
    assert cfg.output_shape == (len(FEATURES), 496, 432)
    coarse = LidarEncoderConfig.coarse()
    assert (coarse.width, coarse.height, coarse.cell_size) == (216, 248, 0.32)
    assert coarse.cache_key() != cfg.cache_key()
    assert LidarEncoderConfig().cache_key() == cfg.cache_key()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"cell_size": 0.0}, "cell_size"),
        ({"x_range": (5.0, 1.0)}, "x range"),
        ({"cell_size": 0.3}, "whole number"),
        ({"max_points": 0}, "max_points"),
        ({"features": ()}, "empty"),
        ({"features": ("max_z", "height")}, "unknown feature"),
        ({"features": ("max_z", "max_z")}, "duplicate"),
    ],
)
def test_config_rejects(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        LidarEncoderConfig(**kwargs)  # type: ignore[arg-type]


# --- numpy reference and input handling -----------------------------------------------------


@pytest.mark.parametrize("backend", ["onnxruntime", "torch"])
def test_matches_numpy_reference_exactly(
    small_engines: dict[str, LidarEncoderRunner], small_cloud: np.ndarray, backend: str
) -> None:
    bev = small_engines[backend].encode(small_cloud)
    ref = reference_bev(small_cloud, SMALL)
    assert bev.dtype == np.float32
    assert bev.shape == SMALL.output_shape
    occ = FEATURES.index("occupancy")
    assert 10 < ref[occ].sum() < len(small_cloud)  # shared cells and empty cells both present
    # density is log1p(count): ONNX has no Log1p, so the export computes Log(1 + count), which may
    # differ from numpy's log1p by one ulp; every other channel is bit-exact.
    dens = FEATURES.index("density")
    exact = [k for k in range(len(FEATURES)) if k != dens]
    np.testing.assert_array_equal(bev[exact], ref[exact])
    np.testing.assert_array_max_ulp(bev[dens], ref[dens], maxulp=1)


@pytest.mark.parametrize("backend", ["onnxruntime", "torch"])
def test_padded_rows_are_ignored(
    small_engines: dict[str, LidarEncoderRunner], small_cloud: np.ndarray, backend: str
) -> None:
    engine = small_engines[backend]
    padded, count = engine.pad(small_cloud)
    # Padding that would change every channel if it were read: in-range points, NaN, inf.
    garbage = padded.copy()
    garbage[len(small_cloud) :: 3] = (1.0, 0.0, 0.5, 0.9)
    garbage[len(small_cloud) + 1 :: 3] = np.nan
    garbage[len(small_cloud) + 2 :: 3] = np.inf
    # The engine itself, fed the garbage padding with the true count.
    out = engine.engine.run({"points": garbage, "num_points": count})["bev"]
    np.testing.assert_array_equal(out, engine.encode(small_cloud))
    np.testing.assert_array_equal(out, reference_bev(small_cloud, SMALL))


@pytest.mark.parametrize("backend", ["onnxruntime", "torch"])
def test_out_of_range_and_non_finite_points_are_ignored(
    small_engines: dict[str, LidarEncoderRunner], small_cloud: np.ndarray, backend: str
) -> None:
    outside = np.array(
        [
            [-0.01, 0.0, 0.0, 0.5],  # x < x_min
            [4.0, 0.0, 0.0, 0.5],  # x == x_max (half-open)
            [1.0, -2.01, 0.0, 0.5],  # y < y_min
            [1.0, 2.0, 0.0, 0.5],  # y == y_max
            [1.0, 0.0, -1.01, 0.5],  # z < z_min
            [1.0, 0.0, 1.0, 0.5],  # z == z_max
            [np.nan, 0.0, 0.0, 0.5],
            [1.0, np.inf, 0.0, 0.5],
            [1.0, 0.0, np.nan, 0.5],
            [1.0, 0.0, 0.0, np.nan],
            [1e30, -1e30, 0.0, 0.5],
        ],
        dtype=np.float32,
    )
    engine = small_engines[backend]
    mixed = np.concatenate([outside[:5], small_cloud, outside[5:]])
    np.testing.assert_array_equal(engine.encode(mixed), engine.encode(small_cloud))
    empty = engine.encode(outside)
    np.testing.assert_array_equal(empty, np.zeros(SMALL.output_shape, np.float32))


@pytest.mark.parametrize("backend", ["onnxruntime", "torch"])
def test_empty_cloud_gives_zeros(
    small_engines: dict[str, LidarEncoderRunner], backend: str
) -> None:
    bev = small_engines[backend].encode(np.zeros((0, 4), np.float32))
    np.testing.assert_array_equal(bev, np.zeros(SMALL.output_shape, np.float32))


def test_full_buffer_is_accepted(small_engines: dict[str, LidarEncoderRunner]) -> None:
    rng = np.random.default_rng(1)
    pts = rng.uniform((0, -2, -1, 0), (4, 2, 1, 1), (SMALL.max_points, 4)).astype(np.float32)
    for engine in small_engines.values():
        np.testing.assert_allclose(
            engine.encode(pts), reference_bev(pts, SMALL), rtol=0, atol=PARITY_ATOL
        )


def test_feature_subset_in_config_order(cache_dir: Path, small_cloud: np.ndarray) -> None:
    cfg = LidarEncoderConfig(
        x_range=SMALL.x_range,
        y_range=SMALL.y_range,
        z_range=SMALL.z_range,
        cell_size=SMALL.cell_size,
        max_points=SMALL.max_points,
        features=("occupancy", "max_z"),
    )
    engine = runner(cfg, "onnxruntime", cache_dir)
    full = reference_bev(small_cloud, SMALL)
    np.testing.assert_array_equal(
        engine.encode(small_cloud),
        full[[FEATURES.index("occupancy"), FEATURES.index("max_z")]],
    )


@pytest.mark.parametrize(
    "features",
    [(f,) for f in FEATURES] + [("occupancy", "min_z"), ("mean_intensity", "occupancy", "z_range")],
)
def test_each_feature_alone_matches_the_reference(
    cache_dir: Path, small_cloud: np.ndarray, features: tuple[str, ...]
) -> None:
    """The graph scatters only the rows its features need (occupancy from the count, or from
    the first max row where there is one): each subset gives the reference's channels, with
    out-of-range and non-finite points among the cloud."""
    cfg = dataclasses.replace(SMALL, features=features)
    junk = np.array(
        [[np.nan, 0, 0, 0], [1, np.inf, 0, 0], [1, 0, np.nan, 0], [1, 0, 0, np.nan], [9, 0, 0, 0]],
        np.float32,
    )
    cloud = np.concatenate([small_cloud, junk])
    engine = runner(cfg, "onnxruntime", cache_dir)
    full = reference_bev(cloud, SMALL)
    np.testing.assert_array_equal(engine.encode(cloud), full[[FEATURES.index(f) for f in features]])


def test_the_obstacle_grid_scatters_one_row() -> None:
    """The pipeline's grid asks for max_z alone: its graph scatters one [cells] row, not the
    six rows every feature together needs (each row a pass over every padded point)."""
    model = onnx.load(str(packaged_model_path(MIN_POINT_BUCKET)))
    scatters = [n for n in model.graph.node if n.op_type == "ScatterElements"]
    assert [a.s for n in scatters for a in n.attribute if a.name == "reduction"] == [b"max"]
    # The scatter's result made an output too, so ONNX Runtime shows its shape.
    model.graph.output.append(onnx.ValueInfoProto(name=scatters[0].output[0]))
    session = onnxruntime.InferenceSession(
        model.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    outputs = session.run(
        None,
        {
            "points": np.zeros((MIN_POINT_BUCKET, 4), np.float32),
            "num_points": np.array([0], np.int64),
        },
    )
    cells = OBSTACLE_CONFIG.width * OBSTACLE_CONFIG.height
    assert outputs[-1].shape == (1, cells + 1)


@pytest.mark.parametrize(
    ("points", "match"),
    [
        (np.zeros((5, 4), np.float64), "'points' must be float32, got float64"),
        (np.zeros((5, 3), np.float32), r"'points' must have shape \[N, 4\]"),
        (np.zeros(20, np.float32), r"'points' must have shape \[N, 4\]"),
        (np.zeros((65, 4), np.float32), "'points' has 65 points, more than max_points=64"),
        ([[0.0, 0.0, 0.0, 0.0]], "'points' must be a numpy array"),
    ],
)
def test_bad_input_raises(
    small_engines: dict[str, LidarEncoderRunner], points: object, match: str
) -> None:
    for engine in small_engines.values():
        with pytest.raises(ValueError, match=match):
            engine.encode(points)  # type: ignore[arg-type]


def test_an_engine_of_another_grid_is_refused(cache_dir: Path) -> None:
    other = LidarEncoderConfig.coarse(max_points=SMALL.max_points)
    engine = OnnxRuntimeEngine(cached_lidar_encoder_onnx(other, cache_dir))
    with pytest.raises(
        EngineError, match=r"^lidar encoder: the engine lidar_encoder-.* has outputs"
    ):
        LidarEncoderRunner(engine, SMALL)


# --- export -------------------------------------------------------------------------------


def test_export_is_static_and_deterministic(tmp_path: Path) -> None:
    first = export_lidar_encoder_onnx(SMALL, tmp_path / "a.onnx")
    second = export_lidar_encoder_onnx(SMALL, tmp_path / "b.onnx")
    assert first.read_bytes() == second.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.onnx", "b.onnx"]  # no temp files
    model = onnx.load(str(first))
    onnx.checker.check_model(model, full_check=True)
    assert {o.domain: o.version for o in model.opset_import}[""] == ONNX_OPSET

    def dims(value: onnx.ValueInfoProto) -> list[int | str]:
        return [
            d.dim_param if d.HasField("dim_param") else d.dim_value
            for d in value.type.tensor_type.shape.dim
        ]

    shapes = {v.name: dims(v) for v in [*model.graph.input, *model.graph.output]}
    assert shapes == {"points": [64, 4], "num_points": [1], "bev": list(SMALL.output_shape)}
    # The reductions are plain ScatterElements, not the exporter's rank-checking If wrappers.
    ops = {n.op_type for n in model.graph.node}
    assert "If" not in ops
    reductions = sorted(
        a.s.decode()
        for n in model.graph.node
        if n.op_type == "ScatterElements"
        for a in n.attribute
        if a.name == "reduction"
    )
    assert reductions == ["add", "max"]


def test_export_cache_is_keyed_by_config(tmp_path: Path) -> None:
    path = cached_lidar_encoder_onnx(SMALL, tmp_path)
    assert path.parent == tmp_path and SMALL.cache_key()[:24] in path.name
    mtime = path.stat().st_mtime_ns
    assert cached_lidar_encoder_onnx(SMALL, tmp_path) == path
    assert path.stat().st_mtime_ns == mtime  # reused, not re-exported
    other = cached_lidar_encoder_onnx(
        LidarEncoderConfig.coarse(max_points=SMALL.max_points), tmp_path
    )
    assert other != path and other.is_file()


def test_engine_specs_match_the_onnx_model(small_engines: dict[str, LidarEncoderRunner]) -> None:
    encoder = small_engines["onnxruntime"]
    assert isinstance(encoder.engine, OnnxRuntimeEngine)
    assert encoder.engine.inputs == SMALL.input_specs()
    assert encoder.engine.outputs == SMALL.output_specs()
    assert "CPUExecutionProvider" in encoder.describe()
    assert encoder.describe().startswith("lidar encoder: onnxruntime")
    assert small_engines["torch"].describe().startswith("lidar encoder: torch")
    # The torch module takes and gives the same tensors as its export.
    assert small_engines["torch"].engine.inputs == encoder.engine.inputs


# --- real KITTI scans ---------------------------------------------------------------------


@pytest.mark.parametrize("scan", ["velodyne_reduced/000003.bin", "velodyne/000000.bin"])
def test_kitti_torch_and_onnxruntime_agree(
    kitti_engines: dict[str, LidarEncoderRunner], kitti_dir: Path, scan: str
) -> None:
    points = load_scan(kitti_dir / scan)
    ort_bev = kitti_engines["onnxruntime"].encode(points)
    torch_bev = kitti_engines["torch"].encode(points)
    np.testing.assert_allclose(ort_bev, torch_bev, rtol=0, atol=PARITY_ATOL)
    # Cell assignment, counts and the max/min reductions are order-free, so those agree exactly
    # (density only to an ulp: Log(1 + n) in ONNX vs log1p(n) in torch).
    for name in ("max_z", "min_z", "max_intensity", "occupancy"):
        k = FEATURES.index(name)
        np.testing.assert_array_equal(ort_bev[k], torch_bev[k], err_msg=name)
    dens = FEATURES.index("density")
    np.testing.assert_array_equal(
        np.expm1(ort_bev[dens]).round(), np.expm1(torch_bev[dens]).round()
    )
    cfg = kitti_engines["torch"].config
    np.testing.assert_allclose(torch_bev, reference_bev(points, cfg), rtol=0, atol=PARITY_ATOL)

    occ = ort_bev[FEATURES.index("occupancy")] > 0
    assert occ.sum() > 2000  # a real scan covers thousands of 0.16 m cells
    max_z = ort_bev[FEATURES.index("max_z")][occ]
    assert (max_z >= cfg.z_range[0]).all() and (max_z < cfg.z_range[1]).all()
    counts = np.expm1(ort_bev[dens]).round()
    assert (counts[occ] >= 1).all() and (counts[~occ] == 0).all()


def test_packaged_model_is_the_obstacle_grid_export(tmp_path: Path) -> None:
    assert OBSTACLE_CONFIG.point_buckets() == (8192, 16384, 32768, 65536)
    for n in OBSTACLE_CONFIG.point_buckets():
        fresh = export_lidar_encoder_onnx(OBSTACLE_CONFIG.at_points(n), tmp_path / f"{n}.onnx")
        packaged = packaged_model_path(n)
        assert packaged == (
            PACKAGED_MODEL_PATH
            if n == OBSTACLE_CONFIG.max_points
            else PACKAGED_MODEL_PATH.with_name(f"lidar_encoder.n{n}.onnx")
        )
        assert packaged.read_bytes() == fresh.read_bytes(), (
            f"engines/models/{packaged.name} is stale: run `python -m engines.lidar.graph`"
        )


def test_point_buckets() -> None:
    """Powers of two from 8,192 below the full count, then the full count; one for a grid of
    fewer points (whose factory engine is then a single engine)."""
    assert LidarEncoderConfig().point_buckets() == (8192, 16384, 32768, 65536, 131072, 150_000)
    assert LidarEncoderConfig(max_points=8192).point_buckets() == (8192,)
    assert SMALL.point_buckets() == (64,)
    assert OBSTACLE_CONFIG.at_points(8192).input_specs()[0].shape == (8192, 4)
    assert OBSTACLE_CONFIG.input_specs(16384) == OBSTACLE_CONFIG.at_points(16384).input_specs()


def test_a_scan_runs_on_the_smallest_bucket_that_holds_it(kitti_dir: Path) -> None:
    """The obstacle grid's BEV image, of real scans cut to every bucket's edge, is the full
    count's to the bit, from the smallest bucket that holds the scan; the engine interface
    (full-count inputs) picks the same bucket; warm-up makes every bucket."""
    encoder = runner(OBSTACLE_CONFIG, "onnxruntime")
    engine = encoder.engine
    assert isinstance(engine, BucketedLidarEncoder)
    assert "point_buckets" in dict(engine.describe().extra)
    scan = load_scan(kitti_dir / "velodyne/000000.bin")
    # Heights above a level ground, as the obstacle grid takes them.
    scan[:, 2] += 1.73
    full = OBSTACLE_CONFIG.max_points
    for count, bucket in ((1, 8192), (8192, 8192), (8193, 16384), (20_000, 32768), (full, full)):
        points = np.ascontiguousarray(scan[:count])
        bev = encoder.encode(points)
        assert engine.last_size == bucket
        padded, n = encoder.pad(points)
        expected = engine.full.run({"points": padded, "num_points": n})["bev"]
        assert np.array_equal(bev, expected) and np.count_nonzero(bev) > 0
        assert np.array_equal(engine.run({"points": padded, "num_points": n})["bev"], expected)
        assert engine.last_size == bucket
    with pytest.raises(ValueError, match="more than max_points"):
        encoder.encode(np.zeros((full + 1, 4), np.float32))
    encoder.make_all()
    assert engine.loaded == OBSTACLE_CONFIG.point_buckets()


def test_obstacle_grid_runs_the_packaged_model_without_a_cache() -> None:
    engine = runner(OBSTACLE_CONFIG, "onnxruntime")
    assert "lidar_encoder.onnx" in engine.describe()
    points = np.array([[1.1, -2.1, 1.5, 0.3], [1.15, -2.05, 0.4, 0.3]], dtype=np.float32)
    bev = engine.encode(points)
    assert bev.shape == (1, 512, 512)
    iy, ix = int((-2.1 + 51.2) / 0.2), int((1.1 + 51.2) / 0.2)
    assert bev[0, iy, ix] == pytest.approx(1.5, abs=1e-6)
    assert np.count_nonzero(bev) == 1
