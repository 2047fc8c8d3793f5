"""The learned fusion engine: config, pillars, graph, export and runner."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from engines.errors import EngineError, ModelError
from engines.fusion.learned_config import (
    PACKAGED_LEARNED_MODEL,
    REGRESSION_CHANNELS,
    LearnedFusionConfig,
    learned_model_from_document,
    learned_model_paths,
)
from engines.fusion.learned_graph import (
    LearnedFusionExport,
    LearnedFusionNet,
    decode_heads,
    export_bev,
    export_learned_fusion_onnx,
)
from engines.fusion.learned_runner import LearnedFusionRunner
from engines.fusion.pillars import pillarize
from engines.onnxruntime_backend import OnnxRuntimeEngine
from perception.pipeline.learned_model import load_learned_model
from tests.conftest import KittiFrame

SMALL = LearnedFusionConfig(
    x_range_m=(0.0, 25.6), y_range_m=(-12.8, 12.8), max_pillars=2000, max_detections=16
)


def _painted(points: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    paint = np.zeros((len(points), 4), np.float32)
    paint[:, :3] = rng.random((len(points), 3)) * (rng.random((len(points), 1)) < 0.1)
    paint[:, 3] = 1.0
    return np.concatenate([points[:, :4], paint], axis=1).astype(np.float32)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"x_range_m": (10.0, 0.0)}, "increasing"),
        ({"pillar_m": 0.0}, "pillar_m"),
        ({"head_stride": 3}, "head_stride"),
        ({"x_range_m": (0.0, 25.0)}, "divide"),
        ({"classes": ("Car", "Car")}, "distinct"),
        ({"max_pillars": 0}, "max_pillars"),
    ],
)
def test_config_refuses_bad_values(change: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LearnedFusionConfig(**change)  # type: ignore[arg-type]


def test_config_round_trips_and_refuses_unknown_fields() -> None:
    cfg = LearnedFusionConfig(pillar_m=0.16, channels=(16, 32))
    assert LearnedFusionConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown field"):
        LearnedFusionConfig.from_dict({"grid": 3})


_VALID = {"model": LearnedFusionConfig().to_dict()}


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (["1"], r"\(a mapping expected, got list\)$"),
        ({"score_thresholds": {}}, r"\(no 'model' section\)$"),
        ({"model": [["pillar_m", 0.16]]}, r"\(model must map the config's fields, got \[\["),
        ({"model": {"pillar": 0.16}}, r"unknown field\(s\) pillar\)$"),
        ({**_VALID, "score_thresholds": [1, 2]}, r"score_thresholds must map classes to"),
        ({**_VALID, "score_thresholds": {"Car": 2.0}}, r"score_thresholds must lie in \[0, 1\]"),
    ],
)
def test_a_bad_learned_model_document_is_one_line_naming_its_file(
    tmp_path: Path, document: object, message: str
) -> None:
    """The engine validates the parsed document (its text is read above this package, by the
    bounded YAML loader: tests/perception/pipeline/test_learned_model.py)."""
    with pytest.raises(ModelError, match=message) as info:
        learned_model_from_document(tmp_path / "m.onnx", document)
    assert str(info.value).startswith(f"{tmp_path / 'm.yaml'}: not a learned model config (")
    assert "\n" not in str(info.value)


def test_a_learned_model_document_gives_its_config_and_thresholds(tmp_path: Path) -> None:
    onnx = tmp_path / "m.onnx"
    document = {"model": {"pillar_m": 0.16}, "score_thresholds": {"Car": 0.4}, "trained": {}}
    model = learned_model_from_document(onnx, document)
    assert model.onnx_path == onnx and model.weights_path is None and model.bucket_paths == ()
    assert model.config == LearnedFusionConfig(pillar_m=0.16)
    assert model.score_thresholds == {"Car": 0.4}


def test_learned_model_paths_refuse_a_missing_export_or_a_config_that_is_no_file(
    tmp_path: Path,
) -> None:
    assert learned_model_paths("learned_fusion") == (
        PACKAGED_LEARNED_MODEL,
        PACKAGED_LEARNED_MODEL.with_suffix(".yaml"),
    )
    with pytest.raises(ModelError, match=r"none\.onnx: not found \(train one with"):
        learned_model_paths(tmp_path / "none.onnx")
    (tmp_path / "m.onnx").write_bytes(b"")
    (tmp_path / "m.yaml").mkdir()
    with pytest.raises(ModelError, match=r"m\.yaml: not a regular file, so not a learned model"):
        learned_model_paths(tmp_path / "m.onnx")


def test_pillars_hold_each_point_with_its_offsets() -> None:
    cfg = SMALL
    pts = np.array(
        [[1.0, 0.1, -1.0, 0.5, 0.9, 0, 0, 1], [1.1, 0.2, -0.5, 0.2, 0, 0, 0, 1],
         [5.0, -3.0, 0.0, 0.1, 0, 0.7, 0, 0], [-1.0, 0.0, 0.0, 0.0, 0, 0, 0, 0]],
        np.float32,
    )  # fmt: skip
    out = pillarize(pts, cfg)
    assert out.pillars_used == 2 and out.points_used == 3  # the last point is behind the grid
    nx, ny = cfg.grid_size
    full = out.pillar_points > 0
    assert sorted(out.pillar_points[full]) == [1, 2]
    assert (out.pillar_cells[~full] == nx * ny).all()
    first = int(np.flatnonzero(out.pillar_points == 2)[0])
    cell = int(out.pillar_cells[first])
    ix, iy = divmod(cell, ny)
    assert ix == math.floor(1.0 / cfg.pillar_m) and iy == math.floor((0.1 + 12.8) / cfg.pillar_m)
    rows = out.pillars[first, :2]
    np.testing.assert_allclose(rows[:, :4], pts[:2, :4])
    np.testing.assert_allclose(rows[:, 4:7], pts[:2, :3] - pts[:2, :3].mean(0), atol=1e-6)
    centre = (cfg.x_range_m[0] + (ix + 0.5) * cfg.pillar_m, cfg.y_range_m[0] + (iy + 0.5) * 0.32)
    np.testing.assert_allclose(rows[:, 7], pts[:2, 0] - centre[0], atol=1e-5)
    np.testing.assert_allclose(rows[:, 9:], pts[:2, 4:])
    assert not out.pillars[first, 2:].any()


def test_pillars_keep_the_fullest_when_there_are_too_many() -> None:
    cfg = LearnedFusionConfig(x_range_m=(0.0, 5.12), y_range_m=(-2.56, 2.56), max_pillars=3)
    rng = np.random.default_rng(0)
    centres = [(0.5, 0.1, 5), (1.5, 0.1, 1), (2.5, 0.1, 3), (3.5, 0.1, 4), (4.5, 0.1, 2)]
    pts = np.concatenate(
        [np.tile([x, y, 0.0, 0.0, 0, 0, 0, 0], (n, 1)) + rng.normal(0, 0.01, (n, 8)) * [1, 1, 1, 0,
         0, 0, 0, 0] for x, y, n in centres]
    ).astype(np.float32)  # fmt: skip
    out = pillarize(pts, cfg)
    assert out.pillars_used == 3
    assert sorted(out.pillar_points[:3].tolist()) == [3, 4, 5]
    assert np.array_equal(out.pillars, pillarize(pts, cfg).pillars)  # deterministic


def _pillarize_by_hand(points: np.ndarray, cfg: LearnedFusionConfig) -> dict[int, list[int]]:
    """Each kept pillar's cell and the rows of `points` it holds, point by point."""
    nx, ny = cfg.grid_size
    members: dict[int, list[int]] = {}
    for row, (x, y, z) in enumerate(points[:, :3].astype(np.float64)):
        ix = math.floor((x - cfg.x_range_m[0]) / cfg.pillar_m)
        iy = math.floor((y - cfg.y_range_m[0]) / cfg.pillar_m)
        if 0 <= ix < nx and 0 <= iy < ny and cfg.z_range_m[0] <= z < cfg.z_range_m[1]:
            members.setdefault(ix * ny + iy, []).append(row)
    fullest = sorted(members, key=lambda cell: (-len(members[cell]), cell))[: cfg.max_pillars]
    return {cell: members[cell][: cfg.points_per_pillar] for cell in sorted(fullest)}


