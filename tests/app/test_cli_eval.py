"""`perception eval DETECTIONS --kitti DIR --reference DIR`: the mistakes of its inputs, each one
line on stderr and exit 2, on real KITTI frames with a run written here (no detector needed),
and runs that are not, or might not be, of the folder: real replays of the folder and of a
synthetic drive."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from app.cli import main
from perception.msgs.jsonl import read_jsonl, write_jsonl_line
from perception.msgs.types import Detection3D, DetectionList, Header
from tests.app.one_line import fails as _fails
from tests.conftest import copy_kitti_frames

FRAMES = ("000000", "000003")
# The pedestrian labelled in frame 000000, in the Velodyne frame (as the fusion finds it).
PEDESTRIAN = Detection3D("Pedestrian", 0.82, (8.85, -1.79, -0.72), (0.8, 0.67, 1.83), -1.58)


@pytest.fixture(scope="module")
def kitti(kitti_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A KITTI object folder of two real frames, with the label of frame 000000."""
    folder = tmp_path_factory.mktemp("eval") / "kitti"
    return copy_kitti_frames(kitti_dir, folder, FRAMES, labels=["000000"])


def _frame(seq: int) -> DetectionList:
    detections = (PEDESTRIAN,) if seq == 0 else ()
    return DetectionList(Header("detections", seq, seq * 3_000_000_000, "vehicle"), detections)


def _run(path: Path, lists: list[DetectionList], *, blank_after: int | None = None) -> Path:
    with path.open("w", encoding="utf-8") as f:
        for i, dl in enumerate(lists):
            write_jsonl_line(f, dl)
            if i == blank_after:
                f.write("\n")
    return path


def _eval(capsys: pytest.CaptureFixture[str], run: Path, kitti: Path, refs: Path) -> str:
    return _fails(capsys, "eval", str(run), "--kitti", str(kitti), "--reference", str(refs))


def test_a_run_is_scored_against_the_labels(capsys, kitti: Path, tmp_path: Path) -> None:
    run = _run(tmp_path / "run.jsonl", [_frame(0), _frame(1)])
    assert (
        main(["eval", str(run), "--kitti", str(kitti), "--reference", str(kitti / "label_2")]) == 0
    )
    out = capsys.readouterr().out
    assert "all 1 frames" in out
    ped = next(line for line in out.splitlines()[::-1] if line.startswith("Pedestrian"))
    assert ped.split()[1:4] == ["1", "0", "0"]  # TP FN FP


def test_a_frame_twice_is_refused(capsys, kitti: Path, tmp_path: Path) -> None:
    run = _run(tmp_path / "dup.jsonl", [_frame(0), _frame(0), _frame(1)])
    err = _eval(capsys, run, kitti, kitti / "label_2")
    assert err == (
        f"perception eval: error: {run}:2: frame header.seq 0 again (first on line 1); a run "
        "holds one DetectionList per frame"
    )
    # Blank lines are not records, but they count as lines.
    run = _run(tmp_path / "dup2.jsonl", [_frame(0), _frame(1), _frame(1)], blank_after=0)
    err = _eval(capsys, run, kitti, kitti / "label_2")
    assert err.startswith(f"perception eval: error: {run}:4: frame header.seq 1 again (first on ")
    assert "line 3)" in err
    # Another seq with the stamp of a frame already in the run: the same sweep.
    again = DetectionList(Header("detections", 5, 0, "vehicle"), ())
    run = _run(tmp_path / "dup3.jsonl", [_frame(0), again])
    err = _eval(capsys, run, kitti, kitti / "label_2")
    assert err.startswith(f"perception eval: error: {run}:2: frame header.stamp_ns 0 again")


def test_an_empty_run_is_blamed_not_the_references(capsys, kitti: Path, tmp_path: Path) -> None:
    run = tmp_path / "empty.jsonl"
    run.write_text("")
    err = _eval(capsys, run, kitti, kitti / "label_2")
    assert err == f"perception eval: error: {run}: the run holds no DetectionLists"
    run.write_text("\n\n")
    assert _eval(capsys, run, kitti, kitti / "label_2") == err


