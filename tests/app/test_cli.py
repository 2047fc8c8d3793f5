"""Bad input to the commands: one clear line naming the path and the problem, exit code 2."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from app.cli import main


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    err = capsys.readouterr().err.strip()
    return code, err


def test_missing_kitti_folder(capsys, tmp_path: Path, yolox_path: Path) -> None:
    code, err = _run(
        capsys,
        "replay",
        "kitti-object",
        str(tmp_path / "nope"),
        "--out",
        str(tmp_path / "o.jsonl"),
        "--model",
        str(yolox_path),
        "--quiet",
    )
    assert code == 2
    assert (
        err == f"perception replay: error: {tmp_path / 'nope'}: KITTI object folder does not exist"
    )


def test_missing_model(capsys, tmp_path: Path, kitti_dir: Path) -> None:
    model = tmp_path / "missing.onnx"
    code, err = _run(
        capsys,
        "replay",
        "kitti-object",
        str(kitti_dir),
        "--out",
        str(tmp_path / "o.jsonl"),
        "--model",
        str(model),
        "--quiet",
    )
    assert code == 2
    assert len(err.splitlines()) == 1 and str(model) in err


def test_not_a_model(capsys, tmp_path: Path, kitti_dir: Path) -> None:
    model = tmp_path / "junk.onnx"
    model.write_bytes(b"this is not an onnx file")
    code, err = _run(
        capsys,
        "replay",
        "kitti-object",
        str(kitti_dir),
        "--out",
        str(tmp_path / "o.jsonl"),
        "--model",
        str(model),
        "--quiet",
    )
    assert code == 2
    assert len(err.splitlines()) == 1 and str(model) in err


def test_broken_calib_file(capsys, tmp_path: Path, kitti_dir: Path, yolox_path: Path) -> None:
    shutil.copytree(kitti_dir, tmp_path / "k")
    calib = tmp_path / "k" / "calib" / "000000.txt"
    calib.write_text("P2: 1 2 3\n")
    code, err = _run(
        capsys,
        "replay",
        "kitti-object",
        str(tmp_path / "k"),
        "--out",
        str(tmp_path / "o.jsonl"),
        "--model",
        str(yolox_path),
        "--quiet",
    )
    assert code == 2
    assert len(err.splitlines()) == 1 and str(calib) in err


def test_missing_config(capsys, tmp_path: Path) -> None:
    code, err = _run(capsys, "run", "--config", str(tmp_path / "none.yaml"))
    assert code == 2
    assert "none.yaml: cannot read config" in err


_INPROC = (
    "inproc:// reaches only the process itself: no other process could send to it or receive "
    "from it; use ipc:// or tcp://"
)


def test_run_refuses_inproc_endpoints_before_the_model_loads(capsys, tmp_path: Path) -> None:
    """inproc:// is valid for a node core inside a test process; a node process on it would
    hear nothing and be heard by no one."""
    config = tmp_path / "node.yaml"
    config.write_text('inputs: {endpoints: ["inproc://sensors"]}\n')
    code, err = _run(capsys, "run", "--config", str(config))
    assert code == 2
    assert err == f"perception run: error: inproc://sensors: {_INPROC}"


@pytest.mark.parametrize(
    ("argv", "where"),
    [
        (
            ["play", "kitti-object", "{kitti}", "--endpoint", "inproc://x", "--wait", "0"],
            "--endpoint ",
        ),
        (["play", "{drive}", "--config", "{config}", "--wait", "0"], ""),
        (["record", "--out", "{tmp}/r.mcap", "--endpoint", "inproc://x"], "--endpoint "),
        (["record", "--out", "{tmp}/r.mcap", "--config", "{config}", "gnss"], ""),
        (["echo", "detections", "--endpoint", "inproc://x"], "--endpoint "),
        (["view", "--config", "{config}", "--port", "0"], ""),
    ],
    ids=["play-kitti", "play-drive", "record-endpoint", "record-config", "echo", "view"],
)
def test_the_other_commands_refuse_inproc_endpoints_too(
    capsys, tmp_path: Path, kitti_dir: Path, argv: list[str], where: str
) -> None:
    """`play --endpoint inproc://x` said it had published every frame, to no one; `record` and
    `echo` waited on an endpoint nothing can publish on."""
    from perception.msgs.types import GnssFix, Header
    from replay.drive import DriveWriter

    config = tmp_path / "node.yaml"
    config.write_text('inputs: {endpoints: ["inproc://x"]}\noutputs: {endpoint: "inproc://y"}\n')
    drive = tmp_path / "d.mcap"
    with DriveWriter(drive) as writer:
        writer.write(GnssFix(Header("gnss", 0, 1, "gnss"), 49.0, 8.4, 100.0), 1)
    names = {
        "kitti": str(kitti_dir),
        "drive": str(drive),
        "config": str(config),
        "tmp": str(tmp_path),
    }
    code, err = _run(capsys, *(a.format(**names) for a in argv))
    assert code == 2
    assert err == f"perception {argv[0]}: error: {where}inproc://x: {_INPROC}"
    assert not (tmp_path / "r.mcap").exists()


def test_replay_writes_one_line_per_sweep(
    capsys, tmp_path: Path, kitti_dir: Path, yolox_path: Path
):
    from perception.msgs.jsonl import read_jsonl

    out = tmp_path / "d.jsonl"
    code, _ = _run(
        capsys,
        "replay",
        "kitti-object",
        str(kitti_dir),
        "--out",
        str(out),
        "--model",
        str(yolox_path),
        "--quiet",
    )
    assert code == 0
    lists = list(read_jsonl(out))
    assert [d.header.seq for d in lists] == list(range(8))
    assert any(d.label == "Car" for dl in lists for d in dl.detections)


def test_models_fetch_from_a_local_source(capsys, tmp_path: Path, data_dir: Path) -> None:
    code = main(
        [
            "models",
            "fetch",
            "yolox_nano_coco_416",
            "--cache-dir",
            str(tmp_path),
            "--source-dir",
            str(data_dir / "camera_detector"),
            "--quiet",
        ]
    )
    assert code == 0
    assert (tmp_path / "yolox_nano_coco_416.onnx").is_file()
    assert "sha256 verified" in capsys.readouterr().out


def test_models_fetch_unknown_name(capsys, tmp_path: Path) -> None:
    code, err = _run(capsys, "models", "fetch", "nope", "--cache-dir", str(tmp_path), "--quiet")
    assert code == 2 and "nope" in err


def test_engines_build_without_tensorrt_says_so(capsys, tmp_path: Path, data_dir: Path) -> None:
    from engines.tensorrt_backend import tensorrt_available

    if tensorrt_available():
        return  # the real build is covered by the tensorrt-marked tests
    code, err = _run(
        capsys,
        "engines",
        "build",
        str(data_dir / "camera_detector" / "yolox_nano_coco_416.onnx"),
        "--cache-dir",
        str(tmp_path),
        "--quiet",
    )
    assert code == 2
    assert "building engines needs TensorRT" in err and len(err.splitlines()) == 1


def test_engines_list_empty_cache(capsys, tmp_path: Path) -> None:
    assert main(["engines", "list", "--cache-dir", str(tmp_path)]) == 0
    assert "no cached engines" in capsys.readouterr().out


def test_an_interrupt_while_the_command_line_is_imported_is_one_line() -> None:
    """A Ctrl-C in the first few tenths of a second of any command landed in an import and
    printed a traceback of it. Here the interrupt is made to land in importing app.cli."""
    script = """