@pytest.mark.parametrize("pillar_m", [0.32, 0.02])
def test_pillars_match_a_point_by_point_reference(pillar_m: float) -> None:
    """Crowded pillars (more points than a pillar holds), more pillars than the grid keeps,
    points off the grid and out of the height range: the pillars, their points in sweep order
    and their features are those of a plain loop over the points. On a grid of 400 cells and
    on one of 102,400 (cells past 16 bits sort another way)."""
    cfg = LearnedFusionConfig(x_range_m=(0.0, 6.4), y_range_m=(-3.2, 3.2), max_pillars=40,
                              points_per_pillar=5, pillar_m=pillar_m)  # fmt: skip
    assert (cfg.grid_size[0] * cfg.grid_size[1] > 1 << 16) == (pillar_m < 0.1)
    rng = np.random.default_rng(7)
    xyz = rng.uniform([-1.0, -4.0, -3.5], [7.0, 4.0, 2.5], (1500, 3))
    clumps = rng.normal([2.0, 0.5, 0.0], 0.05, (60, 3))  # a few pillars far over capacity
    pts = _painted(np.c_[np.r_[xyz, clumps], rng.random(1560)].astype(np.float32), rng)
    out = pillarize(pts, cfg)
    want = _pillarize_by_hand(pts, cfg)
    nx, ny = cfg.grid_size
    assert out.pillars_used == len(want) == cfg.max_pillars
    assert out.points_used == sum(len(rows) for rows in want.values())
    assert list(out.pillar_cells[: out.pillars_used]) == list(want)
    assert (out.pillar_cells[out.pillars_used :] == nx * ny).all()
    for slot, (cell, rows) in enumerate(want.items()):
        assert out.pillar_points[slot] == len(rows)
        got = out.pillars[slot]
        mine = pts[rows]
        ix, iy = divmod(cell, ny)
        np.testing.assert_array_equal(got[: len(rows), :4], mine[:, :4])
        np.testing.assert_allclose(got[: len(rows), 4:7], mine[:, :3] - mine[:, :3].mean(0),
                                   atol=1e-6)  # fmt: skip
        np.testing.assert_allclose(got[: len(rows), 7], mine[:, 0] - (ix + 0.5) * cfg.pillar_m,
                                   atol=1e-6)  # fmt: skip
        np.testing.assert_allclose(got[: len(rows), 8],
                                   mine[:, 1] - (cfg.y_range_m[0] + (iy + 0.5) * cfg.pillar_m),
                                   atol=1e-6)  # fmt: skip
        np.testing.assert_array_equal(got[: len(rows), 9:], mine[:, 4:])
        assert not got[len(rows) :].any()
    assert not out.pillars[out.pillars_used :].any()


