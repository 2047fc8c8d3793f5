"""The bundled BLAS libraries' thread pools, held to one thread in `perception`'s processes.

numpy, scipy and OpenCV each bundle their own OpenBLAS, and each starts as many worker threads
as there are cores. The node's products are small (a sweep's 57k x 4 points by a 4 x 4 pose),
and its cores are already taken by its own branches (ONNX Runtime's pools, the receiver): on
two cores OpenBLAS split deskewing's one product over two threads and waited for the one that
had no core, 4.6 ms a sweep instead of 0.24, and its idle workers spun. Measured with `perception
bench` at 10 Hz (benchmarks/RESULTS.md, #17): held to one thread, the node's CPU fell from 117%
to 72% of a core on KITTI (response p99 61.3 -> 56.3 ms) and from 163% to 72% on the synthetic
drive (fusion 31 -> 22 ms median). Holding OpenCV's own parallel loops to one thread as well
changed nothing measurable; they are left alone.

The same commands let torch's idle OpenMP threads sleep (`OMP_WAIT_POLICY=PASSIVE`): by
default they spin a while after each operator, waiting for the next, on cores the node's other
branches need (ONNX Runtime's pools are kept from spinning for the same reason). With `--backend
torch` on the synthetic drive (10 Hz, six pairs of benches, alternating) the response's median
was shorter with them sleeping in five pairs (by 0.8-24 ms; 1.6 ms longer in the sixth), its p99
lower in five, and the node's CPU up to 14 points lower (benchmarks/RESULTS.md). The default
backend, ONNX Runtime, never loads torch.

`perception train` is left alone: it has the machine to itself, and torch may multiply through
OpenBLAS (its aarch64 wheels do). A user who sets OPENBLAS_NUM_THREADS (or GOTO_NUM_THREADS,
OMP_NUM_THREADS, which OpenBLAS also reads), or OMP_WAIT_POLICY, keeps that setting.
"""

from __future__ import annotations

import os
import sys

from threadpoolctl import threadpool_limits

__all__ = [
    "BLAS_THREAD_VARIABLES",
    "OPENMP_WAIT_VARIABLE",
    "blas_thread_setting",
    "hold_blas_threads",
    "let_openmp_threads_sleep",
]

#: The environment variables OpenBLAS reads for its thread count, in its order of precedence.
BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS")
#: What OpenMP's idle threads do: spin (ACTIVE) or sleep (PASSIVE). libgomp, which torch loads,
#: reads it once, when it loads.
OPENMP_WAIT_VARIABLE = "OMP_WAIT_POLICY"


def blas_thread_setting() -> tuple[str, str] | None:
    """The variable OpenBLAS takes its thread count from here, and its value: the first of
    `BLAS_THREAD_VARIABLES` set to a non-empty value; None where none is (one per core)."""
    for name in BLAS_THREAD_VARIABLES:
        value = os.environ.get(name)
        if value:
            return name, value
    return None


def hold_blas_threads() -> bool:
    """Hold every BLAS library of this process to one thread, unless the user chose a count.

    The libraries loaded already are limited through threadpoolctl; those loaded later (scipy's
    and OpenCV's copies load with their modules) read the environment variable set here.
    Returns whether the limit was applied (False: the user's variable stands).
    """
    if blas_thread_setting() is not None:
        return False
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    threadpool_limits(limits=1, user_api="blas")
    return True


def let_openmp_threads_sleep() -> bool:
    """Idle OpenMP threads (torch's intra-op pool on the CPU) sleep rather than spin, unless the
    user chose a policy. Takes effect only before torch is first imported (libgomp reads the
    variable as it loads), so nothing is set once it has been. Returns whether it was set."""
    if os.environ.get(OPENMP_WAIT_VARIABLE) or "torch" in sys.modules:
        return False
    os.environ[OPENMP_WAIT_VARIABLE] = "PASSIVE"
    return True
