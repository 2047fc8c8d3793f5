"""Data-parallel training on Ray Train, with a local Ray cluster of 2 workers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from replay.training.fusion_config import parse_train_config
from replay.training.train_fusion import train
from tests.conftest import KITTI_LEARNED_GRID, kitti_training_config


@pytest.mark.slow
def test_two_ray_workers_train_one_model(kitti_dir: Path, yolox_path: Path, tmp_path: Path) -> None:
    pytest.importorskip("ray.train")
    doc = kitti_training_config(kitti_dir, yolox_path, 4)
    doc["model"] = {**KITTI_LEARNED_GRID, "channels": [8, 16], "pfn_channels": 8}
    doc["data"]["val"] = doc["data"]["train"][:1]
    config = parse_train_config(doc, "test", tmp_path)
    result = train(config, tmp_path / "run", ray_address="local", workers=2)
    assert result.steps == 4
    meta = yaml.safe_load((tmp_path / "run" / "learned_fusion.yaml").read_text())
    assert meta["trained"]["workers"] == 2
    records = [json.loads(ln) for ln in (tmp_path / "run" / "metrics.jsonl").open()]
    assert [r["workers"] for r in records if r["kind"] == "train"] == [2]
    # The first worker's checkpoint holds the averaged model, loadable as any other.
    state = torch.load(result.checkpoint_path, weights_only=False)
    assert state["step"] == 4
    assert not any(k.startswith("module.") for k in state["model"])
    assert result.onnx_path.is_file() and result.onnx_path.with_suffix(".pt").is_file()
