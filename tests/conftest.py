"""Shared fixtures: the real data corpus (PERCEPTION_DATA, default ../shared/data)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def find_data_dir() -> Path | None:
    env = os.environ.get("PERCEPTION_DATA")
    path = Path(env) if env else REPO.parent / "shared" / "data"
    return path if path.is_dir() else None


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = find_data_dir()
    if path is None:
        pytest.skip(
            "real data not found: set PERCEPTION_DATA or place the corpus at ../shared/data"
        )
    return path


@pytest.fixture(scope="session")
def kitti_dir(data_dir: Path) -> Path:
    return data_dir / "kitti_object" / "training"


@pytest.fixture(scope="session")
def yolox_path(data_dir: Path) -> Path:
    return data_dir / "camera_detector" / "yolox_nano_coco_416.onnx"
