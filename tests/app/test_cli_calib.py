from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from app.cli import main
from replay.drive import DriveWriter


def test_calib_show(capsys, kitti_dir: Path) -> None:
    assert main(["calib", "show", str(kitti_dir / "calib" / "000000.txt")]) == 0
    out = capsys.readouterr().out
    assert "camera/front" in out and "fx=707.0493" in out


def test_calib_check_kitti(capsys, tmp_path: Path, kitti_dir: Path) -> None:
    out_png = tmp_path / "overlay.png"
    code = main(
        [
            "calib",
            "check",
            str(kitti_dir / "calib" / "000003.txt"),
            "--lidar",
            str(kitti_dir / "velodyne_reduced" / "000003.bin"),
            "--image",
            str(kitti_dir / "image_2" / "000003.png"),
            "--out",
            str(out_png),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "alignment score" in out
    overlay = cv2.imread(str(out_png))
    assert overlay is not None and overlay.shape == (375, 1242, 3)


def test_calib_check_binary_compressed_pcd_scores_as_the_bin(
    capsys, tmp_path: Path, kitti_dir: Path
) -> None:
    """A real KITTI sweep saved by pypcd4 as a binary_compressed PCD checks exactly as its .bin."""
    from pypcd4.pypcd4 import Encoding, PointCloud

    scan = kitti_dir / "velodyne" / "000000.bin"
    pcd = tmp_path / "000000.pcd"
    points = np.fromfile(scan, dtype="<f4").reshape(-1, 4)
    PointCloud.from_xyzi_points(points).save(pcd, encoding=Encoding.BINARY_COMPRESSED)
    assert b"\nDATA binary_compressed\n" in pcd.read_bytes()[:300]
    results = []
    for lidar in (scan, pcd):
        code = main(
            ["calib", "check", str(kitti_dir / "calib" / "000000.txt"), "--lidar", str(lidar),
             "--image", str(kitti_dir / "image_2" / "000000.png"),
             "--out", str(tmp_path / f"{lidar.suffix[1:]}.png")]
        )  # fmt: skip
        out = capsys.readouterr().out
        results.append((code, [line for line in out.splitlines() if "alignment score" in line]))
    assert results[0][0] == 0 and len(results[0][1]) == 1
    assert results[1] == results[0]


def test_calib_check_pjlab_reports_size_mismatch(capsys, tmp_path: Path, data_dir: Path) -> None:
    pj = data_dir / "lidar_camera_calib_pjlab"
    code = main(
        [
            "calib",
            "check",
            str(pj),
            "--lidar",
            str(pj / "0.pcd"),
            "--image",
            str(pj / "0.png"),
            "--out",
            str(tmp_path / "pj.png"),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "1920x1080" in out and "1920x1200" in out


def test_calib_check_bad_image(capsys, tmp_path: Path, kitti_dir: Path) -> None:
    code = main(
        [
            "calib",
            "check",
            str(kitti_dir / "calib" / "000003.txt"),
            "--lidar",
            str(kitti_dir / "velodyne_reduced" / "000003.bin"),
            "--image",
            str(tmp_path / "none.png"),
            "--out",
            str(tmp_path / "o.png"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "none.png: image does not exist" in err


def test_calib_check_over_a_drive_exits_3_on_drift_and_refines_the_rig(
    capsys, tmp_path: Path, rich_drive: Path, drifted_rich_drive: Path
) -> None:
    """The true drive is aligned (exit 0); the drive whose rig has the camera turned is
    flagged (exit 3), and --refine writes a rig within 0.15 degrees of the true one."""
    from calibration import load_rig_yaml
    from replay.synth.world import synth_rig

    assert main(["calib", "check", "--drive", str(rich_drive), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "camera front: ALIGNED over 20 frames" in out
    assert re.search(r"it moves the projection \d+\.\d \+- \d+\.\d px \(median\)", out), out
    assert "no static structure" not in out  # the rich world's verdict checks the rig
    refined_path = tmp_path / "refined.yaml"
    picture_path = tmp_path / "correction.png"
    code = main(
        ["calib", "check", "--drive", str(drifted_rich_drive), "--quiet",
         "--refine", str(refined_path), "--out", str(picture_path)]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 3, out
    assert "camera front: DRIFTED" in out and f"refined rig written to {refined_path}" in out
    # The picture: the last frame used, drawn with the rig checked above and corrected below.
    assert f"picture written to {picture_path}" in out
    picture = cv2.imread(str(picture_path))
    assert picture is not None and picture.shape == (2 * 375, 1242, 3)
    assert not np.array_equal(picture[:375], picture[375:])
    refined = load_rig_yaml(refined_path).transform("vehicle", "camera/front")
    true = synth_rig().transform("vehicle", "camera/front")
    turn = refined.rotation.T @ true.rotation
    assert np.degrees(np.arccos(np.clip((np.trace(turn) - 1) / 2, -1, 1))) < 0.15


def test_calib_check_of_a_simple_world_drive_says_it_does_not_check_the_rig(
    capsys, tmp_path: Path, synth_drive: Callable[[int, float], Path]
) -> None:
    """The simple world has no static structure beside the road: its drive (which says which
    world it is) gets the demo's caveat under the verdict, whatever the verdict, and exits 4
    (no verdict), writing no refined rig."""
    refined = tmp_path / "refined.yaml"
    drive = str(synth_drive(2, 1.0))
    code = main(["calib", "check", "--drive", drive, "--quiet", "--refine", str(refined)])
    out = capsys.readouterr().out
    assert code == 4, out
    # The monitor itself sees that nothing stands beside the road (min_structure_share).
    assert "camera front: NO VERDICT over 10 frames (0 skipped): " in out
    assert "of the points in view stand above the ground (needed: 5%)" in out
    verdict = out.index("camera front: ")
    assert verdict < out.index("(the simple world has no static structure beside the road, so")
    assert f"no rig written to {refined}: this drive cannot check the rig" in out
    assert not refined.exists()


def test_calib_check_judges_the_rig_given_not_the_drives_own(
    capsys, tmp_path: Path, rich_drive: Path
) -> None:
    """A rig given beside a drive is the one checked: the drive's recorded rig messages would
    otherwise take over and the check would judge the drive's own rig. The true drive with
    its camera given turned 0.5 degrees in yaw is flagged, with the turn undone; the true rig,
    written out and given, is aligned."""
    from calibration.monitor import Correction, corrected_rig
    from calibration.rig import save_rig_yaml
    from replay.synth.world import synth_rig

    turned = tmp_path / "turned.yaml"
    save_rig_yaml(corrected_rig(synth_rig(), "front", Correction((0.0, 0.0, 0.5))), turned)
    true = tmp_path / "true.yaml"
    save_rig_yaml(synth_rig(), true)
    assert main(["calib", "check", str(turned), "--drive", str(rich_drive), "--quiet"]) == 3
    out = capsys.readouterr().out
    yaw = re.search(r"correction rotation \([^,]+, [^,]+, ([-+]\d+\.\d+)\) deg", out)
    assert yaw is not None and float(yaw.group(1)) == pytest.approx(-0.5, abs=0.15), out
    assert main(["calib", "check", str(true), "--drive", str(rich_drive), "--quiet"]) == 0
    assert "camera front: ALIGNED over 20 frames" in capsys.readouterr().out
    # A rig whose camera the drive does not have: nothing to check, and the line says why.
    other = tmp_path / "other.yaml"
    other.write_text(true.read_text().replace("front", "left"))
    assert main(["calib", "check", str(other), "--drive", str(rich_drive), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "no frame to check the calibration with" in err
    assert f"the rig given ({other}) has cameras left, the source's are camera/front" in err


def test_calib_check_many_frames_mistakes_are_one_line(
    capsys, tmp_path: Path, kitti_dir: Path
) -> None:
    empty_drive = tmp_path / "empty.mcap"
    DriveWriter(empty_drive).close()
    cases = [
        (["--drive", "a.mcap", "--frames", str(kitti_dir)], "not both"),
        (["--frames", str(kitti_dir), "--refine", str(tmp_path / "r.yaml")], "only with --drive"),
        (["--frames", str(kitti_dir), "--lidar", "x.bin"], "--lidar: only for one scan"),
        (["--frames", str(tmp_path / "none")], "does not exist"),
        (["--drive", str(tmp_path)], "is a folder"),
        (["--perturb", "1,2,3"], "six comma-separated numbers"),
        (["--perturb", "0,0,20,0,0,0", "--drive", "a.mcap"], "within +-10 deg"),
        (
            [str(kitti_dir / "calib" / "000003.txt"), "--perturb", "0,0,1,0,0,0"],
            "only with --drive",
        ),
        ([str(kitti_dir / "calib" / "000003.txt")], "give --lidar, --image, --out"),
        (["--frames", str(kitti_dir), "--out", str(tmp_path / "x.txt")], "must be an image"),
        (["--frames", str(kitti_dir), "--out", str(tmp_path / "no" / "x.png")], "does not exist"),
        # Refused before the replay, not after it.
        (["--frames", str(kitti_dir), "--camera", "rear"], "has no such camera (cameras: front)"),
        (["--drive", str(empty_drive)], "the drive holds no messages; calib check takes"),
    ]
    for args, message in cases:
        with pytest.raises(SystemExit) if args[0] == "--perturb" else _no_exit():
            code = main(["calib", "check", *args])
            assert code == 2, args
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, (args, err)


@contextlib.contextmanager
def _no_exit() -> Iterator[None]:
    yield


def test_calib_check_without_evidence_is_no_verdict(
    capsys, tmp_path: Path, kitti_dir: Path, yolox_path: Path
) -> None:
    """The KITTI frames with each image's pixels shuffled: contrast, but nothing the lidar
    could align with. No verdict, exit 4 (not "aligned", exit 0)."""
    frames = tmp_path / "training"
    frames.mkdir()
    for name in ("calib", "velodyne", "velodyne_reduced", "label_2"):
        if (kitti_dir / name).is_dir():
            (frames / name).symlink_to(kitti_dir / name)
    (frames / "image_2").mkdir()
    rng = np.random.default_rng(5)
    for png in sorted((kitti_dir / "image_2").glob("*.png")):
        image = cv2.imread(str(png))
        assert image is not None
        flat = image.reshape(-1, 3)
        cv2.imwrite(
            str(frames / "image_2" / png.name),
            flat[rng.permutation(len(flat))].reshape(image.shape),
        )
    code = main(["calib", "check", "--frames", str(frames), "--model", str(yolox_path), "--quiet"])
    out = capsys.readouterr().out
    assert code == 4, out
    assert "camera front: NO VERDICT over 8 frames" in out and "nats" in out


def test_calib_check_of_a_lidar_without_intensity_says_every_frame_was_skipped(
    capsys, tmp_path: Path, kitti_dir: Path, yolox_path: Path
) -> None:
    """Scans whose intensity is one value (a lidar or driver that reports none) carry nothing
    to compare the image's grey with: every frame is skipped, and the line says so (exit 4),
    not that the camera sees nothing the lidar sees."""
    frames = tmp_path / "training"
    for name in ("calib", "image_2", "velodyne_reduced"):
        (frames / name).mkdir(parents=True)
    ids = ("000003", "000004", "000005")
    for i in ids:
        (frames / "calib" / f"{i}.txt").symlink_to(kitti_dir / "calib" / f"{i}.txt")
        (frames / "image_2" / f"{i}.png").symlink_to(kitti_dir / "image_2" / f"{i}.png")
        scan = np.fromfile(kitti_dir / "velodyne_reduced" / f"{i}.bin", np.float32).reshape(-1, 4)
        scan[:, 3] = 0.0
        scan.tofile(frames / "velodyne_reduced" / f"{i}.bin")
    picture = tmp_path / "p.png"
    code = main(
        ["calib", "check", "--frames", str(frames), "--model", str(yolox_path), "--quiet",
         "--out", str(picture)]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 4, out
    line = "NO VERDICT: every frame skipped (3 skipped: 3 no contrast in the lidar's intensity)"
    assert f"camera front: {line}" in out, out
    assert f"no picture written to {picture}: no frame was used" in out
    assert not picture.exists()


def test_calib_check_drive_without_evidence_writes_no_refined_rig(
    capsys, tmp_path: Path, rich_drive: Path
) -> None:
    """The rich drive with its camera images' pixels shuffled: no verdict (exit 4), and
    --refine writes no rig (there is no correction to write)."""
    import shutil
    from dataclasses import replace

    from perception.msgs.types import CameraFrame
    from replay.drive import DriveReader, DriveWriter
    from replay.synth.world import ground_truth_path

    reader = DriveReader(rich_drive)
    blind = tmp_path / "blind.mcap"
    rng = np.random.default_rng(9)
    with DriveWriter(blind, rig=reader.rig) as writer:
        for rec in reader.messages():
            msg = rec.message
            if isinstance(msg, CameraFrame) and msg.image is not None:
                flat = msg.image.reshape(-1, msg.image.shape[-1])
                msg = replace(msg, image=flat[rng.permutation(len(flat))].reshape(msg.image.shape))
            writer.write(msg, rec.log_time_ns, rec.topic)
        for doc in reader.ground_truth():
            writer.write_ground_truth(doc, int(doc["stamp_ns"]))
    # The ground truth beside it marks a synthetic drive (the packaged synthetic detector).
    shutil.copyfile(ground_truth_path(rich_drive), ground_truth_path(blind))
    refined = tmp_path / "refined.yaml"
    code = main(["calib", "check", "--drive", str(blind), "--quiet", "--refine", str(refined)])
    out, err = capsys.readouterr()
    assert code == 4, out + err
    assert "camera front: NO VERDICT over 20 frames" in out
    assert f"no rig written to {refined}" in out and not refined.exists()


def test_calib_check_of_a_drive_whose_rig_changed_says_its_verdict_is_of_the_last(
    capsys, tmp_path: Path, synth_drive: Callable[[int, float], Path]
) -> None:
    """The monitor starts over with each rig the drive sends: the verdict, and the rig
    --refine writes, are of the last one; the line under the verdict says so, and how many
    frames it leaves out."""
    from tests.replay.test_calibration_check import rewritten

    drive = rewritten(synth_drive(3, 0.6), tmp_path / "changed.mcap", rig_from_sweep=3)
    code = main(["calib", "check", "--drive", str(drive), "--quiet"])
    out = capsys.readouterr().out
    assert code in (0, 3, 4), out
    assert "camera front: " in out and "over 3 frames" in out
    assert (
        "  (camera front: the drive's rig changed once; this verdict is of its last rig, over "
        "the frames from its change on, and leaves out the 3 frames before it; give a RIG to "
        "check one rig over the whole drive)"
    ) in out
