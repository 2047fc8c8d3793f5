"""Each command-line mistake a new user made (the architecture issue's list, and those found by
trying every command hostilely) is one line on stderr naming the input and the problem, exit
code 2, and leaves no output file damaged. In-process through `main`, on real files."""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

import pytest

from app.cli import main
from perception.io.transport import MAX_TOPIC_BYTES, Publisher, Subscriber
from perception.msgs.types import DetectionList, Diagnostics, Header
from replay.datasets.kitti_object import KittiObjectFolder
from replay.drive import DriveReader, DriveWriter
from replay.recorder import Recorder
from replay.synth.world import generate_drive, ground_truth_path
from tests.app.one_line import fails as _fails
from tests.calibration.test_images import png_header


@pytest.fixture(scope="module")
def kitti_drive(tmp_path_factory: pytest.TempPathFactory, kitti_dir: Path) -> Path:
    path = tmp_path_factory.mktemp("drives") / "kitti.mcap"
    with DriveWriter(path) as writer:
        for msg in KittiObjectFolder(kitti_dir).messages():
            writer.write(msg, msg.header.stamp_ns)
    return path


@pytest.fixture(scope="module")
def detections_drive(
    tmp_path_factory: pytest.TempPathFactory, kitti_drive: Path, yolox_path: Path
) -> Path:
    """A drive of recorded detections (what `replay --out X.mcap` writes)."""
    path = tmp_path_factory.mktemp("drives") / "detections.mcap"
    assert main(["replay", str(kitti_drive), "--out", str(path), "--model", str(yolox_path),
                 "--quiet"]) == 0  # fmt: skip
    # The node's outputs: its DetectionLists, TrackLists and Diagnostics (once a second, and at
    # the end).
    assert set(DriveReader(path).topics()) == {"detections", "tracks", "diagnostics"}
    return path


# -- the list ---------------------------------------------------------------------------


def test_replay_out_in_a_missing_folder(capsys, kitti_drive: Path, tmp_path: Path) -> None:
    out = tmp_path / "missing-dir" / "x.jsonl"
    err = _fails(capsys, "replay", str(kitti_drive), "--out", str(out), "--quiet")
    assert err == (
        f"perception replay: error: {out}: folder {out.parent} does not exist (create it first)"
    )


def test_bench_out_is_an_existing_file(capsys, tmp_path: Path) -> None:
    existing = tmp_path / "results.txt"
    existing.write_text("keep me\n")
    err = _fails(capsys, "bench", "--out", str(existing), "--quiet")
    assert err == f"perception bench: error: {existing}: is a file; --out must be a folder"
    assert existing.read_text() == "keep me\n"


def test_demo_out_dir_is_an_existing_file(capsys, tmp_path: Path) -> None:
    existing = tmp_path / "demo"
    existing.write_text("keep me\n")
    err = _fails(capsys, "demo", "--out-dir", str(existing), "--quiet")
    assert err == f"perception demo: error: {existing}: is a file; --out-dir must be a folder"
    assert existing.read_text() == "keep me\n"


def test_demo_drive_without_its_ground_truth(capsys, tmp_path: Path) -> None:
    drive = tmp_path / "synth.mcap"
    generate_drive(drive, seed=1, seconds=0.3)
    ground_truth_path(drive).unlink()
    err = _fails(capsys, "demo", "--drive", str(drive), "--out-dir", str(tmp_path / "o"))
    assert err.startswith(f"perception demo: error: {drive}: no ground truth beside it")
    assert ground_truth_path(drive).name in err
    assert not (tmp_path / "o" / "detections.jsonl").exists()


def test_demo_without_an_unknown_sensor(capsys, tmp_path: Path) -> None:
    err = _fails(capsys, "demo", "--without", "radar", "--out-dir", str(tmp_path), "--quiet")
    assert err.startswith("perception demo: error: without: choose among camera, lidar,")


@pytest.mark.parametrize(
    ("without", "says"),
    [
        ("camera-dark:abc", "camera-dark:LEVEL takes the brightness factor, in (0, 1]; got 'abc'"),
        ("camera-dark:1.5", "camera-dark:LEVEL takes the brightness factor, in (0, 1]; got '1.5'"),
        ("camera-blur:-2", "camera-blur:LEVEL takes the blur sigma in pixels, in (0, 100]"),
        ("camera-blur:nan", "camera-blur:LEVEL takes the blur sigma in pixels, in (0, 100]"),
        ("lidar:3", "lidar takes no level, got 'lidar:3'"),
    ],
)
def test_demo_without_a_bad_level(capsys, tmp_path: Path, without: str, says: str) -> None:
    err = _fails(capsys, "demo", "--without", without, "--out-dir", str(tmp_path), "--quiet")
    assert err.startswith("perception demo: error: without: ") and says in err, err


def test_demo_with_a_learned_model_that_is_not_there(capsys, tmp_path: Path) -> None:
    missing = tmp_path / "nope.onnx"
    err = _fails(
        capsys, "demo", "--fusion", "learned", "--learned-model", str(missing), "--seconds",
        "0.3", "--out-dir", str(tmp_path), "--quiet",
    )  # fmt: skip
    assert err.startswith(f"perception demo: error: learned fusion model {missing}: not found")
    assert not list(tmp_path.glob("*.mcap"))  # refused before a drive was generated


