from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pymap3d
import pytest

from perception.config import CameraModelConfig
from perception.messages import GnssFix, Header
from perception.pipeline import Pipeline
from perception.sync import NearestSync
from replay.kitti_object import CAMERA_STREAM, KittiObjectFolder


@pytest.fixture(scope="module")
def pipeline(yolox_path: Path) -> Pipeline:
    return Pipeline.from_config(CameraModelConfig(path=str(yolox_path), kind="yolox"))


def _bundle(kitti_dir: Path, fix: GnssFix | None):
    sync = NearestSync((CAMERA_STREAM,), window_ns=50_000_000, timeout_ns=300_000_000)
    if fix is not None:
        sync.add(fix, receive_ns=0)
    for msg in KittiObjectFolder(kitti_dir).frame_messages(0, 0):
        sync.add(msg, receive_ns=0)
    (bundle,) = sync.poll(0)
    return bundle


def test_step_is_deterministic(pipeline: Pipeline, kitti_dir: Path) -> None:
    a = pipeline.step(_bundle(kitti_dir, None), 0)
    b = pipeline.step(_bundle(kitti_dir, None), 0)
    assert a.detections == b.detections
    assert a.detections and all(d.latitude_deg is None for d in a.detections)


def test_global_position_from_gnss_heading_and_lever_arm(pipeline, kitti_dir: Path) -> None:
    lat, lon, alt = 49.0150038, 8.4342971, 116.43
    heading = math.pi / 2  # vehicle x axis points north
    fix = GnssFix(Header("gnss", 0, 0, "gnss"), lat, lon, alt, heading_rad=heading)
    bundle = _bundle(kitti_dir, fix)
    dl = pipeline.step(bundle, 0)
    (ped,) = [d for d in dl.detections if d.label == "Pedestrian"]
    arm = bundle.rig.gnss_lever_arm_m
    assert arm is not None
    # Facing north: vehicle x -> north, vehicle y (left) -> west.
    rel = np.asarray(ped.center) - arm
    east, north, up = -rel[1], rel[0], rel[2]
    exp_lat, exp_lon, _ = pymap3d.enu2geodetic(east, north, up, lat, lon, alt)
    assert ped.latitude_deg == pytest.approx(exp_lat, abs=1e-8)
    assert ped.longitude_deg == pytest.approx(exp_lon, abs=1e-8)
    assert ped.latitude_deg > lat  # 8.9 m ahead = north
