"""`perception bench` used hostilely: an --out folder holding what it reads, signals at every
stage of the run (SIGTERM too, and after the node has stopped, while the report is written),
and the bench itself killed. Real files, real processes and sockets."""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil  # type: ignore[import-untyped]
import pytest
import yaml

from app.bench import BenchInterruptedError
from app.commands.bench import _bench_drive
from app.common import Stages
from tests.app.one_line import fails

REPO = Path(__file__).resolve().parents[2]
SYNTH_MODEL = REPO / "engines" / "models" / "synth_detector.onnx"


@pytest.fixture
def drive(synth_drive: Callable[[int, float], Path], tmp_path: Path) -> Path:
    """A 2 s synthetic drive of this test's own (with its ground truth)."""
    source = synth_drive(0, 2.0)
    path = tmp_path / "drive" / "synth.mcap"
    path.parent.mkdir()
    shutil.copy(source, path)
    shutil.copy(f"{source}.gt.jsonl", f"{path}.gt.jsonl")
    return path


def _kitti_copy(kitti_dir: Path, folder: Path) -> Path:
    """A KITTI object folder of links to the real one's data folders (the real one is never
    written into, even by a bench that fails this test)."""
    folder.mkdir()
    for sub in ("image_2", "calib", "label_2", "velodyne"):
        (folder / sub).symlink_to(kitti_dir / sub)
    return folder


def test_an_out_folder_holding_what_the_bench_reads_is_refused(
    capsys: pytest.CaptureFixture[str], drive: Path, kitti_dir: Path, tmp_path: Path
) -> None:
    """`--config node.yaml --out .` replaced the user's config by the bench's node config; a
    drive named bench.json was replaced by the report; a KITTI object folder (or its image
    folder) as --out got the report among its data. Refused before anything runs."""
    folder = tmp_path / "mine"
    folder.mkdir()
    config = folder / "node.yaml"
    text = f"# mine\ninputs: {{lidar_topic: lidar}}\ncamera_model: {{path: {SYNTH_MODEL}}}\n"
    config.write_text(text)
    bench = ["bench", "--duration", "1", "--quiet"]
    err = fails(capsys, *bench, str(drive), "--config", str(config), "--out", str(folder))
    assert err == (
        f"perception bench: error: --out {folder}: the bench writes node.yaml there, which is "
        f"--config ({config}); give another --out folder"
    )
    assert config.read_text() == text
    # Through a link to the folder too.
    link = tmp_path / "link"
    link.symlink_to(folder)
    err = fails(capsys, *bench, str(drive), "--config", str(config), "--out", str(link))
    assert f"the bench writes node.yaml there, which is --config ({config})" in err

    named = folder / "bench.json"
    shutil.copy(drive, named)
    model = ["--model", str(SYNTH_MODEL)]
    err = fails(capsys, *bench, str(named), *model, "--out", str(folder))
    assert err == (
        f"perception bench: error: --out {folder}: the bench writes bench.json there, which is "
        f"the drive ({named}); give another --out folder"
    )
    assert named.read_bytes() == drive.read_bytes()

    kitti = _kitti_copy(kitti_dir, tmp_path / "kitti")
    for out in (kitti, kitti / "image_2"):
        err = fails(capsys, *bench, str(kitti), *model, "--out", str(out))
        assert err == (
            f"perception bench: error: {out}: is an input folder; --out must be another folder, "
            "not one the frames are read from"
        )
    assert sorted(p.name for p in kitti.iterdir()) == ["calib", "image_2", "label_2", "velodyne"]


def test_a_ctrl_c_while_the_drive_is_generated_or_read_stops_there(
    monkeypatch: pytest.MonkeyPatch, drive: Path, tmp_path: Path
) -> None:
    """A Ctrl-C while the default drive was generated (10 s of it) or a drive read went
    unnoticed until all of it was done and a node had been started for nothing."""
    stop = threading.Event()
    stop.set()
    monkeypatch.chdir(tmp_path)
    with Stages("sweep", True) as stages, pytest.raises(BenchInterruptedError):
        _bench_drive(None, 10, stages, stop)
    # The generation stopped at its first frame, its partial files removed.
    assert list((tmp_path / "perception-demo").iterdir()) == []
    with Stages("sweep", True) as stages, pytest.raises(BenchInterruptedError):
        _bench_drive(str(drive), 10, stages, stop)


# -- as a process ------------------------------------------------------------------------------