def test_replay_of_a_detections_drive(capsys, detections_drive: Path, tmp_path: Path) -> None:
    err = _fails(capsys, "replay", str(detections_drive), "--out", str(tmp_path / "x.jsonl"))
    assert err.startswith(
        f"perception replay: error: {detections_drive}: no sensor topics to replay "
        "(it holds: detections, diagnostics, tracks); replay takes a sensor drive"
    )
    assert not (tmp_path / "x.jsonl").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["play", "kitti-object", "DIR", "--rate", "0"], "argument --rate: 0 is not > 0"),
        (["play", "kitti-object", "DIR", "--rate", "-5"], "argument --rate: -5 is not > 0"),
        (["play", "x.mcap", "--start", "-10"], "argument --start: -10 is not >= 0"),
        (["play", "x.mcap", "--speed", "-1"], "argument --speed: -1 is not >= 0"),
        (["play", "x.mcap", "--speed", "nan"], "argument --speed: 'nan' is not a finite number"),
        # A wait beyond the platform's timers: it was "unexpected OverflowError".
        (["play", "x.mcap", "--speed", "1e-13"],
         "argument --speed: 1e-13 is below 1e-06 (a millionth of recorded time); 0 plays as "
         "fast as possible"),
        (["demo", "--seconds", "0"], "argument --seconds: 0 is not > 0"),
        (["demo", "--seed", "-1"], "argument --seed: -1 is not >= 0"),
        (["demo", "--fusion", "frustum"], "argument --fusion: 'frustum': choose among "
         "geometric, learned, ensemble (comma-separated) or all"),
        (["train", "c.yaml", "--steps", "0"], "argument --steps: 0 is not >= 1"),
        (["record", "--queue-size", "-1", "--out", "x.mcap"],
         "argument --queue-size: -1 is not >= 1"),
        (["eval", "d.jsonl", "--kitti", "K", "--reference", "R", "--max-distance", "-1"],
         "argument --max-distance: -1 is not > 0"),
        (["eval", "d.jsonl", "--kitti", "K", "--reference", "R", "--min-iou", "2"],
         "argument --min-iou: 2 is not between 0 and 1"),
        (["bench", "--rate", "fast"], "argument --rate: 'fast' is not a number"),
        (["echo", "detections", "--count", "-1"], "argument --count: -1 is not >= 0"),
        (["replay", "a.mcap", "--out", "a.jsonl", "--out-dir", "d"],
         "argument --out-dir: not allowed with argument --out"),
    ],
)  # fmt: skip
def test_bad_numbers_are_refused_when_parsed(capsys, argv: list[str], message: str) -> None:
    err = _fails(capsys, *argv)
    assert err == f"perception {argv[0]}: error: {message}"


def test_play_start_past_the_end(capsys, kitti_drive: Path) -> None:
    err = _fails(capsys, "play", str(kitti_drive), "--start", "100", "--wait", "0")
    assert err == (
        f"perception play: error: {kitti_drive}: --start 100 s is past the end of the drive "
        "(it lasts 0.70 s)"
    )


def test_play_a_topic_the_drive_does_not_hold(capsys, kitti_drive: Path) -> None:
    err = _fails(capsys, "play", str(kitti_drive), "--topics", "lidar", "--wait", "0")
    assert err == (
        f"perception play: error: {kitti_drive}: no topic lidar in the drive "
        "(it holds: camera/front, lidar/top, rig)"
    )


# -- no output damaged by a failed run -----------------------------------------------------------


@pytest.mark.parametrize("suffix", [".jsonl", ".mcap"])
def test_failed_replay_leaves_an_existing_out_as_it_was(
    capsys, tmp_path: Path, kitti_dir: Path, yolox_path: Path, suffix: str
) -> None:
    broken = tmp_path / "k"
    shutil.copytree(kitti_dir, broken)
    # A frame in the middle is broken: the run fails after writing some sweeps.
    (broken / "velodyne_reduced" / "000005.bin").write_bytes(b"")
    out = tmp_path / f"previous{suffix}"
    out.write_bytes(b"the previous run's detections\n")
    err = _fails(capsys, "replay", "kitti-object", str(broken), "--out", str(out),
                 "--model", str(yolox_path), "--quiet")  # fmt: skip
    assert err.endswith("000005.bin: empty lidar scan (0 bytes, 0 points)")
    assert out.read_bytes() == b"the previous run's detections\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k", out.name]  # no temporary left


def test_successful_replay_replaces_the_out_file(
    capsys, tmp_path: Path, kitti_drive: Path, yolox_path: Path
) -> None:
    out = tmp_path / "d.jsonl"
    out.write_text("old\n")
    out.chmod(0o640)
    code = main(["replay", str(kitti_drive), "--out", str(out), "--model", str(yolox_path),
                 "--quiet"])  # fmt: skip
    assert code == 0
    assert len(out.read_text().splitlines()) == 8
    assert out.stat().st_mode & 0o777 == 0o640  # replaced, permissions kept
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.jsonl"]


