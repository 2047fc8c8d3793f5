"""The camera model a command runs (one rule for replay, run and bench), the offline error, and
`perception models list`."""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from app.cli import main
from app.models import SYNTH_CAMERA_MODEL, camera_model_file, choose_camera_model
from engines import registry
from engines.errors import ModelError
from engines.registry import MODELS
from perception.config import CameraModelConfig, NodeConfig
from perception.msgs.jsonl import read_jsonl
from replay.synth.world import generate_drive
from tests.app.one_line import fails


def test_the_rule(tmp_path: Path, yolox_path: Path) -> None:
    base = NodeConfig()
    given = NodeConfig(camera_model=CameraModelConfig("yolo_fastestv2_coco_352"))

    def chosen(config: NodeConfig, model: str | None, *, config_given: bool, synthetic: bool):
        return choose_camera_model(
            config, model, config_given=config_given, synthetic=synthetic
        ).camera_model

    # --model wins (a file as an absolute path, a registered name as it is).
    assert chosen(base, str(yolox_path), config_given=True, synthetic=True).path == str(
        yolox_path.resolve()
    )
    assert chosen(base, "yolo_fastestv2_coco_352", config_given=False, synthetic=True).path == (
        "yolo_fastestv2_coco_352"
    )
    # A config given with --config is used as written, synthetic drive or not.
    assert chosen(given, None, config_given=True, synthetic=True) == given.camera_model
    # A synthetic drive: the packaged detector trained on synthetic renders, as the demo runs it.
    assert chosen(base, None, config_given=False, synthetic=True) == SYNTH_CAMERA_MODEL
    assert Path(SYNTH_CAMERA_MODEL.path).is_file()
    # Otherwise the built-in config's registered model.
    assert chosen(base, None, config_given=False, synthetic=False).path == "yolox_nano_coco_416"


def test_model_files(tmp_path: Path, yolox_path: Path, data_dir: Path) -> None:
    config = choose_camera_model(NodeConfig(), str(yolox_path), config_given=False, synthetic=False)
    assert camera_model_file(config) == yolox_path.resolve()
    folder = choose_camera_model(NodeConfig(), str(tmp_path), config_given=False, synthetic=False)
    with pytest.raises(ModelError, match="is a folder, not a model file"):
        camera_model_file(folder)
    # A registered model already in the cache is taken from there (no network).
    cache = tmp_path / "cache"
    assert main(["models", "fetch", "yolox_nano_coco_416", "--cache-dir", str(cache),
                 "--source-dir", str(data_dir / "camera_detector"), "--quiet"]) == 0  # fmt: skip
    assert camera_model_file(NodeConfig(), cache) == cache / "yolox_nano_coco_416.onnx"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_offline_without_the_registered_model_says_how_to_fetch_it(
    tmp_path: Path, kitti_dir: Path
) -> None:
    """No --model, an empty model cache (HOME) and no way out (a proxy on a closed port): one
    line that says how to fetch the model from a local folder."""
    proxy = f"http://127.0.0.1:{_closed_port()}"
    env = {k: v for k, v in os.environ.items() if k != "XDG_CACHE_HOME"}  # the suite's own
    env.update(HOME=str(tmp_path), https_proxy=proxy, HTTPS_PROXY=proxy)
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "replay", "kitti-object", str(kitti_dir), "--out",
         str(tmp_path / "d.jsonl"), "--quiet"],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1
    assert done.stderr.startswith(
        f"perception replay: error: camera model yolox_nano_coco_416: yolox_nano_coco_416.onnx: "
        f"not in the model cache {tmp_path}/.cache/perception-node/models, and the download from "
    )
    assert done.stderr.rstrip().endswith(
        "with `perception models fetch yolox_nano_coco_416 --source-dir DIR`; "
        "or give --model FILE.onnx"
    )
    assert done.stderr.count("--source-dir") == 1, "the way to fetch it is said once"
    assert not (tmp_path / "d.jsonl").exists()


def test_replay_of_a_synthetic_drive_runs_the_synthetic_detector(capsys, tmp_path: Path) -> None:
    """As bench and demo do: without --model, no download is needed."""
    drive = tmp_path / "synth.mcap"
    generate_drive(drive, seed=0, seconds=0.5)
    out = tmp_path / "d.jsonl"
    assert main(["replay", str(drive), "--out", str(out), "--quiet"]) == 0
    lists = list(read_jsonl(out))
    assert len(lists) == 5
    assert any(d.label == "Car" for dl in lists for d in dl.detections)


def test_models_list(capsys, tmp_path: Path, data_dir: Path) -> None:
    cache = tmp_path / "models"
    assert main(["models", "list", "--cache-dir", str(cache)]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines()[2:] if line.strip()}
    for name, info in MODELS.items():
        line = lines[name]
        assert info.filename in line and info.sha256[:12] in line
        assert f"{info.size_bytes / 1e6:.1f}" in line and " no " in line
        assert str(cache / info.filename) in line
    assert "packaged" in lines["synth_detector"] and "fusion_engine" in lines
    assert "fetch with: perception models fetch" in out
    assert main(["models", "fetch", "yolox_nano_coco_416", "--cache-dir", str(cache),
                 "--source-dir", str(data_dir / "camera_detector"), "--quiet"]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["models", "list", "--cache-dir", str(cache)]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("yolox_nano_coco_416"))
    assert " yes " in line
    (cache / "yolox_nano_coco_416.onnx").write_bytes(b"tampered")
    assert main(["models", "list", "--cache-dir", str(cache)]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("yolox_nano"))
    assert "sha256 mismatch" in line


def test_models_fetch_offline_says_how_once(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The command appended its own offline advice to the registry's, which already gives it:
    the same `--source-dir DIR` command twice in one line."""
    info = dataclasses.replace(
        MODELS["yolox_nano_coco_416"], url=(tmp_path / "unreachable.onnx").as_uri()
    )
    monkeypatch.setitem(registry.MODELS, info.name, info)
    cache = tmp_path / "cache"
    err = fails(capsys, "models", "fetch", info.name, "--cache-dir", str(cache), "--quiet")
    assert err.count("--source-dir DIR") == 1, err
    assert err.endswith(
        f"`perception models fetch yolox_nano_coco_416 --source-dir DIR --cache-dir {cache}`"
    )


def test_a_huge_file_in_the_cache_is_not_hashed(tmp_path: Path, data_dir: Path) -> None:
    """A file of a registered model's name but not its size was hashed before it was found
    wrong: a minute per 20 GB, for `models list` and for a fetch replacing it. A sparse
    terabyte (no disk used) in a separate process, bounded in time."""
    cache = tmp_path / "models"
    cache.mkdir()
    huge = cache / "yolox_nano_coco_416.onnx"
    with huge.open("wb") as f:
        f.truncate(1 << 40)
    perception = [sys.executable, "-m", "app.cli"]
    listing = subprocess.run(
        [*perception, "models", "list", "--cache-dir", str(cache)],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    line = next(x for x in listing.stdout.splitlines() if x.startswith("yolox_nano_coco_416"))
    assert "sha256 mismatch" in line
    subprocess.run(
        [*perception, "models", "fetch", "yolox_nano_coco_416", "--cache-dir", str(cache),
         "--source-dir", str(data_dir / "camera_detector"), "--quiet"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert huge.stat().st_size == MODELS["yolox_nano_coco_416"].size_bytes
