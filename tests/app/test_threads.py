"""Every `perception` command but `train` holds its BLAS libraries to one thread and lets idle
OpenMP threads sleep, unless the user chose.

Each case runs in a fresh interpreter: the limit is process-wide, and the test process's own
BLAS (and environment) may have been limited already by a test that called `main`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from app.threads import BLAS_THREAD_VARIABLES, OPENMP_WAIT_VARIABLE

REPO = Path(__file__).resolve().parents[2]

# Runs a `perception` command in-process, then loads the libraries that bundle their own
# OpenBLAS (scipy and OpenCV load theirs with their modules) and reports every BLAS pool's size.
_PROBE = """
import json, sys
import numpy
argv = json.loads(sys.argv[1])
if argv:
    from app.cli import main
    main(argv)
import scipy.linalg, cv2
from threadpoolctl import threadpool_info
print(json.dumps(sorted(
    (i["prefix"], i["num_threads"]) for i in threadpool_info() if i["user_api"] == "blas"
)))
"""


def _probe(script: str, argv: list[str], unset: Sequence[str], env: dict[str, str]) -> Any:
    """What `script` prints last (JSON), run with ARGV in a fresh interpreter, the variables
    `unset` removed from this process's environment and `env` added."""
    clean = {k: v for k, v in os.environ.items() if k not in unset}
    done = subprocess.run(
        [sys.executable, "-c", script, json.dumps(argv)],
        env={**clean, **env},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(done.stdout.splitlines()[-1])


def _pools(argv: list[str], **env: str) -> list[tuple[str, int]]:
    """Every BLAS pool's (library, threads) after `perception ARGV` ran in a fresh interpreter
    (no command with an empty ARGV)."""
    pools = [(str(p), int(n)) for p, n in _probe(_PROBE, argv, BLAS_THREAD_VARIABLES, env)]
    assert len(pools) >= 2, f"expected numpy's and scipy's BLAS at least, found {pools}"
    return pools


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: BLAS starts one thread anyway")
def test_a_command_holds_every_blas_to_one_thread() -> None:
    untouched = _pools([])
    assert any(n > 1 for _, n in untouched), f"BLAS started one thread unasked: {untouched}"
    held = _pools(["config", "show"])
    assert all(n == 1 for _, n in held), held
    # Loaded before main ran (numpy's) and after it (scipy's, OpenCV's): all held.
    assert {p for p, _ in held} == {p for p, _ in untouched}


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: BLAS starts one thread anyway")
def test_training_keeps_every_core(tmp_path: Path) -> None:
    # It has the machine to itself; it fails here at once (no such config), after the hold.
    pools = _pools(["train", str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "out")])
    assert any(n > 1 for _, n in pools), pools


def test_the_users_thread_count_stands() -> None:
    pools = _pools(["config", "show"], OPENBLAS_NUM_THREADS="2")
    assert all(n == 2 for _, n in pools), pools
    pools = _pools(["config", "show"], OMP_NUM_THREADS="2")
    assert all(n == 2 for _, n in pools), pools


# Runs a `perception` command in-process, then reports the OpenMP wait policy the process set
# for torch, and whether torch was loaded before it was set (it must not be: libgomp reads the
# variable once, as it loads).
_OPENMP_PROBE = """
import json, os, sys
from app.cli import main
main(json.loads(sys.argv[1]))
print(json.dumps([os.environ.get("OMP_WAIT_POLICY"), "torch" in sys.modules]))
"""


def _openmp_policy(argv: list[str], **env: str) -> tuple[str | None, bool]:
    # The suite sets the policy for itself (tests/conftest.py): the probe starts without it.
    policy, torch_loaded = _probe(_OPENMP_PROBE, argv, (OPENMP_WAIT_VARIABLE,), env)
    return policy, torch_loaded


def test_a_command_lets_idle_openmp_threads_sleep(tmp_path: Path) -> None:
    assert _openmp_policy(["config", "show"]) == ("PASSIVE", False)
    # The user's policy stands; training, which has the machine to itself, sets none.
    assert _openmp_policy(["config", "show"], OMP_WAIT_POLICY="ACTIVE")[0] == "ACTIVE"
    train = ["train", str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "out")]
    assert _openmp_policy(train)[0] is None


def test_openmp_threads_are_left_as_they_are_once_torch_has_loaded(monkeypatch) -> None:
    from app.threads import let_openmp_threads_sleep

    monkeypatch.delenv(OPENMP_WAIT_VARIABLE, raising=False)
    monkeypatch.setitem(sys.modules, "torch", sys.modules.get("torch") or object())
    assert not let_openmp_threads_sleep()
    assert OPENMP_WAIT_VARIABLE not in os.environ
    monkeypatch.delitem(sys.modules, "torch")
    assert let_openmp_threads_sleep()
    assert os.environ[OPENMP_WAIT_VARIABLE] == "PASSIVE"