def _copy_drive(drive: Path, to: Path) -> Path:
    """A copy of a synthetic drive and its ground truth at `to`."""
    shutil.copyfile(drive, to)
    shutil.copyfile(ground_truth_path(drive), ground_truth_path(to))
    return to


def test_no_output_replaces_a_drive_its_ground_truth_or_a_run(
    capsys, tmp_path: Path, synth_drive
) -> None:
    """Each of these wrote over its input with exit 0 (the demo then crashed on the drive it had
    overwritten): a source named as --out-dir's output or linked from it, --out onto the ground
    truth beside the drive, a demo whose --out-dir holds the drive as detections.jsonl, show's
    run named as its index or a picture."""
    drive = _copy_drive(synth_drive(0, 1.0), tmp_path / "d.mcap")
    named = _copy_drive(drive, tmp_path / "drv.jsonl")
    linked = tmp_path / "od"
    linked.mkdir()
    (linked / "d.jsonl").symlink_to(drive)
    demo = tmp_path / "demo"
    demo.mkdir()
    as_output = _copy_drive(drive, demo / "detections.jsonl")
    truth = ground_truth_path(drive)
    kept = {p: p.read_bytes() for p in (drive, truth, named, as_output)}
    cases = [
        (["replay", "--out-dir", str(tmp_path), str(named)], named),
        (["replay", "--out-dir", str(linked), str(drive)], linked / "d.jsonl"),
        (["replay", str(drive), "--out", str(truth)], truth),
        (["demo", "--drive", str(as_output), "--out-dir", str(demo)], as_output),
    ]
    for args, out in cases:
        err = _fails(capsys, *args, "--quiet")
        assert re.fullmatch(
            rf".*error: {re.escape(str(out))}: is also an input of this command; .*", err
        ), err
    assert all(p.read_bytes() == data for p, data in kept.items())
    run = tmp_path / "run.jsonl"
    assert main(["replay", str(drive), "--out", str(run), "--quiet"]) == 0
    capsys.readouterr()
    for name in ("index.html", "00000.png"):
        pictures = tmp_path / f"show-{name}"
        pictures.mkdir()
        shutil.copyfile(run, pictures / name)
        err = _fails(capsys, "show", str(pictures / name), "--drive", str(drive), "--out",
                     str(pictures), "--quiet")  # fmt: skip
        assert err.endswith(f"{pictures / name}: is also an input of this command; a picture or "
                            "the index must be another file")  # fmt: skip
        assert (pictures / name).read_bytes() == run.read_bytes()


def test_show_writes_no_picture_through_a_link_into_the_frames(
    capsys, tmp_path: Path, kitti_dir: Path, yolox_path: Path
) -> None:
    """A picture linked to a frame's image was written through the link, replacing the image."""
    copy = tmp_path / "k"
    shutil.copytree(kitti_dir, copy)
    run = tmp_path / "run.jsonl"
    assert main(["replay", "kitti-object", str(copy), "--out", str(run), "--model",
                 str(yolox_path), "--quiet"]) == 0  # fmt: skip
    capsys.readouterr()
    frame = KittiObjectFolder(copy).frames[0]
    image = frame.image_path.read_bytes()
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    (pictures / f"{frame.frame_id}.png").symlink_to(frame.image_path)
    err = _fails(capsys, "show", str(run), "--kitti", str(copy), "--out", str(pictures),
                 "--quiet")  # fmt: skip
    assert err.endswith(
        f"{pictures / frame.frame_id}.png: is in {copy / 'image_2'}, which this command reads; "
        "a picture or the index must be written elsewhere"
    )
    assert frame.image_path.read_bytes() == image


def test_play_says_the_port_it_bound_for_tcp_star(capsys, synth_drive) -> None:
    """It said `on tcp://127.0.0.1:*`, which no subscriber can connect to."""
    drive = synth_drive(0, 1.0)
    args = ["play", str(drive), "--endpoint", "tcp://127.0.0.1:*", "--wait", "0", "--speed", "0"]
    assert main(args) == 0
    assert re.search(r"on tcp://127\.0\.0\.1:\d+\)?$", capsys.readouterr().out.strip())


def test_a_drive_named_as_long_as_a_file_name_may_be_replays(
    capsys, tmp_path: Path, synth_drive
) -> None:
    """Its ground truth's name (.gt.jsonl added) is too long for any file: the look for it
    failed with "File name too long", exit 2."""
    drive = tmp_path / ("z" * 250 + ".mcap")
    shutil.copyfile(synth_drive(0, 1.0), drive)
    out = tmp_path / "run.jsonl"
    assert main(["replay", str(drive), "--out", str(out), "--quiet"]) == 0
    assert "DetectionLists written" in capsys.readouterr().out


