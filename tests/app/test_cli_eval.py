"""`perception eval DETECTIONS --kitti DIR --reference DIR`: the mistakes of its inputs, each one
line on stderr and exit 2, on real KITTI frames with a run written here (no detector needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.cli import main
from perception.msgs.jsonl import write_jsonl_line
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
