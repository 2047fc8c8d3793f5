"""`perception show` and `perception replay --show`: a picture per frame and an index page of
scores, from real replays of KITTI frames and of a synthetic drive with ground truth; each
mistake one line on stderr, exit 2."""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import signal
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from app.cli import main
from perception.msgs.jsonl import read_jsonl
from perception.msgs.types import CameraFrame
from replay.datasets.kitti_eval import evaluate_kitti_run
from replay.drive import DriveReader, DriveWriter
from replay.output import OutputError
from replay.pictures import CAMERA_BOX_BGR, REFERENCE_BGR, class_colour, write_picture
from replay.show import show_kitti
from replay.synth.world import ground_truth_path
from tests.app.one_line import fails as _fails
from tests.conftest import copy_kitti_frames
from tests.replay.damage import damage_chunk, summary_of

FRAMES = ("000000", "000003", "000004")


@pytest.fixture(scope="module")
def kitti_run(
    kitti_dir: Path, yolox_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path, Path]:
    """(a KITTI object folder of three real frames, its replay, the replay's --show folder)."""
    root = tmp_path_factory.mktemp("kitti-show")
    folder = copy_kitti_frames(kitti_dir, root / "kitti", FRAMES, labels=["000000"])
    run, shown = root / "run.jsonl", root / "replay-show"
    argv = ["replay", "kitti-object", str(folder), "--out", str(run), "--model", str(yolox_path)]
    assert main([*argv, "--show", str(shown), "--quiet"]) == 0
    return folder, run, shown


@pytest.fixture(scope="module")
def drive_run(
    synth_drive: Callable[[int, float], Path], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path, Path]:
    """(a 1 s synthetic drive with ground truth, its replay, the replay's --show folder)."""
    drive = synth_drive(2, 1.0)
    root = tmp_path_factory.mktemp("drive-show")
    run, shown = root / "run.jsonl", root / "replay-show"
    assert main(["replay", str(drive), "--out", str(run), "--show", str(shown), "--quiet"]) == 0
    return drive, run, shown


def _picture(path: Path) -> npt.NDArray[np.uint8]:
    picture = cv2.imread(str(path))
    assert picture is not None, path
    # Title row, the enlarged 500 px camera image and view, the legend.
    assert picture.shape[0] > 500 and picture.shape[1] > 1800
    assert picture.std() > 20  # not blank
    return np.asarray(picture, np.uint8)


def _pixels(picture: npt.NDArray[np.uint8], colour: tuple[int, int, int]) -> int:
    """Pixels of exactly `colour` in the bird's-eye view (its dark ground and grey points have
    none of the box colours)."""
    bev = picture[30:520, -480:]
    return int(np.count_nonzero(np.all(bev == colour, axis=2)))


def _rows(index: Path) -> list[str]:
    return re.findall(r"<tr><td>.*?</tr>", index.read_text())


