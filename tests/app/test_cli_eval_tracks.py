"""`perception eval --tracks OUT.mcap --drive DRIVE.mcap`: the tracks of a replay scored against
the drive's ground truth; each mistake one line on stderr, exit 2. In-process through `main`, on
a real replay of a short synthetic drive."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from app.cli import main
from replay.synth.world import ground_truth_path
from tests.app.one_line import fails as _fails


@pytest.fixture(scope="module")
def replayed(
    synth_drive: Callable[[int, float], Path], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path]:
    """(the drive, its replay's MCAP output, which holds the tracker's TrackLists)."""
    drive = synth_drive(1, 2.0)
    out = tmp_path_factory.mktemp("replay") / "out.mcap"
    assert main(["replay", str(drive), "--out", str(out), "--quiet"]) == 0
    return drive, out


def test_tracks_are_scored(capsys, replayed: tuple[Path, Path]) -> None:
    drive, out = replayed
    assert main(["eval", "--tracks", str(out), "--drive", str(drive)]) == 0
    text = capsys.readouterr().out
    assert f"tracks: {out}" in text and f"drive: {drive}" in text
    assert "20 frames scored (0 ground-truth frames without a TrackList, 0 TrackLists" in text
    car = next(line for line in text.splitlines() if line.strip().startswith("Car "))
    mota = float(car.split()[2])
    assert 0.0 < mota <= 1.0


def test_tracks_need_the_drive(capsys, replayed: tuple[Path, Path]) -> None:
    _, out = replayed
    err = _fails(capsys, "eval", "--tracks", str(out))
    assert err == (
        "perception eval: error: --tracks needs --drive DRIVE.mcap: the drive replayed, whose "
        "ground truth the tracks are scored against"
    )


def test_tracks_take_no_detections(capsys, replayed: tuple[Path, Path]) -> None:
    drive, out = replayed
    err = _fails(capsys, "eval", "d.jsonl", "--tracks", str(out), "--drive", str(drive))
    assert err.startswith("perception eval: error: --tracks takes no DETECTIONS: ")


@pytest.mark.parametrize(
    "option", [["--max-distance", "3"], ["--min-iou", "0.5"], ["--max-range", "80"],
               ["--min-score", "0"]],
)  # fmt: skip
def test_tracks_refuse_the_detection_matching_options(
    capsys, replayed: tuple[Path, Path], option: list[str]
) -> None:
    """They tune the matching of detections with references; with --tracks they were ignored
    without a word, and the scores read as if they had been used."""
    drive, out = replayed
    err = _fails(capsys, "eval", "--tracks", str(out), "--drive", str(drive), *option)
    assert err.startswith(f"perception eval: error: --tracks takes no {option[0]}: "), err
    # Left at their defaults they are no mistake.
    assert main(["eval", "--tracks", str(out), "--drive", str(drive)]) == 0


def test_detections_need_their_references(capsys) -> None:
    err = _fails(capsys, "eval", "d.jsonl")
    assert err.startswith("perception eval: error: missing --kitti, --reference: ")
    err = _fails(capsys, "eval", "d.jsonl", "--kitti", "K", "--reference", "R", "--drive", "x")
    assert err == "perception eval: error: --drive goes with --tracks (tracks against a drive's " \
        "ground truth)"  # fmt: skip


def test_a_sensor_drive_holds_no_tracks(capsys, replayed: tuple[Path, Path]) -> None:
    drive, _ = replayed
    err = _fails(capsys, "eval", "--tracks", str(drive), "--drive", str(drive))
    assert err.startswith(
        f"perception eval: error: {drive}: no TrackLists (it holds: camera/front, gnss, lidar"
    )


def test_a_drive_without_ground_truth(capsys, replayed: tuple[Path, Path]) -> None:
    _, out = replayed
    err = _fails(capsys, "eval", "--tracks", str(out), "--drive", str(out))
    assert err.startswith(f"perception eval: error: {out}: no ground truth (neither ")


def test_missing_and_unreadable_files(capsys, replayed: tuple[Path, Path], tmp_path: Path) -> None:
    drive, out = replayed
    missing = tmp_path / "nope.mcap"
    err = _fails(capsys, "eval", "--tracks", str(missing), "--drive", str(drive))
    assert err == f"perception eval: error: {missing}: no such drive (.mcap)"
    text = tmp_path / "tracks.jsonl"
    text.write_text("{}\n")
    err = _fails(capsys, "eval", "--tracks", str(text), "--drive", str(drive))
    assert err == f"perception eval: error: {text}: not an MCAP file"
    err = _fails(capsys, "eval", "--tracks", str(out), "--drive", str(tmp_path))
    assert err == f"perception eval: error: {tmp_path}: is a folder, not a drive (.mcap)"


def test_ground_truth_without_object_ids(
    capsys, replayed: tuple[Path, Path], tmp_path: Path
) -> None:
    drive, out = replayed
    old = tmp_path / "old.mcap"
    shutil.copyfile(drive, old)
    # Ground truth as written before it held ids and velocities, beside the drive (read first).
    lines = []
    for line in ground_truth_path(drive).read_text().splitlines():
        doc = json.loads(line)
        for box in doc["boxes"]:
            del box["id"], box["velocity"]
        lines.append(json.dumps(doc))
    ground_truth_path(old).write_text("\n".join(lines) + "\n")
    err = _fails(capsys, "eval", "--tracks", str(out), "--drive", str(old))
    assert err.startswith(f"perception eval: error: {old}: ground truth of sweep 0: no object ids")


def test_binary_ground_truth_is_named(capsys, replayed: tuple[Path, Path], tmp_path: Path) -> None:
    drive, out = replayed
    copy = tmp_path / "drive.mcap"
    shutil.copyfile(drive, copy)
    ground_truth_path(copy).write_bytes(b"\xff\xfe\x00garbage\n")
    err = _fails(capsys, "eval", "--tracks", str(out), "--drive", str(copy))
    assert err == (
        f"perception eval: error: {ground_truth_path(copy)}:1: not UTF-8 text "
        "(byte 0xff at offset 0)"
    )


@pytest.mark.parametrize(
    "change",
    [
        ("center", [float("nan"), 1.0, -0.9], "center [nan, 1.0, -0.9] is not 3 finite numbers"),
        ("center", [1.0, 2.0], "center [1.0, 2.0] is not 3 finite numbers"),
        ("size", [-1.0, 1.6, 1.5], "size [-1.0, 1.6, 1.5] is negative"),
        ("velocity", [1e308, 1e308], "velocity [1e+308, 1e+308] m/s is faster than 100 m/s"),
        ("velocity", [120.0, 0.0], "velocity [120.0, 0.0] m/s is faster than 100 m/s"),
        ("yaw", float("inf"), "yaw inf is not a finite number"),
        ("camera_visible", 1.5, "camera_visible 1.5 is outside [0, 1]"),
        ("lidar_points", -3, "lidar_points -3 is negative"),
    ],
)
def test_impossible_ground_truth_is_refused(
    capsys, replayed: tuple[Path, Path], tmp_path: Path, change: tuple[str, object, str]
) -> None:
    key, value, problem = change
    drive, out = replayed
    bad = tmp_path / "bad.mcap"
    shutil.copyfile(drive, bad)
    lines = ground_truth_path(drive).read_text().splitlines()
    doc = json.loads(lines[2])
    box = doc["boxes"][-1]
    box[key] = value
    lines[2] = json.dumps(doc)
    ground_truth_path(bad).write_text("\n".join(lines) + "\n")
    err = _fails(capsys, "eval", "--tracks", str(out), "--drive", str(bad))
    assert err == (
        f"perception eval: error: {ground_truth_path(bad)}:3: object {box['id']} "
        f"({box['label']}): {problem}"
    )


def test_ground_truth_of_an_unknown_label_is_refused(
    capsys, replayed: tuple[Path, Path], tmp_path: Path
) -> None:
    drive, out = replayed
    bad = tmp_path / "bad.mcap"
    shutil.copyfile(drive, bad)
    lines = ground_truth_path(drive).read_text().splitlines()
    doc = json.loads(lines[0])
    doc["boxes"][0]["label"] = "Dragon"
    lines[0] = json.dumps(doc)
    ground_truth_path(bad).write_text("\n".join(lines) + "\n")
    err = _fails(capsys, "eval", "--tracks", str(out), "--drive", str(bad))
    assert err.startswith(
        f"perception eval: error: {ground_truth_path(bad)}:1: object {doc['boxes'][0]['id']}: "
        "unknown label 'Dragon' (known: Barrier, Bicycle, Bus, Car, "
    )


def test_tracks_of_another_synthetic_drive_are_refused(
    capsys, replayed: tuple[Path, Path], synth_drive: Callable[[int, float], Path]
) -> None:
    """Synthetic drives share their stamps: the tracks of seed 1 were scored against the
    ground truth of seed 2 without a word. The replay names the world it replayed."""
    _, out = replayed
    other = synth_drive(2, 1.0)
    err = _fails(capsys, "eval", "--tracks", str(out), "--drive", str(other))
    assert err == (
        f"perception eval: error: {out}: replayed from seed1_2s.mcap (synthetic: scene simple, "
        f"seed 1, lidar synth64, seconds 2), not from {other} (scene simple, seed 2, lidar "
        "synth64, seconds 1): score the tracks against the drive replayed"
    )


def test_tracks_of_a_drive_of_the_same_seed_and_another_length_are_refused(
    capsys, replayed: tuple[Path, Path], synth_drive: Callable[[int, float], Path]
) -> None:
    """Its road users are spread over the drive: seed 1 at 1 s is another world than seed 1
    at 2 s from the first sweep, and was scored against it (a MOTA of -1.4) without a word."""
    _, out = replayed
    shorter = synth_drive(1, 1.0)
    err = _fails(capsys, "eval", "--tracks", str(out), "--drive", str(shorter))
    assert err.endswith(
        f"not from {shorter} (scene simple, seed 1, lidar synth64, seconds 1): score the "
        "tracks against the drive replayed"
    )


def test_tracks_of_a_drive_of_another_name_are_warned_about(
    capsys, replayed: tuple[Path, Path], tmp_path: Path
) -> None:
    """A drive written before drives named their world: the worlds cannot be compared, but
    the replay names the drive it replayed."""
    from replay.drive import DriveReader, DriveWriter

    drive, out = replayed
    old = tmp_path / "old.mcap"
    reader = DriveReader(drive)
    with DriveWriter(old, rig=reader.rig) as writer:
        for rec in reader.messages():
            if rec.topic != "rig":
                writer.write(rec.message, rec.log_time_ns, rec.topic)
    shutil.copyfile(ground_truth_path(drive), ground_truth_path(old))
    assert main(["eval", "--tracks", str(out), "--drive", str(old)]) == 0
    captured = capsys.readouterr()
    assert "20 frames scored" in captured.out
    assert captured.err.splitlines() == [
        f"perception eval: warning: {out}: replayed from seed1_2s.mcap, scored against {old}, "
        "and their synthetic worlds cannot be compared (not both drives name theirs): is it "
        "the drive replayed?"
    ]
    # The same drive under another name, each naming its world: compared, not warned about.
    copy = tmp_path / "copy.mcap"
    shutil.copyfile(drive, copy)
    shutil.copyfile(ground_truth_path(drive), ground_truth_path(copy))
    assert main(["eval", "--tracks", str(out), "--drive", str(copy)]) == 0
    assert capsys.readouterr().err == ""


def test_an_empty_ground_truth_file_beside_the_drive_does_not_hide_its_channel(
    capsys, replayed: tuple[Path, Path], tmp_path: Path
) -> None:
    """An empty `.gt.jsonl` beside a drive with a ground-truth channel was read as the whole
    ground truth, and the error said the drive had neither."""
    drive, out = replayed
    copy = tmp_path / "copy.mcap"
    shutil.copyfile(drive, copy)
    ground_truth_path(copy).write_text("")
    assert main(["eval", "--tracks", str(out), "--drive", str(copy)]) == 0
    assert "20 frames scored" in capsys.readouterr().out