def _start(drive: Path, out: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "app.cli", "bench", str(drive), "--duration", "2", "--rate", "5",
         "--out", str(out), "--quiet"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip


def _running(
    drive: Path, out: Path, reaped: list[psutil.Process]
) -> tuple[subprocess.Popen[str], psutil.Process]:
    """A bench started (`_start`) and its node child, both to be reaped at the test's end."""
    bench = _start(drive, out)
    reaped.append(psutil.Process(bench.pid))
    node = _node_of(bench)
    reaped.append(node)
    return bench, node


def _node_of(bench: subprocess.Popen[str], timeout_s: float = 60.0) -> psutil.Process:
    """The bench's node child, once it is started."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert bench.poll() is None, bench.communicate()
        children = psutil.Process(bench.pid).children()
        if children:
            return children[0]
        time.sleep(0.02)
    raise AssertionError("the bench started no node")


@pytest.fixture
def reaped() -> Iterator[list[psutil.Process]]:
    """Processes the test started, killed at its end whatever happened (a failing test must
    not leave a node running)."""
    started: list[psutil.Process] = []
    yield started
    for proc in started:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()


def _old_report(out: Path) -> dict[str, str]:
    out.mkdir()
    files = {"bench.json": "{}\n", "bench.md": "old\n", "node.yaml": "old: 1\n", "node.log": "o\n"}
    for name, text in files.items():
        (out / name).write_text(text)
    return files


def _contents(out: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in out.iterdir()}


@pytest.mark.slow
def test_sigterm_ends_the_bench_with_143_and_stops_its_node(
    drive: Path, tmp_path: Path, reaped: list[psutil.Process]
) -> None:
    """SIGTERM (systemd, `timeout`, a CI job cancelled) ended the bench with SIGINT's 130,
    "interrupted"."""
    out = tmp_path / "out"
    old = _old_report(out)
    bench, node = _running(drive, out, reaped)
    time.sleep(1.0)
    bench.send_signal(signal.SIGTERM)
    _, err = bench.communicate(timeout=60)
    assert bench.returncode == 143, err
    assert err == "perception bench: terminated; the node is stopped\n"
    assert not node.is_running()
    assert _contents(out) == old


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_after_the_node_stopped_writes_no_report(
    drive: Path, tmp_path: Path, reaped: list[psutil.Process], sig: signal.Signals, code: int
) -> None:
    """A signal once the node had stopped (the report being written, a second or two) was
    ignored: the bench wrote its report and exited 0. And the node's files of a run were
    renamed before its report was written, so a failure then left them beside the previous
    run's report. Now nothing of the run replaces the previous report's files."""
    out = tmp_path / "out"
    old = _old_report(out)
    bench, node = _running(drive, out, reaped)
    node.wait(timeout=60)  # the run is over: the bench stopped its node
    bench.send_signal(sig)
    _, err = bench.communicate(timeout=60)
    assert bench.returncode == code, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert _contents(out) == old


@pytest.mark.slow
def test_a_killed_bench_takes_its_node_with_it(
    drive: Path, tmp_path: Path, reaped: list[psutil.Process]
) -> None:
    """`kill -9` of the bench (the OOM killer, a cancelled CI job) left its node running for
    ever, an orphan holding a core and its sockets."""
    bench, node = _running(drive, tmp_path / "out", reaped)
    time.sleep(1.0)
    # The bench's socket folder, which a killed bench cannot remove: this test does.
    config = yaml.safe_load(Path(node.cmdline()[-1]).read_text())
    sockets = Path(config["inputs"]["endpoints"][0].removeprefix("ipc://")).parent
    assert sockets.name.startswith("perception-bench-")
    bench.kill()
    bench.communicate(timeout=10)
    # The node is sent SIGTERM by the kernel and stops cleanly.
    try:
        code = node.wait(timeout=15)
    except psutil.TimeoutExpired:
        raise AssertionError("the node outlived its bench") from None
    assert code in (0, 143, None), code  # (None: not our child, its code unknown)
    shutil.rmtree(sockets)


def test_a_node_slower_to_start_than_ready_timeout_is_one_line(
    capsys: pytest.CaptureFixture[str], drive: Path, tmp_path: Path
) -> None:
    """The bench waited a fixed 120 s for its node: a first TensorRT build (minutes) failed it
    with no way to wait longer. --ready-timeout sets the wait, and its end says what to do."""
    out = tmp_path / "out"
    err = fails(
        capsys, "bench", str(drive), "--ready-timeout", "0.01", "--out", str(out), "--quiet"
    )
    assert err.startswith(
        "perception bench: error: the node was not ready after 0.01 s (a first TensorRT build "
        "takes minutes: run `perception engines build` first, or give --ready-timeout): "
    ), err
    assert not out.exists()
    assert fails(capsys, "bench", str(drive), "--ready-timeout", "0", "--out", str(out)).endswith(
        "argument --ready-timeout: 0 is not > 0"
    )
