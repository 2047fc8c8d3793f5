"""Training the learned fusion engine end to end: the overfit sanity check on real KITTI frames,
resume, the training config, and `perception train` on bad input."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch
import yaml

from app.cli import main
from engines.fusion.learned_config import LearnedFusionConfig
from replay.training.fusion_config import load_train_config, parse_train_config
from replay.training.train_fusion import THRESHOLD_CANDIDATES, TrainResult, train
from tests.conftest import KITTI_LEARNED_GRID, kitti_training_config

#: A valid source entry, for configs that break something else.
SYNTH: dict[str, Any] = {"kind": "synthetic", "seeds": [1], "seconds": 0.1}


def _write(path: Path, doc: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.mark.slow
def test_overfits_the_kitti_frames(kitti_learned: TrainResult) -> None:
    """Training sanity: the whole pipeline (KITTI labels and reference boxes to vehicle-frame
    targets, painting with a real detector, pillars, head, decoding) learns the labelled KITTI
    frames to recall 1.0: a frame or label convention error would not fit."""
    result = kitti_learned
    for label in ("Car", "Pedestrian"):
        figures = result.validation[label]
        assert figures["references"] == 2, (label, figures)
        assert figures["recall"] == 1.0, (label, figures)
    centre = result.validation["Car"]["median_centre_m"]
    assert centre is not None and centre < 0.5
    # The export runs on ONNX Runtime and finds the same objects.
    session = ort.InferenceSession(str(result.onnx_path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["pillars", "pillar_points", "pillar_cells"]
    run = result.onnx_path.parent
    for name in ("metrics.jsonl", "curves.png", "learned_fusion.yaml", "learned_fusion.pt",
                 "checkpoints/last.pt"):  # fmt: skip
        assert (run / name).is_file(), name
    meta = yaml.safe_load((run / "learned_fusion.yaml").read_text())
    # Thresholds tuned on the validation frames (here the training frames): every class with
    # objects gets one of the candidates.
    assert set(meta["score_thresholds"]) == {"Car", "Pedestrian"}
    assert all(t in THRESHOLD_CANDIDATES for t in meta["score_thresholds"].values())
    assert LearnedFusionConfig.from_dict(meta["model"]) == LearnedFusionConfig.from_dict(
        KITTI_LEARNED_GRID
    )


def test_resume_gives_the_run_an_interruption_did_not_stop(
    kitti_dir: Path, yolox_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    doc = kitti_training_config(kitti_dir, yolox_path, 6)
    doc["train"]["checkpoint_every"] = 3
    doc["model"] = {**KITTI_LEARNED_GRID, "channels": [8, 16], "pfn_channels": 8}
    doc["augment"] = {"rotate_deg": 10.0, "scale": [0.9, 1.1], "flip_y": 0.5}
    doc["dropout"] = {"camera": 0.3, "camera_blind": 0.1, "beams": 0.3}
    doc["gt_sampling"] = {"counts": {"Car": 1, "Pedestrian": 2}, "probability": 0.7}
    config = parse_train_config(doc, "test", tmp_path)
    assert config.gt_sampling is not None
    straight = train(config, tmp_path / "straight")

    def interrupt(done: int, _total: int, _loss: float) -> None:
        if done == 5:  # killed after the step-3 checkpoint: steps 4 and 5 are lost
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path / "resumed", progress=interrupt)
    # Resuming with another config is refused.
    other = parse_train_config({**doc, "seed": 1}, "test", tmp_path)
    with pytest.raises(ValueError, match="another config"):
        train(other, tmp_path / "resumed", resume=True)
    # The checkpoint is read once: the state checked before preparing is the one resumed.
    reads: list[object] = []
    real_load = torch.load

    def counted_load(*args: Any, **kwargs: Any) -> Any:
        reads.append(args[0] if args else kwargs.get("f"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", counted_load)
    resumed = train(config, tmp_path / "resumed", resume=True)
    monkeypatch.undo()
    assert reads == [tmp_path / "resumed" / "checkpoints" / "last.pt"]
    # This run took the steps after the checkpoint's only (its summary said all six).
    assert (straight.resumed_at, resumed.resumed_at, resumed.steps_this_run) == (0, 3, 3)
    a = torch.load(straight.checkpoint_path, weights_only=False)["model"]
    b = torch.load(resumed.checkpoint_path, weights_only=False)["model"]
    for key in a:
        assert torch.equal(a[key], b[key]), key
    records = [json.loads(ln) for ln in (tmp_path / "resumed" / "metrics.jsonl").open()]
    assert [(r["kind"], r["step"]) for r in records] == [("train", 6), ("val", 6)]


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"data": {"train": []}}, "data.train must list"),
        ({"data": {"train": [{"kind": "synthetic"}]}, "optimiser": 1}, "unknown key"),
        ({"data": {"train": [{"kind": "synthetic"}]}, "train": {"steps": 0}}, "train: train.steps"),
        ({"data": {"train": [{"kind": "synthetic"}]}, "model": {"pillar_m": -1}}, "model:"),
        ({"data": {"train": [{"kind": "synthetic"}]}, "dropout": {"camera": 2}}, "dropout"),
        ({"data": {"train": [{"kind": "synthetic"}]}, "seed": "x"}, "seed"),
        (
            {"data": {"train": [{"kind": "synthetic"}]}, "gt_sampling": {"probability": 3}},
            "gt_sampling",
        ),
        # Class names are checked when the config is read, before minutes of preparing.
        (
            {"data": {"train": [{"kind": "synthetic"}]}, "gt_sampling": {"counts": {"Bus": 1}}},
            r"cfg\.yaml: gt_sampling\.counts: unknown class\(es\) Bus",
        ),
        (
            {"data": {"train": [{"kind": "synthetic"}]}, "gt_sampling": {"decoys": {"Van": 1}}},
            r"cfg\.yaml: gt_sampling\.decoys: unknown class\(es\) Van",
        ),
        # Non-finite and out-of-range values, refused when read rather than trained with (an
        # infinite rate exported NaN weights) or failing minutes in.
        (
            {"data": {"train": [SYNTH]}, "train": {"lr": math.inf}},
            r"cfg\.yaml: train: train\.lr must be a number in \(0, 1\], got inf",
        ),
        (
            {"data": {"train": [SYNTH]}, "train": {"threads": 100_000}},
            r"cfg\.yaml: train: train\.threads must be an integer from 1 to 256, got 100000",
        ),
        (
            {"data": {"train": [SYNTH]}, "seed": 10**23},
            rf"cfg\.yaml: seed must be an integer from 0 to 4,294,967,295, got {10**23}",
        ),
        # YAML 1.1 reads 3e-3 (no dot) as text: said as the node config says it.
        (
            {"data": {"train": [SYNTH]}, "train": {"lr": "3e-3"}},
            r"cfg\.yaml: train: train\.lr must be a number in \(0, 1\], got '3e-3' \(YAML reads "
            r"3e-3 as text: write 3\.0e-3\)",
        ),
        (
            {"data": {"train": [SYNTH]}, "train": {"steps": "1e3"}},
            r"train\.steps must be an integer from 1 to 10,000,000, got '1e3' \(YAML reads 1e3 as "
            r"text: write 1000\)",
        ),
        (
            {"data": {"train": [{**SYNTH, "seconds": "3e0"}]}},
            r"seconds: expected a number, got '3e0' \(YAML reads 3e0 as text: write 3\.0e\+0\)",
        ),
        (
            {"data": {"train": [SYNTH]}, "model": {"pillar_m": "32e-2"}},
            r"pillar_m must be a finite number > 0, got '32e-2' \(YAML reads 32e-2 as text",
        ),
        (
            {"data": {"train": [SYNTH]}, "dropout": {"camera": "0.2"}},
            r"dropout\.camera must be a probability in \[0, 1\], got '0\.2' \(quoted, it is text",
        ),
        (
            {"data": {"train": [SYNTH]}, "augment": {"scale": [1.05, 0.95]}},
            r"cfg\.yaml: augment: augment\.scale must be \[low, high\] with low <= high",
        ),
        (
            {"data": {"train": [SYNTH]}, "model": {"max_pillars": 10**12}},
            r"cfg\.yaml: model: learned fusion max_pillars must be an integer from 1 to 262,144",
        ),
        (
            {"data": {"train": [SYNTH]}, "model": [1, 2]},
            r"cfg\.yaml: model must be a mapping",
        ),
        (
            {"data": {"train": [{"kind": "synthetic", "seeds": {"start": 0, "count": 10**11}}]}},
            r"cfg\.yaml: data\.train: training source synthetic: seeds: count must be an integer "
            "from 1 to",
        ),
    ],
)
def test_bad_training_configs_are_refused_with_the_key(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_train_config(doc, "cfg.yaml", Path("."))


def _perception(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_refuses_bad_configs_and_a_second_run_in_one_folder(tmp_path: Path, capsys) -> None:
    # The process, once (its exit code and its one line); then the same CLI in this process.
    missing = _perception("train", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "o"))
    assert missing.returncode == 2
    assert "nope.yaml: cannot read the training config" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1
    bad = _write(tmp_path / "bad.yaml", {"data": {"train": [{"kind": "nowhere"}]}})
    assert main(["train", str(bad), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "nowhere" in err, err
    # A valid config: these are refused before anything is prepared.
    good = _write(
        tmp_path / "good.yaml", {"data": {"train": [{"kind": "synthetic", "seeds": [1]}]}}
    )
    (tmp_path / "o" / "checkpoints").mkdir(parents=True)
    (tmp_path / "o" / "checkpoints" / "last.pt").write_bytes(b"x")
    assert main(["train", str(good), "--out", str(tmp_path / "o")]) == 2
    assert "--resume" in capsys.readouterr().err
    notdir = tmp_path / "file"
    notdir.write_text("x")
    assert main(["train", str(good), "--out", str(notdir)]) == 2
    assert "is a file" in capsys.readouterr().err


def test_the_packaged_training_config_loads() -> None:
    config = load_train_config(Path(__file__).parents[3] / "configs" / "train_learned_fusion.yaml")
    assert config.model.classes == ("Car", "Pedestrian", "Cyclist")
    for source in config.train_sources:
        assert source["seeds"]["start"] >= 10  # seeds 0-9 are kept for evaluation
    np.testing.assert_equal(config.model.grid_size, (140, 180))


def test_the_packaged_model_was_trained_by_the_packaged_config() -> None:
    """engines/models/learned_fusion.* is what `perception train
    configs/train_learned_fusion.yaml` writes: the same training config, the same graph."""
    root = Path(__file__).parents[3]
    meta = yaml.safe_load((root / "engines" / "models" / "learned_fusion.yaml").read_text())
    config = load_train_config(root / "configs" / "train_learned_fusion.yaml")
    as_written = json.loads(json.dumps(config.to_dict()))  # tuples as the YAML's lists
    # The recorded config, read as a config file is (keys added since, such as a dropout that
    # is off by default, take their defaults).
    recorded = parse_train_config(meta["trained"]["config"], "packaged", root / "configs")
    assert json.loads(json.dumps(recorded.to_dict())) == as_written
    assert meta["model"] == as_written["model"]
    assert set(meta["score_thresholds"]) == set(config.model.classes)


def test_a_binary_training_config_is_named(tmp_path: Path) -> None:
    path = tmp_path / "train.yaml"
    path.write_bytes(b"seed: 0\n\x89PNG\r\n")
    with pytest.raises(ValueError) as info:
        load_train_config(path)
    assert str(info.value) == f"{path}: not UTF-8 text (byte 0x89 at offset 8)"


def test_a_deeply_nested_training_config_is_named(tmp_path: Path) -> None:
    path = tmp_path / "train.yaml"
    path.write_text("a: " + "[" * 10_000 + "]" * 10_000 + "\n")
    with pytest.raises(ValueError) as info:
        load_train_config(path)
    assert str(info.value) == f"{path}: not valid YAML (nests too deep)"


def test_resume_needs_a_readable_checkpoint_of_this_trainer(tmp_path: Path) -> None:
    """Refused before anything is prepared: the sources here could not even be opened."""
    doc = {"data": {"train": [{"kind": "kitti", "root": "nowhere"}]}, "camera": {"model": "none"}}
    config = parse_train_config(doc, "cfg.yaml", tmp_path)
    with pytest.raises(ValueError, match=r"^nothing to resume: no checkpoint in .*checkpoints"):
        train(config, tmp_path / "run", resume=True)
    ckpt = tmp_path / "run" / "checkpoints" / "last.pt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"\x80\x04not a pickle")
    with pytest.raises(ValueError, match=r"last\.pt: not a readable training checkpoint"):
        train(config, tmp_path / "run", resume=True)
    torch.save({"step": 3}, ckpt)
    with pytest.raises(ValueError, match=r"last\.pt: not a training checkpoint \(it lacks"):
        train(config, tmp_path / "run", resume=True)


def test_resume_drops_records_after_the_checkpoint_and_a_torn_line(tmp_path: Path) -> None:
    """A run killed after its last checkpoint logged steps it will redo, and one killed (or
    out of disk) while writing leaves half a line: the resumed log keeps the records up to the
    checkpoint's step, in order, and nothing else."""
    from replay.training.train_fusion import _trim_metrics

    metrics = tmp_path / "metrics.jsonl"
    records = [{"kind": "train", "step": s, "loss": 1.0 / s} for s in (1, 2, 3, 4)]
    lines = [json.dumps(r, sort_keys=True) for r in records]
    metrics.write_text("\n".join([*lines[:3], "[1, 2]", lines[3], lines[3][:17]]) + "\n")
    _trim_metrics(metrics, 3)
    assert metrics.read_text() == "".join(f"{ln}\n" for ln in lines[:3])