def test_a_symbolic_link_loop_as_an_output_is_one_line(
    capsys, tmp_path: Path, kitti_dir: Path
) -> None:
    """It was "unexpected RuntimeError: Symlink loop ... (a bug)", exit 1."""
    loop = tmp_path / "a.mcap"
    loop.symlink_to(tmp_path / "b.mcap")
    (tmp_path / "b.mcap").symlink_to(loop)
    err = _fails(capsys, "import", "kitti-object", str(kitti_dir), "--out", str(loop), "--quiet")
    assert err.endswith(f"{loop}: is a symbolic link loop; --out names no file")


def test_an_output_that_is_the_input_is_refused(capsys, tmp_path: Path, kitti_dir: Path) -> None:
    drive = tmp_path / "kitti.mcap"
    assert main(["import", "kitti-object", str(kitti_dir), "--out", str(drive), "--quiet"]) == 0
    capsys.readouterr()
    before = drive.read_bytes()
    err = _fails(capsys, "replay", str(drive), "--out", str(drive))
    assert err == (
        f"perception replay: error: {drive}: is also an input of this command; --out must be "
        "another file"
    )
    assert drive.read_bytes() == before
    image = tmp_path / "000003.png"
    shutil.copyfile(kitti_dir / "image_2" / "000003.png", image)
    err = _fails(capsys, "calib", "check", str(kitti_dir / "calib" / "000003.txt"), "--lidar",
                 str(kitti_dir / "velodyne_reduced" / "000003.bin"), "--image", str(image),
                 "--out", str(image))  # fmt: skip
    assert err.endswith(f"{image}: is also an input of this command; --out must be another file")


def test_record_refuses_to_overwrite_a_drive(capsys, tmp_path: Path) -> None:
    out = tmp_path / "drive.mcap"
    out.write_bytes(b"a recording\n")
    err = _fails(capsys, "record", "--out", str(out))
    assert err == (
        f"perception record: error: {out}: exists; give --overwrite to replace it, or another --out"
    )
    assert out.read_bytes() == b"a recording\n"


# -- broken inputs ------------------------------------------------------------------------------


def test_empty_and_odd_lidar_scans_name_the_file(capsys, tmp_path: Path, kitti_dir: Path) -> None:
    folder = tmp_path / "k"
    shutil.copytree(kitti_dir, folder)
    empty = folder / "velodyne_reduced" / "000003.bin"
    empty.write_bytes(b"")
    err = _fails(capsys, "import", "kitti-object", str(folder), "--out", str(tmp_path / "a.mcap"))
    assert err == f"perception import: error: {empty}: empty lidar scan (0 bytes, 0 points)"
    odd = folder / "velodyne_reduced" / "000004.bin"
    odd.write_bytes(b"\0" * 20)
    empty.write_bytes((kitti_dir / "velodyne_reduced" / "000003.bin").read_bytes())
    err = _fails(capsys, "import", "kitti-object", str(folder), "--out", str(tmp_path / "a.mcap"))
    assert err.endswith(f"{odd}: size 20 bytes is not a multiple of 16 (N x 4 float32)")
    assert not (tmp_path / "a.mcap").exists()
    calib = kitti_dir / "calib" / "000003.txt"
    image = kitti_dir / "image_2" / "000003.png"
    scan = tmp_path / "empty.bin"
    scan.write_bytes(b"")
    err = _fails(capsys, "calib", "check", str(calib), "--lidar", str(scan), "--image",
                 str(image), "--out", str(tmp_path / "o.png"))  # fmt: skip
    assert err == f"perception calib check: error: {scan}: empty lidar scan (0 bytes, 0 points)"


