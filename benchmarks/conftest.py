"""Benchmarks use the same real-data fixtures as the tests."""

from tests.conftest import data_dir, kitti_dir, yolox_path

__all__ = ["data_dir", "kitti_dir", "yolox_path"]