def test_the_exports_pillar_encoder_is_the_nets() -> None:
    """The export's folded, stacked pillar encoder gives the trained encoder's BEV image for
    the input and its camera-free copy, with garbage in the padding slots and pillars (which
    the counts and the off-grid cell say to leave out)."""
    torch.manual_seed(1)
    cfg = SMALL
    net = LearnedFusionNet(cfg).eval()
    norm = net.pfn_norm
    assert norm.running_mean is not None and norm.running_var is not None
    norm.running_mean.uniform_(-0.5, 0.5)
    norm.running_var.uniform_(0.5, 2.0)
    norm.weight.data.uniform_(0.5, 1.5)
    norm.bias.data.uniform_(-0.3, 0.3)  # positive biases: a padding slot would not be 0
    nx, ny = cfg.grid_size
    p, k = cfg.max_pillars, cfg.points_per_pillar
    rng = np.random.default_rng(2)
    pillars = torch.from_numpy(rng.normal(0, 1, (p, k, cfg.point_features)).astype(np.float32))
    counts = torch.from_numpy(rng.integers(0, k + 1, p).astype(np.int32))
    cells = torch.from_numpy(rng.permutation(nx * ny)[:p].astype(np.int64))
    cells[-50:] = nx * ny  # padding pillars, some of them with points
    counts[-60:-50] = 0  # pillars on the grid with no points
    got = export_bev(net, pillars, counts, cells)
    free = pillars.clone()
    free[:, :, cfg.painted_slice] = 0.0
    with torch.no_grad():
        want = net.bev(torch.stack([pillars, free]), torch.stack([counts, counts]),
                       torch.stack([cells, cells]))  # fmt: skip
    assert got.shape == want.shape == (2, cfg.pfn_channels, nx, ny)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert (got[0] != got[1]).any()  # the painted channels matter to this encoder


