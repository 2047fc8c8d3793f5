"""Drives through the commands: replay of an MCAP drive, and record <- play over real sockets."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mcap.reader import make_reader

from app.cli import main
from app.common import STOP_SIGNALS
from perception.io.transport import Publisher
from perception.msgs.jsonl import read_jsonl
from perception.msgs.types import DetectionList, GnssFix, Header
from replay.datasets.kitti_object import KittiObjectFolder
from replay.drive import DriveReader, DriveWriter
from tests.replay.test_drive_limits import ROOMY, big_frame

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def kitti_drive(tmp_path_factory: pytest.TempPathFactory, kitti_dir: Path) -> Path:
    path = tmp_path_factory.mktemp("drive") / "kitti.mcap"
    with DriveWriter(path) as writer:
        for msg in KittiObjectFolder(kitti_dir).messages():
            writer.write(msg, msg.header.stamp_ns)
    return path


def _key(dls: list[DetectionList]) -> list[list[tuple[str, float]]]:
    return [[(d.label, round(d.center[0], 4)) for d in dl.detections] for dl in dls]


def test_replay_of_a_drive_equals_replay_of_the_folder(
    kitti_drive: Path, kitti_dir: Path, yolox_path: Path, tmp_path: Path
) -> None:
    common = ["--model", str(yolox_path), "--quiet"]
    assert (
        main(
            ["replay", "kitti-object", str(kitti_dir), "--out", str(tmp_path / "a.jsonl"), *common]
        )
        == 0
    )
    assert main(["replay", str(kitti_drive), "--out", str(tmp_path / "b.jsonl"), *common]) == 0
    folder_run = list(read_jsonl(tmp_path / "a.jsonl"))
    drive_run = list(read_jsonl(tmp_path / "b.jsonl"))
    assert len(drive_run) == 8
    assert _key(drive_run) == _key(folder_run)
    # Detections into an MCAP drive: one DetectionList per sweep, readable back, with the
    # node's Diagnostics beside them.
    assert main(["replay", str(kitti_drive), "--out", str(tmp_path / "d.mcap"), *common]) == 0
    back = [r.message for r in DriveReader(tmp_path / "d.mcap").messages(["detections"])]
    assert len(back) == 8 and all(isinstance(m, DetectionList) for m in back)
    assert DriveReader(tmp_path / "d.mcap").topics()["diagnostics"] >= 1


def test_replay_rejects_a_bad_output_suffix(capsys, kitti_drive: Path, tmp_path: Path) -> None:
    assert main(["replay", str(kitti_drive), "--out", str(tmp_path / "x.txt")]) == 2
    assert "must end in .jsonl or .mcap" in capsys.readouterr().err


CLI = [sys.executable, "-m", "app.cli"]


def _start_recorder(topics: list[str], out: Path, endpoint: str) -> subprocess.Popen[str]:
    recorder = subprocess.Popen(
        [*CLI, "record", *topics, "--out", str(out), "--endpoint", endpoint],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    time.sleep(1.0)  # let it connect before the player starts
    return recorder


def _play_at_full_speed(drive: Path, endpoint: str) -> None:
    player = subprocess.run(
        [*CLI, "play", str(drive), "--endpoint", endpoint, "--speed", "0", "--wait", "1.5"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert player.returncode == 0, player.stdout + player.stderr


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGHUP])
def test_record_what_play_publishes(kitti_drive: Path, tmp_path: Path, signum: int) -> None:
    """SIGHUP (a closed terminal, a dropped ssh session) killed the recorder with its drive
    unfinished: it now stops it as SIGINT does."""
    endpoint = f"ipc://{tmp_path}/sensors"
    out = tmp_path / "recorded.mcap"
    recorder = _start_recorder(["lidar/top", "camera/front", "rig"], out, endpoint)
    _play_at_full_speed(kitti_drive, endpoint)
    time.sleep(1.0)
    recorder.send_signal(signum)
    log, _ = recorder.communicate(timeout=30)
    assert recorder.returncode == 0, log
    assert "24 received, 24 written, 0 dropped" in log
    assert DriveReader(out).topics() == {"lidar/top": 8, "camera/front": 8, "rig": 8}
    with out.open("rb") as f:  # finished: its summary written, as any MCAP reader needs
        assert make_reader(f).get_summary() is not None


def test_import_then_replay_many(capsys, kitti_dir: Path, yolox_path: Path, tmp_path: Path):
    drive = tmp_path / "kitti.mcap"
    assert main(["import", "kitti-object", str(kitti_dir), "--out", str(drive)]) == 0
    assert "camera/front 8" in capsys.readouterr().out
    assert DriveReader(drive).topics() == {"camera/front": 8, "lidar/top": 8, "rig": 8}
    out_dir = tmp_path / "out"
    code = main(
        [
            "replay",
            str(drive),
            str(kitti_dir),
            "--out-dir",
            str(out_dir),
            "--model",
            str(yolox_path),
            "--quiet",
        ]
    )
    assert code == 0
    runs = sorted(out_dir.glob("*.jsonl"))
    assert len(runs) == 2
    first, second = (list(read_jsonl(p)) for p in runs)
    assert _key(first) == _key(second)


def test_import_missing_folder(capsys, tmp_path: Path) -> None:
    code = main(["import", "kitti-raw", str(tmp_path / "nope"), "--out", str(tmp_path / "x.mcap")])
    assert code == 2
    assert "nope" in capsys.readouterr().err


def test_killed_recorder_leaves_a_readable_drive(kitti_drive: Path, tmp_path: Path) -> None:
    endpoint = f"ipc://{tmp_path}/sensors"
    out = tmp_path / "killed.mcap"
    recorder = _start_recorder(["lidar/top", "camera/front"], out, endpoint)
    _play_at_full_speed(kitti_drive, endpoint)
    time.sleep(1.5)  # let the writer put the frames on disk
    recorder.kill()
    recorder.communicate(timeout=30)
    reader = DriveReader(out)
    assert reader.truncated
    counts = reader.topics()
    # Everything up to the last complete chunk is there; nothing is invented.
    assert 0 < sum(counts.values()) <= 16
    assert all(r.message.header.stream in ("lidar/top", "camera/front") for r in reader.messages())


def _endpoints_config(tmp_path: Path) -> tuple[Path, str, str]:
    sensors, detections = f"ipc://{tmp_path}/sensors", f"ipc://{tmp_path}/detections"
    config = tmp_path / "node.yaml"
    config.write_text(
        f"inputs: {{endpoints: ['{sensors}']}}\noutputs: {{endpoint: '{detections}'}}\n"
    )
    return config, sensors, detections


def test_record_and_play_put_each_topic_where_it_is_published(
    kitti_drive: Path, yolox_path: Path, tmp_path: Path
) -> None:
    """A drive of sensor data and the node's detections: `play` publishes the sensor topics on
    the sensors endpoint and the detections on the detections endpoint; `record` subscribes
    each where it is published. Neither is told an endpoint: both come from the config."""
    detections = tmp_path / "detections.mcap"
    assert main(["replay", str(kitti_drive), "--out", str(detections), "--model",
                 str(yolox_path), "--quiet"]) == 0  # fmt: skip
    mixed = tmp_path / "mixed.mcap"
    with DriveWriter(mixed) as writer:
        for reader in (DriveReader(kitti_drive), DriveReader(detections)):
            for rec in reader.messages():
                writer.write(rec.message, rec.log_time_ns, rec.topic)
    config, sensors, outputs = _endpoints_config(tmp_path)
    out = tmp_path / "recorded.mcap"
    # Nothing publishes gnss (KITTI object frames carry none): recorded as nothing, and said.
    topics = ["lidar/top", "camera/front", "rig", "gnss", "detections", "tracks", "diagnostics"]
    recorder = subprocess.Popen(
        [*CLI, "record", *topics, "--out", str(out), "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    time.sleep(1.0)
    player = subprocess.run(
        [*CLI, "play", str(mixed), "--config", str(config), "--speed", "0", "--wait", "1.5"],
        check=False, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert player.returncode == 0, player.stdout + player.stderr
    assert (
        f"camera/front, lidar/top, rig on {sensors}; detections, diagnostics, tracks on {outputs}"
        in player.stdout
    )
    time.sleep(1.0)
    recorder.send_signal(signal.SIGINT)
    log, _ = recorder.communicate(timeout=30)
    assert recorder.returncode == 0, log
    assert (
        f"lidar/top, camera/front, rig, gnss at {sensors}; detections, tracks, diagnostics at "
        f"{outputs}" in log
    )
    diagnostics = DriveReader(detections).topics()["diagnostics"]
    assert (
        "perception record: by topic: lidar/top 8, camera/front 8, rig 8, gnss 0, detections 8, "
        f"tracks 8, diagnostics {diagnostics}\n" in log
    )
    assert (
        "perception record: nothing decodable arrived on gnss; is it published under another name?"
    ) in log
    assert DriveReader(out).topics() == {"lidar/top": 8, "camera/front": 8, "rig": 8,
                                         "detections": 8, "tracks": 8,
                                         "diagnostics": diagnostics}  # fmt: skip


def test_record_overwrite_replaces_the_drive_when_finished(
    kitti_drive: Path, tmp_path: Path
) -> None:
    config, _, _ = _endpoints_config(tmp_path)
    out = tmp_path / "drive.mcap"
    out.write_bytes(b"the previous recording")
    recorder = subprocess.Popen(
        [*CLI, "record", "lidar/top", "--out", str(out), "--overwrite", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    time.sleep(1.0)
    player = subprocess.run(
        [*CLI, "play", str(kitti_drive), "--config", str(config), "--speed", "0", "--wait", "1.5"],
        check=False, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert player.returncode == 0, player.stderr
    time.sleep(0.5)
    assert out.read_bytes() == b"the previous recording"  # until the recording is finished
    recorder.send_signal(signal.SIGINT)
    log, _ = recorder.communicate(timeout=30)
    assert recorder.returncode == 0, log
    assert DriveReader(out).topics() == {"lidar/top": 8}
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_record_and_play_a_camera_above_the_default_limits(tmp_path: Path) -> None:
    """A node configured for a 12 MP camera (`limits: {max_image_pixels: ...}`): `record` with
    its config counted every frame undecodable (it decoded with the default limits), `echo`
    printed "undecodable", and `play` of a drive holding such frames refused to send them. Each
    now holds to the limits of the config or of the drive."""
    drive = tmp_path / "big.mcap"
    with DriveWriter(drive, limits=ROOMY) as writer:
        for seq in range(3):
            writer.write(big_frame(seq), seq * 1_000_000)
    sensors = f"ipc://{tmp_path}/sensors"
    config = tmp_path / "node.yaml"
    config.write_text(
        f"inputs: {{endpoints: ['{sensors}']}}\n"
        f"limits: {{max_image_pixels: {ROOMY.max_image_pixels}}}\n"
    )
    out = tmp_path / "recorded.mcap"
    recorder = subprocess.Popen(
        [*CLI, "record", "camera/front", "--out", str(out), "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    echo = subprocess.Popen(
        [*CLI, "echo", "camera/front", "--count", "3", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    time.sleep(1.0)
    _play_at_full_speed(drive, sensors)
    time.sleep(1.0)
    echoed, _ = echo.communicate(timeout=30)
    assert echo.returncode == 0, echoed
    assert "undecodable" not in echoed
    assert [line.split()[1] for line in echoed.splitlines()] == ["seq=0", "seq=1", "seq=2"]
    recorder.send_signal(signal.SIGINT)
    log, _ = recorder.communicate(timeout=30)
    assert recorder.returncode == 0, log
    assert "3 received, 3 written, 0 dropped (queue full or left at the stop), 0 undecodable" in log
    reader = DriveReader(out)
    assert reader.limits.max_image_pixels == ROOMY.max_image_pixels
    assert [r.message.header.seq for r in reader.messages()] == [0, 1, 2]


@pytest.mark.parametrize(
    ("loop", "signum", "code"),
    [
        (False, signal.SIGINT, 130),
        (False, signal.SIGTERM, 143),
        (False, signal.SIGHUP, 129),
        (True, signal.SIGINT, 0),
    ],
)
def test_play_cut_short_by_a_signal_says_so_in_its_exit_code(
    kitti_drive: Path, tmp_path: Path, loop: bool, signum: int, code: int
) -> None:
    """A Ctrl-C'd play exited 0, as if the whole drive had been published; with --loop a
    signal is how play stops."""
    argv = [*CLI, "play", str(kitti_drive), "--endpoint", f"ipc://{tmp_path}/p", "--wait", "0"]
    player = subprocess.Popen(
        [*argv, "--speed", "0.1", *(["--loop"] if loop else [])],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(2.0)
    player.send_signal(signum)
    out, err = player.communicate(timeout=30)
    assert player.returncode == code, out + err
    assert out.startswith("perception play: "), out
    word = STOP_SIGNALS[signum]
    said = f"perception play: {word} before the end of the pass\n"
    assert err.endswith(said) if code else said not in err, err


def test_record_over_a_drive_whose_new_file_is_deleted_keeps_the_old_one(
    kitti_drive: Path, tmp_path: Path
) -> None:
    """`record --overwrite` writes beside the drive it replaces. That file deleted mid-way, the
    recorder wrote on into it, then failed to put it in place with exit 2 and no summary. It
    now stops by itself: its summary, one error line, exit 1, and the old drive kept."""
    out = tmp_path / "d.mcap"
    out.write_bytes(kitti_drive.read_bytes())
    endpoint = f"ipc://{tmp_path}/sensors"
    recorder = subprocess.Popen(
        [*CLI, "record", "gnss", "--out", str(out), "--endpoint", endpoint, "--overwrite"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    with Publisher(endpoint, bind=True) as pub:
        deadline = time.monotonic() + 30
        while not (parts := list(tmp_path.glob(".d.*.mcap"))) and time.monotonic() < deadline:
            time.sleep(0.05)
        (part,) = parts
        time.sleep(1.0)  # subscribed
        for seq in range(3):
            pub.send(GnssFix(Header("gnss", seq, 1_000 + seq, "gnss"), 49.0, 8.4, 100.0))
        time.sleep(1.0)  # flushed into the new file
        part.unlink()
        out_text, err = recorder.communicate(timeout=30)
    assert recorder.returncode == 1, out_text + err
    assert "perception record: 3 received, 0 written" in out_text, out_text
    assert err == (
        f"perception record: error: {part}: was deleted while being written (the file or its "
        "folder): the 3 message(s) written are lost with it\n"
    )
    assert out.read_bytes() == kitti_drive.read_bytes()