def test_a_damaged_drive_is_replayed_around_the_damage_and_a_non_drive_is_named(
    capsys, caplog, tmp_path: Path, kitti_drive: Path, yolox_path: Path
) -> None:
    """Damaged chunks are no mistake of the user's: the replay goes on past them, and the
    summary counts what they held. A file that is no drive is one line, exit 2."""
    data = bytearray(kitti_drive.read_bytes())
    for i in range(200_000, len(data) - 100_000, 6_000_000):
        data[i : i + 64] = bytes(64)  # chunks that no longer decompress; the index is intact
    damaged = tmp_path / "damaged.mcap"
    damaged.write_bytes(bytes(data))
    out = tmp_path / "x.jsonl"
    code = main(["replay", str(damaged), "--out", str(out), "--model", str(yolox_path), "--quiet"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    skipped = re.search(r"(\d+) unreadable input\(s\) skipped", captured.out)
    assert skipped is not None and int(skipped.group(1)) >= 2, captured.out
    assert f"{damaged}: a damaged chunk (bytes " in caplog.text
    assert 0 < len(out.read_text().splitlines()) < DriveReader(kitti_drive).topics()["lidar/top"]
    not_mcap = tmp_path / "notes.mcap"
    not_mcap.write_text("hello")
    err = _fails(capsys, "play", str(not_mcap), "--wait", "0")
    assert err == f"perception play: error: {not_mcap}: not an MCAP file"


def test_a_folder_given_as_a_drive_says_how_to_replay_it(capsys, kitti_dir: Path) -> None:
    err = _fails(capsys, "replay", str(kitti_dir), "--out", "x.jsonl")
    assert err == (
        f"perception replay: error: {kitti_dir}: is a folder, not a drive (.mcap); for a KITTI "
        f"object folder: perception replay kitti-object {kitti_dir}"
    )


def test_binary_files_given_as_text(capsys, tmp_path: Path, kitti_drive: Path) -> None:
    err = _fails(capsys, "eval", str(kitti_drive), "--kitti", "K", "--reference", "R")
    assert err.startswith(f"perception eval: error: {kitti_drive}: not a JSON Lines file")
    calib = tmp_path / "calib.txt"
    shutil.copyfile(kitti_drive, calib)
    err = _fails(capsys, "calib", "show", str(calib))
    assert err == f"perception calib show: error: {calib}: not UTF-8 text (byte 0x89 at offset 0)"


def test_config_errors_are_one_line(capsys, tmp_path: Path, kitti_drive: Path) -> None:
    config = tmp_path / "node.yaml"
    config.write_text("inputs: [1\n")
    err = _fails(capsys, "replay", str(kitti_drive), "--out", str(tmp_path / "x.jsonl"),
                 "--config", str(config))  # fmt: skip
    assert err.startswith(f"perception replay: error: {config}: invalid YAML")
    # Aliases repeating 2 million values are refused before the config is read (one nine
    # levels deep under `rig` was a MemoryError, "a bug"; tests/calibration/test_errors.py).
    config.write_text("inputs:\n  camera_topics: &a [" + ", ".join(["x"] * 100) + "]\n"
                      "  lidar_topic: &b [" + ", ".join(["*a"] * 100) + "]\n"
                      "pipeline: [" + ", ".join(["*b"] * 200) + "]\n")  # fmt: skip
    err = _fails(capsys, "config", "show", "--config", str(config))
    assert err.startswith(f"perception config show: error: {config}: invalid YAML (its aliases ")


def test_cache_dir_that_is_a_file(capsys, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.write_text("")
    for argv in (["models", "list"], ["engines", "list"]):
        err = _fails(capsys, *argv, "--cache-dir", str(cache))
        command = " ".join(argv)
        assert (
            err == f"perception {command}: error: {cache}: is a file; --cache-dir must be a folder"
        )


def test_bench_device_cuda_without_a_gpu(capsys) -> None:
    from engines.onnxruntime_backend import cuda_provider_available

    if cuda_provider_available():
        pytest.skip("a CUDA device is usable here")
    err = _fails(capsys, "bench", "--device", "cuda", "--quiet")
    assert err.startswith(
        "perception bench: error: engines.device cuda (onnxruntime): this ONNX Runtime has no "
        "usable CUDA execution provider"
    )


def test_detections_types_are_kept(detections_drive: Path) -> None:
    """The detections drive fixture is what `replay --out X.mcap` writes (sanity)."""
    messages = [r.message for r in DriveReader(detections_drive).messages(["detections"])]
    assert len(messages) == 8 and all(isinstance(m, DetectionList) for m in messages)
    diagnostics = [r.message for r in DriveReader(detections_drive).messages(["diagnostics"])]
    assert diagnostics
    last = diagnostics[-1]
    assert isinstance(last, Diagnostics) and last.counters["published"] == 8


def test_a_drive_must_be_written_as_mcap(capsys, tmp_path: Path, kitti_dir: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not a drive\n")
    for argv in (["import", "kitti-object", str(kitti_dir)], ["record", "lidar/top"]):
        err = _fails(capsys, *argv, "--out", str(notes))
        assert err == (
            f"perception {argv[0]}: error: {notes}: --out must end in .mcap (it is an MCAP drive)"
        )
    assert notes.read_text() == "not a drive\n"


# -- keys -------------------------------------------------------------------------------------


def test_keys_generate_mistakes(capsys, tmp_path: Path) -> None:
    assert main(["keys", "generate", "--out", str(tmp_path / "keys")]) == 0
    out = capsys.readouterr().out
    assert f"public key {tmp_path / 'keys' / 'node.key'}" in out
    err = _fails(capsys, "keys", "generate", "--out", str(tmp_path / "keys"))
    assert err == (
        f"perception keys generate: error: {tmp_path / 'keys' / 'node.key'}: exists; give "
        "--overwrite to replace the key pair (clients holding the old public key are then "
        "refused)"
    )
    err = _fails(capsys, "keys", "generate", "--out", str(tmp_path), "--name", "../escape")
    assert err == (
        "perception keys generate: error: --name '../escape': a key name has letters, digits, "
        "'.', '_', '-' only"
    )
    a_file = tmp_path / "file"
    a_file.write_text("x")
    err = _fails(capsys, "keys", "generate", "--out", str(a_file))
    assert err == f"perception keys generate: error: {a_file}: is a file; --out must be a folder"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["import", "kitti-object", "{kitti}", "--out", "{tmp}/x.mcap", "--origin", "abc"],
         "--origin does nothing for an import of kitti-object"),
        (["import", "kitti-object", "{kitti}", "--out", "{tmp}/x.mcap", "--scene", "s", "--grey"],
         "--grey, --scene do nothing for an import of kitti-object"),
        (["import", "rosbag2", "{kitti}", "--out", "{tmp}/x.mcap", "--version", "v1.0-trainval"],
         "--version does nothing for an import of rosbag2"),
        (["play", "kitti-object", "{kitti}", "--speed", "3", "--topics", "lidar", "--wait", "0"],
         "--speed, --topics do nothing for a KITTI object folder (played at --rate)"),
        (["play", "{drive}", "--rate", "5", "--wait", "0"],
         "--rate does nothing for a drive (paced by its recorded time: --speed)"),
        (["replay", "kitti-object", "{kitti}", "--out", "{tmp}/x.jsonl", "--realtime"],
         "--realtime does nothing for a KITTI object folder (its frames have no recorded time)"),
        (["demo", "--drive", "{drive}", "--seed", "5", "--scene", "rich", "--out-dir",
          "{tmp}/d"], "--seed, --scene do nothing for --drive (they make a new drive)"),
        (["demo", "--learned-model", "{tmp}/m.onnx", "--out-dir", "{tmp}/d"],
         "--learned-model does nothing for --fusion geometric: give --fusion learned, ensemble "
         "or all"),
        (["replay", "{drive}", "--out-dir", "{tmp}/o", "--realtime"],
         "--realtime does nothing for --out-dir (many sources are replayed as fast as possible)"),
        (["replay", "{drive}", "--out", "{tmp}/x.jsonl", "--ray-address", "local", "--show",
          "{tmp}/s"], "--ray-address needs --out-dir DIR (one output file per source)"),
    ],
)  # fmt: skip
def test_options_that_do_nothing_for_the_source_are_refused(
    capsys, kitti_dir: Path, kitti_drive: Path, tmp_path: Path, *, argv: list[str], message: str
) -> None:
    """Silently ignored, they would let a user believe they took effect."""
    filled = [a.format(kitti=kitti_dir, drive=kitti_drive, tmp=tmp_path) for a in argv]
    assert _fails(capsys, *filled) == f"perception {argv[0]}: error: {message}"
    assert list(tmp_path.iterdir()) == []


def test_an_empty_topic_is_refused_not_taken_for_every_topic(capsys, tmp_path: Path) -> None:
    out = tmp_path / "x.mcap"
    err = _fails(capsys, "record", "lidar/top", "", "--out", str(out))
    assert err == (
        "perception record: error: one of the topics arguments is empty (an unset shell "
        "variable?): give it a value or leave it out"
    )
    assert not out.exists()
    err = _fails(capsys, "echo", " ")
    assert err == "perception echo: error: topic ' ': a topic must not be empty"


def test_an_image_file_that_decodes_to_gigabytes_is_refused_unread(
    capsys, tmp_path: Path, kitti_dir: Path, yolox_path: Path
) -> None:
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_header(30_000, 30_000))
    scan = kitti_dir / "velodyne_reduced" / "000003.bin"
    calib = kitti_dir / "calib" / "000003.txt"
    err = _fails(capsys, "calib", "check", str(calib), "--lidar", str(scan), "--image", str(bomb),
                 "--out", str(tmp_path / "o.png"))  # fmt: skip
    assert err == (
        f"perception calib check: error: {bomb}: image of 30000 x 30000 = 900000000 pixels, "
        "above the limit of 10000000"
    )
    folder = tmp_path / "k"
    shutil.copytree(kitti_dir, folder)
    shutil.copyfile(bomb, folder / "image_2" / "000003.png")
    # The model given, not left to the user's model cache (empty on a fresh machine).
    err = _fails(capsys, "replay", "kitti-object", str(folder), "--out", str(tmp_path / "o.jsonl"),
                 "--model", str(yolox_path))  # fmt: skip
    assert err.endswith(
        f"{folder / 'image_2' / '000003.png'}: image of 30000 x 30000 = 900000000 pixels, above "
        "the limit of 10000000"
    )