import sys

class Interrupting:
    def find_spec(self, name, path=None, target=None):
        if name == "app.cli":
            raise KeyboardInterrupt
        return None

sys.meta_path.insert(0, Interrupting())
from app.launch import main
sys.exit(main())
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert (done.returncode, done.stderr) == (130, "perception: interrupted\n")


@pytest.mark.parametrize(
    "argv",
    [
        ["echo", "gnss", "--endpoint", "tcp://no-such-host.invalid:5555"],
        ["record", "--out", "{tmp}/r.mcap", "--endpoint", "tcp://no-such-host.invalid:5555"],
        ["view", "--config", "{config}", "--port", "0"],
    ],
    ids=["echo", "record", "view"],
)
def test_an_endpoint_whose_host_does_not_resolve_is_said(tmp_path: Path, argv: list[str]) -> None:
    """libzmq waits on such a host in silence: `echo`, `record` and `view` of a misspelt host
    waited without a word. They say so at once, and go on (a name server may come up later)."""
    config = tmp_path / "node.yaml"
    config.write_text(
        'inputs: {endpoints: ["tcp://no-such-host.invalid:5555"]}\n'
        'outputs: {endpoint: "tcp://127.0.0.1:5556"}\n'
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", *(a.format(tmp=tmp_path, config=config) for a in argv)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert proc.poll() is None, "it goes on waiting for the host"
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
    # Between them, the resolver's own words ("Name or service not known" with glibc).
    assert line.startswith(
        f"perception {argv[0]}: warning: tcp://no-such-host.invalid:5555: host "
        "'no-such-host.invalid' does not resolve ("
    ), line
    assert line.endswith("); nothing can arrive from it until it resolves\n"), line
