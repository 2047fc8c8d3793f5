"""`replay` and `play` given paths a hostile (or hurried) user types: `.` and `..` as sources,
names of bytes that are not UTF-8, an --out-dir of a run that fails. One line and exit 2 for a
mistake, never a bug report; nothing left on disk by a failed run. In-process through `main`,
on the real KITTI frames."""

from __future__ import annotations

import logging
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from app.cli import main
from perception.io.transport import Publisher
from perception.msgs.types import CameraFrame, Diagnostics
from replay.drive import DriveReader, DriveWriter
from replay.output import OutputError
from replay.recorder import Recorder
from tests.app.one_line import fails as _fails
from tests.conftest import copy_kitti_frames

REPO = Path(__file__).resolve().parents[2]

#: `$(printf 'o\xff')`: Python holds a name's undecodable bytes as surrogates.
NOT_UTF8 = b"o\xff".decode("utf-8", "surrogateescape")


def test_a_kitti_folder_given_as_dot_replays(
    capsys, tmp_path: Path, kitti_dir: Path, yolox_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`replay kitti-object . --out F` from inside the folder ended in "unexpected ValueError:
    PosixPath('.') has an empty name" (exit 1, "a bug"): the ground truth beside `.` was
    looked for with `Path.with_name`."""
    monkeypatch.chdir(kitti_dir)
    out = tmp_path / "o.jsonl"
    code = main(["replay", "kitti-object", ".", "--out", str(out), "--model", str(yolox_path),
                 "--quiet"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert len(out.read_text().splitlines()) == 8


@pytest.mark.parametrize("where", [".", "image_2"])
def test_many_sources_name_dot_and_dotdot_outputs_after_the_folder(
    tmp_path: Path,
    kitti_dir: Path,
    yolox_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    where: str,
) -> None:
    """`replay . --out-dir D` failed as a bug (as above); `replay .. --out-dir D` wrote its
    detections to the hidden file `D/...jsonl`. Both are named after the folder itself."""
    monkeypatch.chdir(kitti_dir / where)
    source = "." if where == "." else ".."
    out_dir = tmp_path / "many"
    assert main(["replay", source, "--out-dir", str(out_dir), "--model", str(yolox_path),
                 "--quiet"]) == 0  # fmt: skip
    assert sorted(p.name for p in out_dir.iterdir()) == [f"{kitti_dir.name}.jsonl"]


def test_a_failed_many_source_replay_leaves_no_new_folder(
    capsys, tmp_path: Path, kitti_dir: Path, yolox_path: Path
) -> None:
    """--out-dir was created before the run could fail (a folder given twice, whose outputs
    would collide), and the failed run left it behind, empty."""
    out_dir = tmp_path / "new" / "many"
    err = _fails(capsys, "replay", "kitti-object", str(kitti_dir), str(kitti_dir), "--out-dir",
                 str(out_dir), "--model", str(yolox_path), "--quiet")  # fmt: skip
    assert err == (
        f"perception replay: error: {kitti_dir} and {kitti_dir} would both write "
        f"{out_dir / kitti_dir.name}.jsonl"
    )
    assert not (tmp_path / "new").exists()


def test_an_output_name_too_long_for_the_file_system_is_refused_before_any_replay(
    capsys, tmp_path: Path, kitti_dir: Path, yolox_path: Path
) -> None:
    """A source named so that its output `<name>.jsonl` takes over 255 bytes failed with the
    raw "[Errno 36] File name too long" (exit 1), once the sources before it were replayed."""
    long = tmp_path / ("k" * 250)
    long.symlink_to(kitti_dir)
    out_dir = tmp_path / "many"
    err = _fails(capsys, "replay", str(kitti_dir), str(long), "--out-dir", str(out_dir),
                 "--model", str(yolox_path), "--quiet")  # fmt: skip
    assert err == (
        f"perception replay: error: {out_dir / long.name}.jsonl: a name of 256 bytes, longer "
        f"than the 255 its file system takes; the output of {long} (named after it) needs a "
        "shorter one"
    )
    assert not out_dir.exists()


def test_an_output_named_with_bytes_that_are_not_utf8_is_written(
    capsysbinary, tmp_path: Path, kitti_dir: Path, yolox_path: Path
) -> None:
    """An output named with bytes that are not UTF-8 (`--out $(printf 'o\\xff').jsonl`) ended
    in "unexpected UnicodeEncodeError" (exit 1, "a bug") as its temporary file was named: the
    name's length was counted with `str.encode`."""
    out = tmp_path / f"{NOT_UTF8}.jsonl"
    code = main(["replay", "kitti-object", str(kitti_dir), "--out", str(out), "--model",
                 str(yolox_path), "--quiet"])  # fmt: skip
    said = capsysbinary.readouterr()
    assert code == 0, said.err
    # The summary names the file as it is named: its bytes as they were given.
    assert b"written to " + bytes(out) + b" (" in said.out
    assert [p.name for p in tmp_path.iterdir()] == [out.name]
    assert len(out.read_text().splitlines()) == 8


def test_play_to_an_endpoint_that_is_not_utf8_is_refused(
    capsys, tmp_path: Path, kitti_dir: Path
) -> None:
    """An endpoint of bytes that are not UTF-8 ended `play` in a UnicodeEncodeError from
    ZeroMQ's bind (exit 1, "a bug")."""
    endpoint = f"ipc://{tmp_path}/{NOT_UTF8}"
    err = _fails(capsys, "play", "kitti-object", str(kitti_dir), "--endpoint", endpoint)
    assert err == (
        f"perception play: error: --endpoint 'ipc://{tmp_path}/o\\xff': not UTF-8 text; ZeroMQ "
        "takes endpoints as UTF-8"
    )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("show", ["o.jsonl", "o.jsonl/pictures"])
def test_show_into_the_out_file_is_refused_before_the_run(
    capsys, tmp_path: Path, kitti_dir: Path, yolox_path: Path, show: str
) -> None:
    """`--out o.jsonl --show o.jsonl` (or a folder inside it): neither existed, so the whole
    replay ran and wrote o.jsonl, and only drawing the pictures failed ("is a file"), exit 2
    after all the work."""
    out = tmp_path / "o.jsonl"
    err = _fails(capsys, "replay", "kitti-object", str(kitti_dir), "--out", str(out), "--show",
                 str(tmp_path / show), "--model", str(yolox_path), "--quiet")  # fmt: skip
    assert err == (
        f"perception replay: error: {tmp_path / show}: --show names --out ({out}) or a folder "
        "inside it; the pictures need a folder of their own"
    )
    assert list(tmp_path.iterdir()) == []


def test_a_many_source_replay_where_every_source_fails_leaves_no_new_folder(
    capsys, tmp_path: Path, yolox_path: Path
) -> None:
    """Each source failing on its own (exit 1, each named) left the --out-dir made for their
    outputs behind, empty; a folder that was there before stays."""
    folder = tmp_path / "kitti"
    for sub in ("image_2", "velodyne", "calib"):
        (folder / sub).mkdir(parents=True)
    out_dir = tmp_path / "new" / "many"
    code = main(["replay", "kitti-object", str(folder), "--out-dir", str(out_dir), "--model",
                 str(yolox_path), "--quiet"])  # fmt: skip
    assert code == 1
    assert f"{folder}: failed: {folder / 'velodyne'}: no .bin scans" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()
    out_dir.mkdir(parents=True)
    assert main(["replay", str(folder), "--out-dir", str(out_dir), "--model", str(yolox_path),
                 "--quiet"]) == 1  # fmt: skip
    assert out_dir.is_dir()


def test_replay_does_not_replace_a_drive_being_recorded(
    capsys, tmp_path: Path, kitti_dir: Path, yolox_path: Path
) -> None:
    """`replay ... --out DRIVE.mcap` onto the drive a recorder was writing renamed its output
    over it at the end: the recorder went on writing a file no name led to, and lost all it
    recorded. It is refused as `record` and `import` refuse it, before the replay."""
    endpoint = f"ipc://{tmp_path}/p"
    out = tmp_path / "drive.mcap"
    with Publisher(endpoint, bind=True):
        recorder = Recorder([endpoint], ["gnss"], out)
        recorder.start()
        try:
            inode = out.stat().st_ino
            err = _fails(capsys, "replay", "kitti-object", str(kitti_dir), "--out", str(out),
                         "--model", str(yolox_path), "--quiet")  # fmt: skip
            assert err == (
                f"perception replay: error: {out}: is being written by another process (a "
                "recorder, an import); choose another file, or stop that one first"
            )
            assert out.stat().st_ino == inode
        finally:
            recorder.close()
    assert not DriveReader(out).truncated  # the recorder's drive, finished where it was


def test_show_that_fails_before_its_first_picture_leaves_no_folder(
    capsys, tmp_path: Path, kitti_dir: Path, yolox_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A drawing of `--show` that fails at its first picture (one line, exit 2) after the
    replay wrote --out left the pictures' folder made for it behind, empty. (A broken label
    file, which did this too, is now refused before the replay.)"""
    folder = copy_kitti_frames(kitti_dir, tmp_path / "kitti", ["000000"], labels=["000000"])
    label = folder / "label_2" / "000000.txt"
    label.write_text("Car 0 0 x y z\n")
    out, show = tmp_path / "o.jsonl", tmp_path / "new" / "pictures"
    argv = ["replay", "kitti-object", str(folder), "--out", str(out), "--show", str(show),
            "--model", str(yolox_path), "--quiet"]  # fmt: skip
    err = _fails(capsys, *argv)
    assert err == f"perception replay: error: {label}:1: expected 15 values, got 6"
    assert not (tmp_path / "new").exists()
    assert not out.exists()  # refused before the replay
    shutil.copy(kitti_dir / "label_2" / "000000.txt", label)

    def unwritable(path: Path, *_: object) -> None:
        raise OutputError(f"{path}: cannot write the picture (No space left on device)")

    monkeypatch.setattr("replay.show.write_picture", unwritable)
    err = _fails(capsys, *argv)
    assert err == (
        f"perception replay: error: {show / '000000.png'}: cannot write the picture (No space "
        "left on device)"
    )
    assert not (tmp_path / "new").exists()
    assert len(out.read_text().splitlines()) == 1  # the replay itself is complete


#: The synthetic drive's topics, for a replay with --config.
SYNTH_TOPICS = "inputs: {lidar_topic: lidar, gnss_topic: gnss}\n"


def _synth_replay(drive: Path, config: Path) -> list[str]:
    """The arguments of a replay of a synthetic `drive` with `config` (no --out)."""
    model = REPO / "engines" / "models" / "synth_detector.onnx"
    return ["replay", str(drive), "--config", str(config), "--model", str(model)]


def _summary(
    capsys: pytest.CaptureFixture[str], drive: Path, tmp_path: Path, more_yaml: str = ""
) -> str:
    """The summary line of a replay of the synthetic `drive` (exit 0) with its topics and
    `more_yaml` as the config."""
    config = tmp_path / "node.yaml"
    config.write_text(SYNTH_TOPICS + more_yaml)
    out = tmp_path / "out.jsonl"
    assert main([*_synth_replay(drive, config), "--out", str(out), "--quiet"]) == 0
    return capsys.readouterr().out.strip().splitlines()[-1]


def test_sweeps_the_synchroniser_dropped_are_in_the_summary(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    synth_drive: Callable[[int, float], Path],
) -> None:
    """With `sync.queue_size: 1` a replay wrote 1 DetectionList of 100 sweeps and said only
    "0 sweeps failed", exit 0: the sweeps waiting for their cameras were dropped, counted on
    diagnostics alone."""
    drive = synth_drive(0, 2.0)
    line = _summary(capsys, drive, tmp_path, "sync: {queue_size: 1}\n")
    written = int(line.split()[2])
    dropped = re.search(r", (\d+) sweeps dropped by the synchroniser \(queue full (\d+); ", line)
    assert dropped is not None, line
    assert written + int(dropped[1]) == 20 and dropped[1] == dropped[2]
    assert line.endswith("sync.queue_size (1) or queue_bytes holds fewer sweeps than wait for "
                         "their cameras))")  # fmt: skip
    # The default queue holds them: nothing dropped, nothing said.
    assert "dropped" not in _summary(capsys, drive, tmp_path)


def test_bundles_without_their_camera_or_fix_are_in_the_summary(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    synth_drive: Callable[[int, float], Path],
) -> None:
    """With `sync.window_ms: 0.001` (or a wrong camera_offsets_ms) no sweep found its camera
    frame, and with `sync.gnss_window_ms: 0.001` none its GNSS fix: every DetectionList went
    out without a camera-confirmed detection, or without a global position, exit 0, and the
    summary said nothing."""
    drive = synth_drive(0, 2.0)
    line = _summary(capsys, drive, tmp_path, "sync: {window_ms: 0.001, gnss_window_ms: 0.001}\n")
    written = int(line.split()[2])
    assert f", bundles without their camera: camera/front {written} (no frame within " in line
    assert f", {written} bundles without a GNSS fix within sync.gnss_window_ms (0.001 ms)" in line
    # The default windows find them (the end of the drive costing one sweep its frame is not
    # said).
    line = _summary(capsys, drive, tmp_path)
    assert "without their camera" not in line and "without a GNSS fix" not in line, line


def test_sets_wider_than_max_interval_are_said(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    synth_drive: Callable[[int, float], Path],
) -> None:
    """`sync: {policy: approximate_time, max_interval_ms: 0}` (the demo's camera fires 62 ms
    after its sweep) wrote 1 degraded DetectionList of 20 sweeps, exit 0, and said nothing: the
    sweeps the policy deleted were held until the end of input published them alone, and
    all but the newest were skipped."""
    drive = synth_drive(0, 2.0)
    config = tmp_path / "node.yaml"
    config.write_text(SYNTH_TOPICS + "sync: {policy: approximate_time, max_interval_ms: 0}\n")
    out = tmp_path / "out.jsonl"
    err = _fails(capsys, *_synth_replay(drive, config), "--out", str(out), "--quiet")
    assert err == (
        f"perception replay: error: {drive}: none of its 20 sweeps gave a DetectionList "
        "(dropped_sweeps_unmatched 20) (sync.max_interval_ms (0 ms) makes no set wider: is it "
        "below how far a camera's frames lie from their sweeps (less sync.camera_offsets_ms)?)"
    )
    assert not out.exists()


def test_config_topics_the_drive_lacks_are_said(
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
    synth_drive: Callable[[int, float], Path],
) -> None:
    """`inputs.gnss_topic: gps` on a drive with its fixes on `gnss` replayed every sweep
    without a global position, exit 0, and said nothing; a camera topic the drive lacks, every
    sweep without that camera."""
    drive = synth_drive(0, 2.0)
    config = tmp_path / "node.yaml"
    config.write_text(
        "inputs: {lidar_topic: lidar, gnss_topic: gps, camera_topics: [camera/front, cam/rear]}\n"
    )
    out = tmp_path / "out.jsonl"
    argv = _synth_replay(drive, config)
    with caplog.at_level("WARNING", logger="replay.offline"):
        assert main([*argv, "--out", str(out), "--quiet"]) == 0
    assert [r.getMessage() for r in caplog.records if r.name == "replay.offline"] == [
        f"{drive}: no camera frames on cam/rear (the config's inputs.camera_topics): the drive "
        "has them on camera/front",
        f"{drive}: no GNSS fixes on gps (the config's inputs.gnss_topic): the drive has them on "
        "gnss",
    ]


def test_a_ground_prior_that_finds_no_plane_is_said(
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
    synth_drive: Callable[[int, float], Path],
) -> None:
    """`pipeline.ground.ground_prior_z_m: 1.73` (the lidar's height with the wrong sign), or
    `pipeline.max_range_m: 0.001`, found no ground plane in any sweep: every DetectionList went
    out without a detection, exit 0, and nothing said why."""
    drive = synth_drive(0, 2.0)
    config = tmp_path / "node.yaml"
    out = tmp_path / "out.jsonl"
    argv = _synth_replay(drive, config)
    said = []
    for pipeline in (
        "{ground: {ground_prior_z_m: 1.73}}",
        "{max_range_m: 0.001}",
        "{ground: {ground_prior_z_m: -1.73}}",
    ):
        config.write_text(f"{SYNTH_TOPICS}pipeline: {pipeline}\n")
        caplog.clear()
        with caplog.at_level("WARNING", logger="perception.pipeline.pipeline"):
            assert main([*argv, "--out", str(out), "--quiet"]) == 0
        said.append([r.getMessage() for r in caplog.records if "ground" in r.getMessage()])
    wrong_prior, no_returns, right = said
    assert len(wrong_prior) == 1 and wrong_prior[0].startswith(
        "ground: no plane of at least 50 returns near pipeline.ground.ground_prior_z_m (1.73 m; "
        "from 1 m below it to 0.6 m above) in the last 10 sweeps ("
    )
    assert wrong_prior[0].endswith(
        " returns within pipeline.max_range_m, 80 m, in this one): the level plane at the prior "
        "is used (is the prior the ground's height in the vehicle frame?)"
    )
    assert len(no_returns) == 1
    assert "(0 returns within pipeline.max_range_m, 0.001 m, in this one)" in no_returns[0]
    assert right == []  # a plane in every sweep


def test_bundles_passed_over_are_in_the_summary(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    synth_drive: Callable[[int, float], Path],
) -> None:
    """A camera silent for a while: the sweeps waiting for it until it was called dead were
    made ready together, the newest processed and the others passed over, counted on
    diagnostics alone; the summary said fewer lists than sweeps, without a word why."""
    drive = synth_drive(0, 2.0)
    reader = DriveReader(drive)
    first = min(r.message.header.stamp_ns for r in reader.messages())
    silent = tmp_path / "silent.mcap"
    with DriveWriter(silent, rig=reader.rig) as writer:
        for r in reader.messages():
            late = r.message.header.stamp_ns - first
            if not (isinstance(r.message, CameraFrame) and 500_000_000 <= late < 1_500_000_000):
                writer.write(r.message, r.log_time_ns, r.topic)
    line = _summary(capsys, silent, tmp_path)
    written = int(line.split()[2])
    passed = re.search(
        r", (\d+) bundles passed over \(completed after a newer sweep's output", line
    )
    assert passed is not None, line
    assert written + int(passed[1]) == 20, line


def test_a_camera_offset_pairing_frames_with_another_sweep_is_said(
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
    synth_drive: Callable[[int, float], Path],
) -> None:
    """The synthetic camera fires 62 ms into each sweep: with a config that leaves
    sync.camera_offsets_ms at 0, every sweep was fused with the frame of the sweep before it,
    38 ms off, and nothing said so (every bundle had its camera). The diagnostics carry a note
    naming the offset to set, and the replay says it; read on the drive's own offsets (no
    config), nothing is said."""
    drive = synth_drive(0, 2.0)
    config = tmp_path / "node.yaml"
    config.write_text(SYNTH_TOPICS)
    out = tmp_path / "out.mcap"
    with caplog.at_level(logging.WARNING):
        assert main([*_synth_replay(drive, config), "--out", str(out), "--quiet"]) == 0
    said = "camera/front: its frames come 62 ms into the sweep they fall in, 38 ms before"
    assert any(said in r.getMessage() for r in caplog.records), caplog.text
    notes = [
        note
        for r in DriveReader(out).messages()
        if isinstance(r.message, Diagnostics)
        for note in r.message.notes
    ]
    assert any(
        n.startswith(said) and n.endswith("Set sync.camera_offsets_ms: {camera/front: 62}")
        for n in notes
    ), notes
    caplog.clear()
    model = REPO / "engines" / "models" / "synth_detector.onnx"
    with caplog.at_level(logging.WARNING):
        argv = ["replay", str(drive), "--model", str(model), "--out", str(out), "--quiet"]
        assert main(argv) == 0
    assert "sync.camera_offsets_ms" not in caplog.text
    capsys.readouterr()