def test_a_pipe_given_as_a_drive_or_run_is_named_not_waited_on(
    capsys, tmp_path: Path, kitti_dir: Path
) -> None:
    """A FIFO with no writer blocked `replay`, `play`, `calib check`, `bench` and `eval --tracks`
    in the open itself; `show` and `export` called it missing."""
    pipe = tmp_path / "pipe.mcap"
    os.mkfifo(pipe)
    err = _fails(capsys, "replay", str(pipe), "--out", str(tmp_path / "o.jsonl"))
    assert err.endswith(f"{pipe}: not a regular file (a device, pipe or socket), so no drive")
    # Among many sources it was "no such drive or KITTI object folder".
    code = main(["replay", "--out-dir", str(tmp_path / "many"), str(pipe), "--quiet"])
    said = capsys.readouterr()
    assert code == 1
    assert f"{pipe}: not a regular file (a device, pipe or socket)" in said.out + said.err
    run = tmp_path / "run.jsonl"
    os.mkfifo(run)
    err = _fails(capsys, "show", str(run), "--kitti", str(kitti_dir), "--out", str(tmp_path / "s"))
    assert err.endswith(f"{run}: not a regular file (a device, pipe or socket), so no run")
    err = _fails(capsys, "export", "rosbag2", str(run), "--out", str(tmp_path / "bag"))
    assert f"{run}: is not a regular file (a device, pipe or socket)" in err


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["show", "RUN", "--drive", "DRIVE", "--out", ""], "--out"),
        (["show", "RUN", "--drive", "DRIVE", "--out="], "--out"),
        (["bench", "--out", "", "--duration", "1", "--quiet"], "--out"),
        # Named by its full name: --out is taken for --out-dir.
        (["demo", "--out", "", "--quiet"], "--out-dir"),
        (["keys", "generate", "--out", ""], "--out"),
        (["replay", "DRIVE", "--out", ""], "--out"),
    ],
)
def test_an_empty_argument_is_refused_before_any_work(
    capsys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, argv: list[str], named: str
) -> None:
    """An empty value (an unset shell variable: `--out "$DIR"`) named the current folder, where
    `show`, `bench`, `demo` and `keys` wrote their files with exit 0."""
    monkeypatch.chdir(tmp_path)
    run, drive = tmp_path / "run.jsonl", tmp_path / "drive.mcap"
    argv = [{"RUN": str(run), "DRIVE": str(drive)}.get(a, a) for a in argv]
    err = _fails(capsys, *argv)
    assert err.startswith(f"perception {argv[0]}")
    assert err.endswith(f": error: {named} is empty (an unset shell variable?): give it a value")
    assert list(tmp_path.iterdir()) == []