def _same_files(a: Path, b: Path) -> None:
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir())
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_show_of_kitti_frames_draws_every_frame_and_lists_its_scores(
    capsys, kitti_run: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    folder, run, shown = kitti_run
    out = tmp_path / "show"
    assert main(["show", str(run), "--kitti", str(folder), "--out", str(out), "--quiet"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"perception show: 3 pictures and {out / 'index.html'} written")
    # `replay --show` wrote the same pictures and page.
    _same_files(out, shown)
    assert sorted(p.name for p in out.glob("*.png")) == [f"{f}.png" for f in FRAMES]
    rows = _rows(out / "index.html")
    assert len(rows) == 3
    for frame, row in zip(FRAMES, rows, strict=True):
        assert f'<a href="{frame}.png">{frame}</a>' in row and f'<img src="{frame}.png"' in row
    # label_2 has only frame 000000 (a pedestrian, found): the others are unscored.
    assert "Pedestrian 1/1" in rows[0] and "no references" in rows[1]
    picture = _picture(out / "000000.png")
    assert _pixels(picture, REFERENCE_BGR) > 20
    assert _pixels(picture, class_colour("Pedestrian")) > 20


def test_show_of_kitti_frames_with_reference_boxes_scores_as_eval(
    capsys, kitti_run: tuple[Path, Path, Path], tmp_path: Path, reference_dir: Path
) -> None:
    folder, run, _ = kitti_run
    out = tmp_path / "show"
    argv = ["show", str(run), "--kitti", str(folder), "--reference", str(reference_dir)]
    assert main([*argv, "--out", str(out), "--quiet"]) == 0
    merged, _ = evaluate_kitti_run(run, folder, reference_dir)
    tp, fn, fp = len(merged.matches), len(merged.missed), len(merged.false_positives)
    assert f"(all frames: matched {tp}, missed {fn}, false {fp};" in capsys.readouterr().out
    page = (out / "index.html").read_text()
    total = re.search(r'<tr class="total">(.*?)</tr>', page)
    assert total is not None
    cells = re.findall(r"<td>(.*?)</td>", total.group(1))
    assert cells[2:5] == [str(tp), str(fn), str(fp)]
    # Frame 000003: two reference cars, both found.
    picture = _picture(out / "000003.png")
    assert _pixels(picture, REFERENCE_BGR) > 20
    assert _pixels(picture, class_colour("Car")) > 20


def test_show_of_a_synthetic_drive_draws_its_ground_truth(
    capsys, drive_run: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    drive, run, shown = drive_run
    lists = list(read_jsonl(run))
    out = tmp_path / "show"
    assert main(["show", str(run), "--drive", str(drive), "--out", str(out), "--quiet"]) == 0
    assert f"perception show: {len(lists)} pictures" in capsys.readouterr().out
    _same_files(out, shown)
    rows = _rows(out / "index.html")
    assert len(rows) == len(lists) == len(list(out.glob("*.png")))
    for i, row in enumerate(rows):
        assert f'<a href="{i:05d}.png">sweep {i}</a>' in row
        assert "recall" not in row and "no references" not in row  # scored: numbers
    page = (out / "index.html").read_text()
    assert "ground truth of" in page
    picture = _picture(out / f"{len(lists) - 1:05d}.png")
    assert _pixels(picture, REFERENCE_BGR) > 20
    assert _pixels(picture, class_colour("Car")) > 20


def test_show_of_a_damaged_drive_draws_the_frames_it_still_holds(
    capsys, drive_run: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    """A chunk whose bytes are damaged costs the pictures of the frames it held, not the run.
    (The ground truth is a reference, not a recording: read from beside the drive here; a
    damaged ground-truth channel still refuses, so that no frame is scored without it.)"""
    drive, run, _shown = drive_run
    damaged = tmp_path / drive.name
    damage_chunk(drive, len(summary_of(drive).chunk_indexes) // 2, damaged)
    truth = DriveReader(drive).ground_truth()
    ground_truth_path(damaged).write_text("".join(json.dumps(doc) + "\n" for doc in truth))
    lists = list(read_jsonl(run))
    out = tmp_path / "show"
    assert main(["show", str(run), "--drive", str(damaged), "--out", str(out), "--quiet"]) == 0
    drawn = len(list(out.glob("*.png")))
    assert f"perception show: {drawn} pictures" in capsys.readouterr().out
    assert len(lists) - 2 <= drawn < len(lists)


# -- mistakes ----------------------------------------------------------------------------------


def test_a_missing_run(capsys, tmp_path: Path, kitti_dir: Path) -> None:
    run = tmp_path / "nope.jsonl"
    err = _fails(capsys, "show", str(run), "--kitti", str(kitti_dir), "--out", str(tmp_path))
    assert err == (
        f"perception show: error: {run}: no such run (JSON Lines from `perception replay`)"
    )


def test_a_run_that_is_not_json_lines(capsys, tmp_path: Path, kitti_dir: Path) -> None:
    binary = tmp_path / "run.jsonl"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    err = _fails(capsys, "show", str(binary), "--kitti", str(kitti_dir))
    assert err.startswith(f"perception show: error: {binary}:1: not UTF-8 text")
    text = tmp_path / "notes.txt"
    text.write_text("not a detection list\n")
    err = _fails(capsys, "show", str(text), "--kitti", str(kitti_dir))
    assert err.startswith(f"perception show: error: {text}:1:")
    drive = tmp_path / "run.mcap"
    drive.write_bytes(b"\x89MCAP0\r\n")
    err = _fails(capsys, "show", str(drive), "--kitti", str(kitti_dir))
    assert err.startswith(f"perception show: error: {drive}: is an MCAP file;")
    assert not (Path.cwd() / "perception-show").exists()


def test_kitti_and_drive_are_one_or_the_other(
    capsys, kitti_run: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    folder, run, _ = kitti_run
    expected = (
        "perception show: error: give the run's source: --kitti DIR (a KITTI object folder) or "
        "--drive DRIVE.mcap, one of the two"
    )
    drive = tmp_path / "d.mcap"
    drive.write_bytes(b"")
    assert _fails(capsys, "show", str(run), "--kitti", str(folder), "--drive", str(drive)) == (
        expected
    )
    assert _fails(capsys, "show", str(run), "--out", str(tmp_path / "o")) == expected
    err = _fails(capsys, "show", str(run), "--drive", str(drive), "--reference", str(folder))
    assert "--reference goes with --kitti" in err
    assert not (tmp_path / "o").exists()


def test_a_run_of_other_frames(capsys, kitti_run: tuple[Path, Path, Path], tmp_path: Path) -> None:
    folder, run, _ = kitti_run
    few = tmp_path / "few"
    shutil.copytree(folder, few)
    for sub, ext in (("image_2", "png"), ("velodyne_reduced", "bin"), ("calib", "txt")):
        (few / sub / f"000004.{ext}").unlink()
    err = _fails(capsys, "show", str(run), "--kitti", str(few), "--out", str(tmp_path / "o"))
    assert err.startswith(f"perception show: error: {run}: 3 DetectionLists, but {few} holds 2")


def test_replay_show_needs_one_source(capsys, tmp_path: Path, kitti_dir: Path) -> None:
    err = _fails(
        capsys,
        "replay", "kitti-object", str(kitti_dir), "--out-dir", str(tmp_path / "many"), "--show",
        str(tmp_path / "pictures"),
    )  # fmt: skip
    assert err == (
        "perception replay: error: --show goes with --out (one source), not with --out-dir"
    )
    file = tmp_path / "a-file"
    file.write_text("")
    err = _fails(
        capsys,
        "replay", "kitti-object", str(kitti_dir), "--out", str(tmp_path / "o.jsonl"), "--show",
        str(file),
    )  # fmt: skip
    assert err.startswith(f"perception replay: error: {file}: is a file")
    assert not (tmp_path / "o.jsonl").exists()


def test_pictures_never_go_into_an_input_folder(
    capsys, kitti_run: tuple[Path, Path, Path], tmp_path: Path, reference_dir: Path
) -> None:
    folder, run, _ = kitti_run
    images = {p.name: p.read_bytes() for p in (folder / "image_2").iterdir()}
    link = tmp_path / "link"
    link.symlink_to(folder / "image_2")
    for out in (folder / "image_2", link, folder / "velodyne_reduced", folder):
        err = _fails(capsys, "show", str(run), "--kitti", str(folder), "--out", str(out))
        also = "" if out != link else f" ({folder / 'image_2'})"
        assert err == (
            f"perception show: error: {out}: is an input folder{also}; --out must be another "
            "folder, not one the frames are read from"
        )
    argv = ["show", str(run), "--kitti", str(folder), "--reference", str(reference_dir)]
    err = _fails(capsys, *argv, "--out", str(reference_dir))
    assert err.startswith(f"perception show: error: {reference_dir}: is an input folder;")
    assert {p.name: p.read_bytes() for p in (folder / "image_2").iterdir()} == images
    assert not list(reference_dir.glob("*.png"))
    # `replay --show` draws through the same library call, and refuses before replaying.
    with pytest.raises(OutputError, match="is an input folder"):
        show_kitti(list(read_jsonl(run)), folder, folder / "image_2")
    out = tmp_path / "o.jsonl"
    err = _fails(capsys, "replay", "kitti-object", str(folder), "--out", str(out), "--show",
                 str(folder / "image_2"))  # fmt: skip
    assert err == (
        f"perception replay: error: {folder / 'image_2'}: is an input folder; --show must be "
        "another folder, not one the frames are read from"
    )
    assert not out.exists()
    assert {p.name: p.read_bytes() for p in (folder / "image_2").iterdir()} == images


def test_a_run_with_a_frame_twice_is_refused(
    capsys, kitti_run: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    folder, run, _ = kitti_run
    lines = run.read_text().splitlines(keepends=True)
    dup = tmp_path / "dup.jsonl"
    dup.write_text(lines[0] + "".join(lines))
    out = tmp_path / "o"
    err = _fails(capsys, "show", str(dup), "--kitti", str(folder), "--out", str(out))
    assert err == (
        f"perception show: error: {dup}:2: frame header.seq 0 again (first on line 1); a run "
        "holds one DetectionList per frame"
    )
    assert not out.exists()


def test_a_drive_with_impossible_ground_truth(
    capsys, drive_run: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    drive, run, _ = drive_run
    bad = tmp_path / "bad.mcap"
    shutil.copyfile(drive, bad)
    lines = ground_truth_path(drive).read_text().splitlines()
    doc = json.loads(lines[1])
    doc["boxes"][0]["center"][0] = float("nan")
    lines[1] = json.dumps(doc)
    ground_truth_path(bad).write_text("\n".join(lines) + "\n")
    out = tmp_path / "o"
    err = _fails(capsys, "show", str(run), "--drive", str(bad), "--out", str(out))
    box = doc["boxes"][0]
    assert err.startswith(
        f"perception show: error: {ground_truth_path(bad)}:2: object {box['id']} "
        f"({box['label']}): center [nan, "
    )
    assert not out.exists()


def test_replay_show_refuses_impossible_ground_truth_before_the_replay(
    capsys, drive_run: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    """The ground truth was read by the drawing alone, after the whole replay: one line,
    exit 2, and the replay's minutes lost. It is read before the replay starts."""
    drive, _, _ = drive_run
    bad = tmp_path / "bad.mcap"
    shutil.copyfile(drive, bad)
    lines = ground_truth_path(drive).read_text().splitlines()
    doc = json.loads(lines[-1])
    doc["boxes"][0]["size"][1] = -1.0
    lines[-1] = json.dumps(doc)
    ground_truth_path(bad).write_text("\n".join(lines) + "\n")
    out, shown = tmp_path / "o.jsonl", tmp_path / "pictures"
    err = _fails(capsys, "replay", str(bad), "--out", str(out), "--show", str(shown), "--quiet")
    box = doc["boxes"][0]
    assert err.startswith(
        f"perception replay: error: {ground_truth_path(bad)}:{len(lines)}: object {box['id']} "
        f"({box['label']}): size ["
    )
    assert not out.exists()  # not replayed
    assert not shown.exists()


def test_a_broken_label_file_is_refused_before_any_picture(
    capsys, kitti_run: tuple[Path, Path, Path], kitti_dir: Path, yolox_path: Path, tmp_path: Path
) -> None:
    """A malformed label file of the third frame was found when that frame was drawn: after
    the whole replay (`replay --show`), and with two pictures and no page left behind. Both
    commands read the labels before the first picture, and `replay --show` before the replay;
    the line names the file, line and field."""
    _, run, _ = kitti_run
    folder = copy_kitti_frames(kitti_dir, tmp_path / "kitti", FRAMES, labels=["000000"])
    label = folder / "label_2" / "000004.txt"
    label.write_text(
        "Car 0.00 0 -1.57 599.41 156.40 629.75 189.25 1.73 1.68 3.97 2.18 1.80 13.28 -1.56\n"
        "Car 0.00 0 -1.5 100 100 200 200 1.5 1.6 long 1.0 1.5 20.0 0.0\n"
    )
    expected = f"{label}:2: l 'long' is not a number"
    shown = tmp_path / "pictures"
    err = _fails(capsys, "show", str(run), "--kitti", str(folder), "--out", str(shown))
    assert err == f"perception show: error: {expected}"
    assert not shown.exists()
    out = tmp_path / "o.jsonl"
    err = _fails(capsys, "replay", "kitti-object", str(folder), "--out", str(out), "--show",
                 str(shown), "--model", str(yolox_path), "--quiet")  # fmt: skip
    assert err == f"perception replay: error: {expected}"
    assert not out.exists()  # not replayed
    assert not shown.exists()


# -- drawings that stop ------------------------------------------------------------------------


def _stop_at(monkeypatch: pytest.MonkeyPatch, picture: int, stop: Callable[[], None]) -> None:
    """Makes the drawing stop (`stop()`) as it is about to write its `picture`th picture."""
    count = itertools.count(1)

    def write(path: Path, image: npt.NDArray[np.uint8], what: str = "the picture") -> None:
        if next(count) == picture:
            stop()
        write_picture(path, image, what)

    monkeypatch.setattr("replay.show.write_picture", write)


def _partial_line(index: Path) -> str:
    """The page's first line of text (after its title), which says it is partial and why."""
    page = index.read_text()
    found = re.search(r'<body>\s*<p class="partial">(.*?)</p>\s*<h1>', page)
    assert found is not None, page[:600]
    return found.group(1)


@pytest.fixture
def default_sigint() -> Iterator[None]:
    """SIGINT raising KeyboardInterrupt, as in a command a shell starts: an xdist worker
    ignores it, and a SIGINT the test raised then did nothing."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


@pytest.fixture(
    params=[(signal.SIGINT, "interrupted"), (signal.SIGTERM, "terminated")],
    ids=["SIGINT", "SIGTERM"],
)
def signal_at_third_picture(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, default_sigint: None
) -> tuple[int, str]:
    """A signal sent to the process as the drawing is about to write its third picture: (the
    signal, the word the CLI ends with)."""
    signum, said = request.param
    _stop_at(monkeypatch, 3, lambda: signal.raise_signal(signum))
    return int(signum), str(said)


def test_an_interrupted_replay_show_leaves_a_page_of_the_pictures_drawn(
    capsys,
    kitti_run: tuple[Path, Path, Path],
    yolox_path: Path,
    tmp_path: Path,
    signal_at_third_picture: tuple[int, str],
) -> None:
    """A `--show` interrupted (Ctrl-C, or SIGTERM from `timeout` or systemd) while drawing
    left the pictures drawn without index.html: pictures and no page."""
    folder, _, _ = kitti_run
    signum, said = signal_at_third_picture
    out, shown = tmp_path / "o.jsonl", tmp_path / "pictures"
    argv = ["replay", "kitti-object", str(folder), "--out", str(out), "--model", str(yolox_path)]
    assert main([*argv, "--show", str(shown), "--quiet"]) == 128 + signum
    assert capsys.readouterr().err == f"perception replay: {said}\n"
    # Only the two pictures and the page: no temporary left of it (written atomically).
    assert sorted(p.name for p in shown.iterdir()) == ["000000.png", "000003.png", "index.html"]
    index = shown / "index.html"
    assert _partial_line(index) == "Partial: 2 of 3 frames drawn; the drawing stopped: interrupted."
    assert "(partial)</title>" in index.read_text()
    rows = _rows(index)
    assert len(rows) == 2
    assert '<a href="000000.png">' in rows[0] and '<a href="000003.png">' in rows[1]
    assert "Pedestrian 1/1" in rows[0]  # scored as a complete page scores it


def test_an_interrupted_show_of_a_drive_leaves_a_page_of_the_pictures_drawn(
    capsys,
    drive_run: tuple[Path, Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    default_sigint: None,
) -> None:
    drive, run, _ = drive_run
    n = len(list(read_jsonl(run)))
    _stop_at(monkeypatch, 4, lambda: signal.raise_signal(signal.SIGINT))
    out = tmp_path / "show"
    assert main(["show", str(run), "--drive", str(drive), "--out", str(out), "--quiet"]) == 130
    assert capsys.readouterr().err == "perception show: interrupted\n"
    assert sorted(p.name for p in out.iterdir()) == [*(f"{i:05d}.png" for i in range(3)),
                                                     "index.html"]  # fmt: skip
    index = out / "index.html"
    assert _partial_line(index) == (
        f"Partial: 3 of {n} frames drawn; the drawing stopped: interrupted."
    )
    assert len(_rows(index)) == 3
    # What was drawn, not "DetectionLists of the run with no frame in the source".
    assert "have no frame in the source" not in index.read_text()


def _cut_image(folder: Path, tmp_path: Path, frame: str) -> tuple[Path, Path]:
    """A copy of the KITTI `folder` whose image of `frame` is cut short (unreadable): the
    copy and that image."""
    broken = tmp_path / "kitti"
    shutil.copytree(folder, broken)
    image = broken / "image_2" / f"{frame}.png"
    image.write_bytes(image.read_bytes()[:1000])
    return broken, image


def test_a_show_that_fails_after_some_pictures_leaves_a_page_saying_why(
    capsys, kitti_run: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    """A frame whose image is broken ended the drawing (one line, exit 2) with the earlier
    frames' pictures and no page."""
    folder, run, _ = kitti_run
    broken, image = _cut_image(folder, tmp_path, "000004")
    out = tmp_path / "show"
    err = _fails(capsys, "show", str(run), "--kitti", str(broken), "--out", str(out))
    assert err.startswith(f"perception show: error: {image}: ")
    why = err.removeprefix("perception show: error: ")
    assert sorted(p.name for p in out.iterdir()) == ["000000.png", "000003.png", "index.html"]
    index = out / "index.html"
    assert _partial_line(index) == (f"Partial: 2 of 3 frames drawn; the drawing stopped: {why}.")
    assert len(_rows(index)) == 2


def test_a_show_that_fails_at_its_first_picture_leaves_no_folder(
    capsys, kitti_run: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    """An unreadable first image left the --out folder made for the pictures, empty."""
    folder, run, _ = kitti_run
    broken, image = _cut_image(folder, tmp_path, "000000")
    out = tmp_path / "new" / "show"
    err = _fails(capsys, "show", str(run), "--kitti", str(broken), "--out", str(out))
    assert err.startswith(f"perception show: error: {image}: ")
    assert not (tmp_path / "new").exists()


# -- hostile runs, sources and folders ---------------------------------------------------------


def test_the_index_links_frames_whose_names_are_not_url_paths(
    capsys, kitti_run: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    """A KITTI frame is named by its files: "#", "?" or "%" in the name broke the index's links
    (written as HTML, not as URLs), and "javascript:..." ran as a script when clicked."""
    folder, run, _ = kitti_run
    odd = tmp_path / "odd"
    shutil.copytree(folder, odd)
    names = {"000003": "x#1 ?50%", "000004": "javascript:alert(1)"}
    for sub, ext in (("image_2", "png"), ("velodyne_reduced", "bin"), ("calib", "txt")):
        for old, new in names.items():
            (odd / sub / f"{old}.{ext}").rename(odd / sub / f"{new}.{ext}")
    out = tmp_path / "show"
    assert main(["show", str(run), "--kitti", str(odd), "--out", str(out), "--quiet"]) == 0
    capsys.readouterr()
    page = (out / "index.html").read_text()
    links = re.findall(r'(?:href|src)="([^"]*)"', page)
    assert len(links) == 3 * 3
    assert not any(c in link for link in links for c in "#?: ")
    # Each link names its picture's file.
    assert {urllib.parse.unquote(link) for link in links} == {p.name for p in out.glob("*.png")}
    assert ">x#1 ?50%</a>" in page


def test_a_run_path_that_is_not_utf8(
    capsys, kitti_run: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    """The index is titled with the run's path, which on Linux need not be UTF-8: writing the
    page failed (UnicodeEncodeError, "a bug") after every picture was drawn."""
    folder, run, _ = kitti_run
    odd = Path(os.fsdecode(bytes(tmp_path) + b"/run-\xff.jsonl"))
    shutil.copyfile(run, odd)
    out = tmp_path / "show"
    assert main(["show", str(odd), "--kitti", str(folder), "--out", str(out), "--quiet"]) == 0
    assert "3 pictures" in capsys.readouterr().out
    assert "<title>perception show: " in (out / "index.html").read_text()


def test_a_2d_box_of_another_camera_is_not_drawn(
    capsys, kitti_run: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    """A detection's 2D box is in the pixels of the camera it names: one of another camera was
    drawn on this camera's image, where it means nothing."""
    folder, run, _ = kitti_run
    docs = [json.loads(line) for line in run.read_text().splitlines()]
    boxes = [d["camera_box"] for doc in docs for d in doc["detections"] if d["camera_box"]]
    assert boxes
    for box in boxes:
        box["camera"] = "rear"
    rear = tmp_path / "rear.jsonl"
    rear.write_text("".join(json.dumps(doc) + "\n" for doc in docs))
    for name, path in (("front", run), ("rear", rear)):
        out = tmp_path / name
        assert main(["show", str(path), "--kitti", str(folder), "--out", str(out), "--quiet"]) == 0
        capsys.readouterr()
        camera = _picture(out / "000000.png")[26:526, :-506]
        drawn = int(np.count_nonzero(np.all(camera == CAMERA_BOX_BGR, axis=2)))
        assert (drawn > 100) if name == "front" else (drawn == 0), name


def test_a_drive_without_camera_images_says_why_its_pictures_are_black(
    capsys, drive_run: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    """Without the drive's camera frames the sweeps are drawn on a black image (the layout
    kept), which read as a drawing fault: the command's line says so."""
    drive, run, _ = drive_run
    blind = tmp_path / "blind.mcap"
    reader = DriveReader(drive)
    with DriveWriter(blind) as w:
        for rec in reader.messages():
            if not isinstance(rec.message, CameraFrame):
                w.write(rec.message, rec.log_time_ns, rec.topic)
    shutil.copyfile(ground_truth_path(drive), ground_truth_path(blind))
    out = tmp_path / "show"
    assert main(["show", str(run), "--drive", str(blind), "--out", str(out), "--quiet"]) == 0
    n = len(list(read_jsonl(run)))
    line = capsys.readouterr().out
    assert line.startswith(f"perception show: {n} pictures")
    assert f", {n} drawn on black (the drive has no frame of the rig's camera front for them))" in (
        line
    )
    picture = _picture(out / "00000.png")
    assert _pixels(picture, class_colour("Car")) > 20


def test_frames_of_a_camera_the_rig_lacks_are_not_said_to_be_none(
    capsys, drive_run: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    """A drive whose frames are of a camera its rig does not have said "the drive has no
    camera frame": it has, of another camera."""
    drive, run, _ = drive_run
    rear = tmp_path / "rear.mcap"
    reader = DriveReader(drive)
    with DriveWriter(rear) as w:
        for rec in reader.messages():
            msg = rec.message
            if isinstance(msg, CameraFrame):
                header = replace(msg.header, stream="camera/rear", frame_id="camera/rear")
                msg = replace(msg, header=header)
                w.write(msg, rec.log_time_ns, "camera/rear")
            else:
                w.write(msg, rec.log_time_ns, rec.topic)
    shutil.copyfile(ground_truth_path(drive), ground_truth_path(rear))
    out = tmp_path / "show"
    assert main(["show", str(run), "--drive", str(rear), "--out", str(out), "--quiet"]) == 0
    assert "the drive has no frame of the rig's camera front for them" in capsys.readouterr().out


def test_a_rig_sent_again_mid_drive_draws_the_sweeps_after_it(
    capsys, drive_run: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    """The replay uses a rig re-sent mid-drive (a camera re-calibrated) from then on; `show`
    drew every sweep with the drive's first rig. The sweeps after it are now drawn as with a
    drive of that rig from the start, those before as before."""
    from calibration.monitor import Correction, corrected_rig
    from perception.msgs.types import Header, LidarSweep, RigMessage

    drive, run, _ = drive_run
    reader = DriveReader(drive)
    assert reader.rig is not None
    moved = corrected_rig(reader.rig, "front", Correction(translation_m=(0.0, 0.5, 0.3)))
    records = list(reader.messages())
    sweep_stamps = [r.message.header.stamp_ns for r in records if isinstance(r.message, LidarSweep)]
    change_ns = sweep_stamps[4]
    resent, throughout = tmp_path / "resent.mcap", tmp_path / "moved.mcap"
    with DriveWriter(resent) as a, DriveWriter(throughout) as b:
        sent = False
        for rec in records:
            msg = rec.message
            if isinstance(msg, LidarSweep) and msg.header.stamp_ns == change_ns and not sent:
                a.write(RigMessage(Header("rig", 1, change_ns, "vehicle"), moved.to_dict()),
                        rec.log_time_ns, "rig")  # fmt: skip
                sent = True
            a.write(msg, rec.log_time_ns, rec.topic)
            if isinstance(msg, RigMessage):
                msg = replace(msg, rig=moved.to_dict())
            b.write(msg, rec.log_time_ns, rec.topic)
    for copy in (resent, throughout):
        shutil.copyfile(ground_truth_path(drive), ground_truth_path(copy))
    shows = {}
    for name, path in (("first", drive), ("resent", resent), ("moved", throughout)):
        out = tmp_path / f"show-{name}"
        assert main(["show", str(run), "--drive", str(path), "--out", str(out), "--quiet"]) == 0
        shows[name] = out
    capsys.readouterr()
    index = sweep_stamps.index(change_ns)
    for i in (index - 1, index, index + 2):
        resent_png = _picture(shows["resent"] / f"{i:05d}.png")
        same_as = "first" if i < index else "moved"
        other = "moved" if i < index else "first"
        assert np.array_equal(resent_png, _picture(shows[same_as] / f"{i:05d}.png")), i
        assert not np.array_equal(resent_png, _picture(shows[other] / f"{i:05d}.png")), i