def _references(tmp_path: Path, text: str) -> Path:
    refs = tmp_path / "refs"
    refs.mkdir(exist_ok=True)
    (refs / "000000.txt").write_text(text)
    return refs


LABEL = "Pedestrian 0.00 0 -0.20 712.40 143.00 810.73 307.92 {h} 0.48 1.20 {x} 1.47 8.41 0.01\n"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (LABEL.format(h="1.89", x="nan"), "1: x nan is not finite"),
        (LABEL.format(h="1.89", x="inf"), "1: x inf is not finite"),
        (LABEL.format(h="-1.89", x="1.84"), "1: h -1.89 is negative (a box size, m)"),
        (LABEL.format(h="1.89", x="1.84") + LABEL.format(h="1.89", x="abc"),
         "2: x 'abc' is not a number"),
        ("Dragon" + LABEL.format(h="1.89", x="1.84")[10:],
         "1: unknown object type 'Dragon' (KITTI's: Car, Van, Truck, Pedestrian, "),
        ("1 2 3 4 5 6 0.1 0 0.9\n1 2 3 4 5 6 0.1 0 5\n", "2: score 5 is outside [0, 1]"),
        ("1 2 3 4 5 6 0.1 0 -0.1\n", "1: score -0.1 is outside [0, 1]"),
        ("1 2 3 4 5 6 nan 0 0.9\n", "1: yaw nan is not finite"),
        ("1 2 3 4 5 6 0.1 nan 0.9\n", "1: class_id nan is not finite"),
        ("1 2 3 4 5 6 0.1 7 0.9\n",
         "1: unknown class id 7 (known: 0 Car, 1 Pedestrian, 2 Cyclist)"),
        ("1 2 3 -4 5 6 0.1 0 0.9\n", "1: dx -4 is negative (a box size, m)"),
    ],
)  # fmt: skip
def test_bad_reference_values_are_refused(
    capsys, kitti: Path, tmp_path: Path, text: str, problem: str
) -> None:
    run = _run(tmp_path / "run.jsonl", [_frame(0), _frame(1)])
    refs = _references(tmp_path, text)
    err = _eval(capsys, run, kitti, refs)
    # The format's own reader's words (a line's first field tells the format), nothing else.
    assert err.startswith(f"perception eval: error: {refs / '000000.txt'}:{problem}")
    assert "expected 15 values" not in err and "neither" not in err