def test_pillars_refuse_bad_points() -> None:
    with pytest.raises(ValueError, match="N x 8"):
        pillarize(np.zeros((4, 4), np.float32), SMALL)
    bad = np.zeros((2, 8), np.float32)
    bad[1, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        pillarize(bad, SMALL)


def test_decoding_finds_a_planted_peak() -> None:
    cfg = SMALL
    hx, hy = cfg.head_size
    heat = torch.full((3, hx, hy), -9.0)
    heat[1, 10, 20] = 3.0
    reg = torch.zeros(len(REGRESSION_CHANNELS), hx, hy)
    reg[:, 10, 20] = torch.tensor(
        [0.25, 0.75, -0.8, math.log(0.8), math.log(0.6), math.log(1.7), 1.0, 0.0, 1.5, -0.5]
    )
    rows, index = decode_heads(heat, reg, cfg)
    top = rows[0].numpy()
    cell = cfg.cell_m
    np.testing.assert_allclose(top[:3], [(10.25) * cell, -12.8 + 20.75 * cell, -0.8], atol=1e-5)
    np.testing.assert_allclose(top[3:6], [0.8, 0.6, 1.7], rtol=1e-5)
    assert top[6] == pytest.approx(math.pi / 2)
    np.testing.assert_allclose(top[7:9], [1.5, -0.5])
    assert top[9] == pytest.approx(1 / (1 + math.exp(-3.0)))
    assert top[10] == 1.0
    assert int(index[0]) == 1 * hx * hy + 10 * hy + 20
    assert (rows[1:, 9] < 0.01).all()


@pytest.fixture(scope="module")
def kitti_painted(kitti_frame: Callable[[str], KittiFrame]) -> np.ndarray:
    return _painted(kitti_frame("000003").points, np.random.default_rng(3))


def test_export_runs_on_onnxruntime_like_torch(kitti_painted: np.ndarray, tmp_path: Path) -> None:
    """A real KITTI scan through the export on ONNX Runtime and through torch: the same
    detection table to 1e-4 (boxes) and the same attribution scores."""
    torch.manual_seed(0)
    net = LearnedFusionNet(LearnedFusionConfig()).eval()
    # Trained-like statistics, so the comparison is not of near-zero activations.
    for module in net.modules():
        if isinstance(module, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            assert module.running_mean is not None and module.running_var is not None
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 2.0)
    path = export_learned_fusion_onnx(net, tmp_path / "learned.onnx")
    # The same graph at the smaller pillar counts, beside it (engines.fusion.learned_buckets).
    assert sorted(p.name for p in tmp_path.glob("learned.p*.onnx")) == [
        "learned.p1536.onnx",
        "learned.p3072.onnx",
        "learned.p4608.onnx",
    ]
    engine = OnnxRuntimeEngine(path, num_threads=2)
    cfg = net.config
    pin = pillarize(kitti_painted, cfg)
    got = engine.run(pin.as_feeds())
    with torch.no_grad():
        want = LearnedFusionExport(net)(*(torch.from_numpy(v) for v in pin.as_feeds().values()))
    np.testing.assert_allclose(got["detections"], want[0].numpy(), atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(got["camera_free_score"], want[1].numpy(), atol=1e-5)
    assert pin.pillars_used > 500

    runner = LearnedFusionRunner(engine, cfg, score_threshold=0.0)
    result = runner.run(kitti_painted)
    np.testing.assert_allclose(result.rows, got["detections"], atol=1e-6)
    # Per-class thresholds keep what their class reaches.
    top = result.rows[0]
    label = cfg.classes[int(top[10])]
    above = LearnedFusionRunner(engine, cfg, {label: float(top[9]) + 1e-3}).run(kitti_painted)
    assert not any(int(r[10]) == int(top[10]) and r[9] == top[9] for r in above.rows)
    with pytest.raises(EngineError, match="thresholds"):
        LearnedFusionRunner(engine, cfg, {"Car": 1.5})
    # Without painted channels the camera-free copy is the same input: the same scores.
    unpainted = kitti_painted.copy()
    unpainted[:, 4:] = 0.0
    result = runner.run(unpainted)
    np.testing.assert_allclose(result.camera_free_score, result.rows[:, 9], atol=1e-6)


def test_the_packaged_export_is_the_trained_net(kitti_painted: np.ndarray) -> None:
    """The packaged ONNX (exported with the folded encoder) against its weights run as
    training runs them: the net on the input and its camera-free copy as a batch of two, then
    decoded. The same detection table and attribution scores on a real KITTI scan."""
    model = load_learned_model("learned_fusion")
    cfg = model.config
    assert model.weights_path is not None
    net = LearnedFusionNet(cfg)
    net.load_state_dict(torch.load(model.weights_path, map_location="cpu", weights_only=True))
    net.eval()
    feeds = pillarize(kitti_painted, cfg).as_feeds()
    pillars, counts, cells = (torch.from_numpy(v) for v in feeds.values())
    free = pillars.clone()
    free[:, :, cfg.painted_slice] = 0.0
    with torch.no_grad():
        heat, reg = net(torch.stack([pillars, free]), torch.stack([counts, counts]),
                        torch.stack([cells, cells]))  # fmt: skip
        rows, index = decode_heads(heat[0], reg[0], cfg)
        free_score = torch.sigmoid(heat[1].reshape(-1))[index]
    got = OnnxRuntimeEngine(PACKAGED_LEARNED_MODEL, num_threads=2).run(feeds)
    np.testing.assert_array_equal(got["detections"][:, 10], rows[:, 10].numpy())
    np.testing.assert_allclose(got["detections"], rows.numpy(), atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(got["camera_free_score"], free_score.numpy(), atol=1e-5)
    assert (rows[:, 9] >= 0.3).sum() >= 3  # real detections, not an empty table


def test_runner_refuses_an_engine_of_another_graph(yolox_path: Path) -> None:
    with pytest.raises(EngineError, match=r"learned fusion engine: the engine .* has inputs"):
        LearnedFusionRunner(OnnxRuntimeEngine(yolox_path), LearnedFusionConfig())