_UNSET = "(an unset shell variable?)"


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["replay", "", "--out", "o.jsonl"], f"the sources argument is empty {_UNSET}"),
        (
            ["replay", "--out-dir", "d", "a", "", "b"],
            f"one of the sources arguments is empty {_UNSET}",
        ),
        (["play", ""], f"the source argument is empty {_UNSET}"),
        (["play", "kitti-object", ""], f"the dir argument is empty {_UNSET}"),
        (
            ["record", "--out", "r.mcap", "lidar", ""],
            f"one of the topics arguments is empty {_UNSET}",
        ),
        (["echo", "--", ""], f"the topic argument is empty {_UNSET}"),
        # After a flag that takes no value: the positional, not the flag, is empty.
        (["bench", "--quiet", ""], f"the drive argument is empty {_UNSET}"),
        (["import", "kitti-object", "", "--out", "x.mcap"], f"the dir argument is empty {_UNSET}"),
        (["export", "rosbag2", "", "--out", "bag"], f"the source argument is empty {_UNSET}"),
        (["eval", ""], f"the detections argument is empty {_UNSET}"),
        (["show", ""], f"the run argument is empty {_UNSET}"),
        (["train", ""], f"the config argument is empty {_UNSET}"),
        (["calib", "show", ""], f"the rig argument is empty {_UNSET}"),
        (["calib", "check", ""], f"the rig argument is empty {_UNSET}"),
        (["engines", "build", ""], f"the models argument is empty {_UNSET}"),
        (["models", "fetch", "a", ""], f"one of the names arguments is empty {_UNSET}"),
        (["play", "x.mcap", "--topics", "lidar", ""], f"a value of --topics is empty {_UNSET}"),
    ],
)
def test_an_empty_positional_argument_is_refused_naming_it(
    capsys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, argv: list[str], said: str
) -> None:
    """An empty positional was left to its command: `replay ""` said ". is a folder, not a
    drive", `bench --quiet ""` called --quiet empty."""
    monkeypatch.chdir(tmp_path)
    err = _fails(capsys, *argv)
    assert err.startswith(f"perception {argv[0]}")
    assert f": error: {said}: give it " in err
    assert list(tmp_path.iterdir()) == []