@pytest.fixture(scope="module")
def kitti_replay(
    kitti: Path, yolox_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> list[DetectionList]:
    """The DetectionLists of `perception replay kitti-object` of `kitti` (its two frames)."""
    run = tmp_path_factory.mktemp("eval-kitti-replay") / "run.jsonl"
    argv = ["replay", "kitti-object", str(kitti), "--out", str(run), "--model", str(yolox_path)]
    assert main([*argv, "--quiet"]) == 0
    return list(read_jsonl(run))


@pytest.fixture(scope="module")
def drive_replay(
    synth_drive: Callable[[int, float], Path], tmp_path_factory: pytest.TempPathFactory
) -> list[DetectionList]:
    """The DetectionLists of `perception replay` of a 1 s synthetic drive (10 sweeps, seq 0-9,
    as the demo drive's 100)."""
    run = tmp_path_factory.mktemp("eval-drive-replay") / "run.jsonl"
    assert main(["replay", str(synth_drive(0, 1.0)), "--out", str(run), "--quiet"]) == 0
    return list(read_jsonl(run))


def _eval_warnings(capsys: pytest.CaptureFixture[str], run: Path, kitti: Path) -> list[str]:
    """Evaluates `run` against `kitti`'s labels, expecting a report; the lines on stderr."""
    argv = ["eval", str(run), "--kitti", str(kitti), "--reference", str(kitti / "label_2")]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "all 1 frames" in captured.out
    return captured.err.splitlines()


def test_a_replay_of_the_folder_is_scored_without_a_warning(
    capsys, kitti: Path, kitti_replay: list[DetectionList], tmp_path: Path
) -> None:
    assert [dl.header.seq for dl in kitti_replay] == [0, 1]
    run = _run(tmp_path / "run.jsonl", kitti_replay)
    assert _eval_warnings(capsys, run, kitti) == []


def test_a_run_of_another_source_is_refused(
    capsys, kitti: Path, drive_replay: list[DetectionList], tmp_path: Path
) -> None:
    """A replay of a drive has a DetectionList per sweep: more than the folder has frames, or
    seqs past its frames, cannot be a replay of it. It was scored on the frames its seqs
    named."""
    run = _run(tmp_path / "drive.jsonl", drive_replay)
    err = _eval(capsys, run, kitti, kitti / "label_2")
    assert err == (
        f"perception eval: error: {run}: 10 DetectionLists, but {kitti} holds 2 frames (a "
        "replay of it writes one per frame): was the run replayed from another source?"
    )
    run = _run(tmp_path / "part.jsonl", drive_replay[3:5])
    err = _eval(capsys, run, kitti, kitti / "label_2")
    assert err == (
        f"perception eval: error: {run}: header.seq 3 has no frame in {kitti} (frames 0 to 1): "
        "was the run replayed from another source?"
    )


def test_a_run_that_might_be_of_another_source_is_warned_about(
    capsys, kitti: Path, drive_replay: list[DetectionList], tmp_path: Path
) -> None:
    """A drive's first lists, seq 0 and 1, could name the folder's frames, but a replay of a
    KITTI folder stamps frame i at i periods from 0, a drive's sweeps at their recorded time.
    Not refused: a live run of the folder (`play kitti-object`) is stamped by the clock."""
    run = _run(tmp_path / "drive.jsonl", drive_replay[:2])
    stamp_ns = drive_replay[0].header.stamp_ns
    assert _eval_warnings(capsys, run, kitti) == [
        f"perception eval: warning: {run}: header.seq 0 has stamp_ns {stamp_ns}, which a "
        "replay of a KITTI folder does not give (frame i at i periods from 0): a run of "
        "another source, or a replay that lost a frame? Its DetectionLists are paired with "
        f"the frames of {kitti} by header.seq"
    ]


def test_a_replay_that_lost_a_frame_is_warned_about(
    capsys, kitti: Path, kitti_replay: list[DetectionList], tmp_path: Path
) -> None:
    """The node numbers its DetectionLists, not the frames: when a frame's sweep gives none (a
    failed step), the next frame's takes its seq, and is paired with the wrong frame. Its
    stamp is still its frame's."""
    second = kitti_replay[1]
    lost = replace(second, header=replace(second.header, seq=0))
    run = _run(tmp_path / "lost.jsonl", [lost])
    warnings = _eval_warnings(capsys, run, kitti)
    assert warnings == [
        f"perception eval: warning: {run}: header.seq 0 has stamp_ns {second.header.stamp_ns}, "
        "which a replay of a KITTI folder does not give (frame i at i periods from 0): a run "
        "of another source, or a replay that lost a frame? Its DetectionLists are paired with "
        f"the frames of {kitti} by header.seq",
        f"perception eval: warning: {run}: no DetectionList for 1 of the 2 frames of {kitti} "
        "(000003): their references are not scored",
    ]


def test_references_that_are_no_files_are_named(capsys, kitti: Path, tmp_path: Path) -> None:
    """A reference folder given as a file was "does not exist"; a frame's reference file that
    is a folder or a pipe left its frame unscored without a word."""
    run = _run(tmp_path / "run.jsonl", [_frame(0), _frame(1)])
    err = _eval(capsys, run, kitti, run)
    assert err == f"perception eval: error: {run}: reference folder is not a folder"
    refs = tmp_path / "refs"
    refs.mkdir()
    shutil.copy(kitti / "label_2" / "000000.txt", refs)
    (refs / "000003.txt").mkdir()
    err = _eval(capsys, run, kitti, refs)
    assert err == (
        f"perception eval: error: {refs / '000003.txt'}: not a regular file (a folder, device "
        "or pipe), so no references of frame 000003"
    )
    (refs / "000003.txt").rmdir()
    os.mkfifo(refs / "000003.txt")
    assert _eval(capsys, run, kitti, refs) == err