#: A run of seconds: one short synthetic drive, no camera, a small grid and net.
TINY: dict[str, Any] = {
    "data": {"train": [SYNTH]},
    "camera": {"model": "none"},
    "model": {**KITTI_LEARNED_GRID, "channels": [8, 16], "pfn_channels": 8},
    "train": {"steps": 1000, "checkpoint_every": 1000, "threads": 1},
}


def test_a_run_stopped_before_its_first_checkpoint_leaves_nothing(tmp_path: Path) -> None:
    """Ctrl-C or SIGTERM before the first checkpoint: nothing to resume, and no folder holding
    a metrics log, which looked like a run that --resume then refused."""
    config = parse_train_config(TINY, "test", tmp_path)

    def interrupt(done: int, _total: int, _loss: float) -> None:
        if done == 20:  # after metrics were logged at steps 10 and 20
            raise KeyboardInterrupt

    out = tmp_path / "a" / "run"
    with pytest.raises(KeyboardInterrupt):
        train(config, out, progress=interrupt)
    assert list(tmp_path.iterdir()) == []
    # A folder that was there stays, without the run's files.
    out.mkdir(parents=True)
    with pytest.raises(KeyboardInterrupt):
        train(config, out, progress=interrupt)
    assert list(out.iterdir()) == []


def test_a_checkpoint_interrupted_while_written_leaves_the_last_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM during a checkpoint's write: the previous checkpoint stays, and no torn
    `last.pt.tmp` beside it."""
    from replay.training import train_fusion

    path = tmp_path / "last.pt"
    train_fusion._atomic_save({"step": 1}, path)
    before = path.read_bytes()

    def torn(_obj: Any, to: Path) -> None:
        Path(to).write_bytes(b"PK\x03\x04 half")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", torn)
    with pytest.raises(KeyboardInterrupt):
        train_fusion._atomic_save({"step": 2}, path)
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]
    assert path.read_bytes() == before