def test_a_file_output_named_with_a_trailing_slash_is_refused(
    capsys, tmp_path: Path, kitti_dir: Path, kitti_drive: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`calib check --refine x.yaml/` wrote the file x.yaml (as replay, import, record and
    calib check's --out did): the slash that named a folder is lost in a Path."""
    drive = kitti_drive
    monkeypatch.chdir(tmp_path)
    frame = [
        str(kitti_dir / "calib" / "000003.txt"),
        "--lidar", str(kitti_dir / "velodyne_reduced" / "000003.bin"),
        "--image", str(kitti_dir / "image_2" / "000003.png"),
    ]  # fmt: skip
    cases = [
        (["calib", "check", "--drive", str(drive), "--refine", "r.yaml/"], "--refine"),
        (["calib", "check", "--drive", str(drive), "--refine", "r.yaml/."], "--refine"),
        (["calib", "check", "--drive", str(drive), "--out", "o.png/"], "--out"),
        (["calib", "check", *frame, "--out", "o.png/"], "--out"),
        (["replay", str(drive), "--out", "o.jsonl/"], "--out"),
        (["import", "kitti-object", str(kitti_dir), "--out", "i.mcap/"], "--out"),
        (["record", "--out", "r.mcap/"], "--out"),
    ]
    for argv, option in cases:
        given = argv[argv.index(option) + 1]
        command = " ".join(argv[:2] if argv[0] == "calib" else argv[:1])
        ending = given[given.rindex("/") :]
        assert _fails(capsys, *argv) == (
            f"perception {command}: error: {given}: names a folder (it ends in {ending}); "
            f"{option} must be a file"
        )
    assert list(tmp_path.iterdir()) == []


def test_a_drive_of_one_message_per_topic_is_not_looped(capsys, tmp_path: Path) -> None:
    """`play --loop` of a one-message drive sent it 6000 times a second at 100% CPU."""
    drive = tmp_path / "one.mcap"
    with DriveWriter(drive) as w:
        w.write(Diagnostics(Header("diagnostics", 0, 10**9, "node")), 10**9)
    err = _fails(capsys, "play", str(drive), "--loop", "--endpoint", f"ipc://{tmp_path}/p",
                 "--wait", "0")  # fmt: skip
    assert err == (
        f"perception play: error: {drive}: --loop: the drive holds one message per topic played "
        "(diagnostics), so it has no period to repeat them at; play it without --loop"
    )


def test_a_topic_too_long_to_subscribe_to_is_refused(capsys, tmp_path: Path) -> None:
    """`echo` and `record` of a topic over 64 KiB waited for ever: a publisher drops the
    connection of a subscription above MAX_SUBSCRIPTION_BYTES (a topic of MAX_TOPIC_BYTES and,
    in libzmq 4.3, the 10 bytes of its SUBSCRIBE command)."""
    endpoint = f"ipc://{tmp_path}/p"
    longest = "t" * MAX_TOPIC_BYTES
    with Publisher(endpoint, bind=True) as pub, Subscriber([endpoint], [longest]) as sub:
        deadline = time.monotonic() + 5
        while (frames := sub.recv(50)) is None and time.monotonic() < deadline:
            pub.send_frames([longest.encode(), b"x"])
    assert frames is not None  # the longest topic allowed is received
    err = _fails(capsys, "echo", longest + "t", "--endpoint", endpoint)
    assert err == (
        f"perception echo: error: topic '{'t' * 32}...' is 65537 bytes long; a subscription "
        "takes at most 65536 (a publisher drops the connection of a longer one, so nothing "
        "would arrive)"
    )
    out = tmp_path / "r.mcap"
    # Bytes, not characters: 32769 of them are 65538 bytes.
    err = _fails(capsys, "record", "lidar", "é" * 32769, "--endpoint", endpoint, "--out", str(out))
    assert err.startswith(f"perception record: error: topic '{'é' * 32}...' is 65538 bytes long")
    assert not out.exists()


def test_a_topic_that_is_not_utf8_is_refused(capsys, tmp_path: Path) -> None:
    """A topic of bytes that are not UTF-8 (`$(printf 'li\\xffdar')`: Python holds them as
    surrogates) ended `echo` and `record` in a UnicodeEncodeError from the transport's
    subscribe, exit 1 "a bug". Topics travel as UTF-8: nothing could be published on it."""
    endpoint = f"ipc://{tmp_path}/p"
    topic = b"li\xffdar".decode("utf-8", "surrogateescape")
    err = _fails(capsys, "echo", topic, "--endpoint", endpoint)
    assert err == (
        "perception echo: error: topic 'li\\xffdar': not UTF-8 text; topics travel as UTF-8, so "
        "nothing could be published on it"
    )
    out = tmp_path / "r.mcap"
    err = _fails(capsys, "record", "gnss", topic, "--endpoint", endpoint, "--out", str(out))
    assert err.startswith("perception record: error: topic 'li\\xffdar': not UTF-8 text")
    assert not out.exists()


def test_a_drive_being_recorded_is_not_replaced(capsys, tmp_path: Path) -> None:
    """A second `record --overwrite` (or `import --overwrite`) of the drive a recorder was
    writing replaced it when it finished: the first recorder went on writing a file no name
    led to, and said "131 written" of a drive that held none of them."""
    endpoint = f"ipc://{tmp_path}/p"
    out = tmp_path / "drive.mcap"
    source = tmp_path / "kitti"
    source.mkdir()
    with Publisher(endpoint, bind=True):
        recorder = Recorder([endpoint], ["gnss"], out)
        recorder.start()
        try:
            err = _fails(capsys, "record", "gnss", "--endpoint", endpoint, "--out", str(out),
                         "--overwrite")  # fmt: skip
            assert err == (
                f"perception record: error: {out}: is being written by another process (a "
                "recorder, an import); choose another file, or stop that one first"
            )
            err = _fails(capsys, "import", "kitti-object", str(source), "--out", str(out),
                         "--overwrite")  # fmt: skip
            assert err.startswith(f"perception import: error: {out}: is being written by another")
        finally:
            recorder.close()
    assert not DriveReader(out).truncated  # the first recorder's drive, finished
    # Finished, it is a drive like any other.
    assert main(["import", "kitti-object", str(source), "--out", str(out), "--overwrite",
                 "--quiet"]) == 2  # fmt: skip
    assert "not a KITTI object folder" in capsys.readouterr().err
