"""Benchmarks use the same real-data fixtures as the tests, and the node's BLAS and OpenMP
threads."""

from app.threads import hold_blas_threads, let_openmp_threads_sleep
from tests.conftest import data_dir, kitti_dir, yolox_path

__all__ = ["data_dir", "kitti_dir", "yolox_path"]

# Every `perception` command holds BLAS to one thread and lets idle OpenMP threads sleep: time
# the stages as the node runs them.
hold_blas_threads()
let_openmp_threads_sleep()
