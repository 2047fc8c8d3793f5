from __future__ import annotations

from pathlib import Path

import pytest

from app.cli import main
from replay.datasets.kitti_eval import evaluate_kitti_run
from replay.errors import ReplayError


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory, kitti_dir: Path, yolox_path: Path) -> Path:
    out = tmp_path_factory.mktemp("eval") / "d.jsonl"
    argv = ["replay", "kitti-object", str(kitti_dir), "--out", str(out)]
    assert main([*argv, "--model", str(yolox_path), "--quiet"]) == 0
    return out


def test_compared_with_reference_boxes(replayed: Path, kitti_dir: Path, data_dir: Path) -> None:
    refs = data_dir / "kitti_pointpillars" / "reference_pred_velo"
    result, report = evaluate_kitti_run(replayed, kitti_dir, refs)
    # Frames 000000 and 000003-000005 have reference boxes.
    assert report.count("frame 0000") == 4
    ped = result.stats("Pedestrian")
    assert ped.true_positives >= 1
    car = result.stats("Car")
    # the two cars of 000003 within 40 m and in view
    assert car.true_positives + car.false_negatives >= 2
    assert "all 4 frames" in report


def test_eval_command_prints_report(replayed, kitti_dir, data_dir, capsys) -> None:
    refs = data_dir / "kitti_pointpillars" / "reference_pred_velo"
    code = main(["eval", str(replayed), "--kitti", str(kitti_dir), "--reference", str(refs)])
    out = capsys.readouterr().out
    assert code == 0
    assert "Pedestrian" in out and "centre err" in out


def test_labels_as_reference(replayed: Path, kitti_dir: Path) -> None:
    result, _ = evaluate_kitti_run(replayed, kitti_dir, kitti_dir / "label_2")
    assert result.stats("Pedestrian").true_positives == 1


def test_missing_reference_folder(replayed: Path, kitti_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ReplayError, match="reference folder does not exist"):
        evaluate_kitti_run(replayed, kitti_dir, tmp_path / "none")


def test_end_to_end_accuracy_against_the_trained_detector(
    replayed: Path, kitti_dir: Path, data_dir: Path
) -> None:
    """Cars within 40 m in view (reference score >= 0.5), 1.5 m BEV centre distance, with the
    real YOLOX boxes on frames 000000 and 000003-000005; the 000000 pedestrian vs its label."""
    refs = data_dir / "kitti_pointpillars" / "reference_pred_velo"
    result, report = evaluate_kitti_run(replayed, kitti_dir, refs)
    car = result.stats("Car")
    assert car.recall is not None and car.recall >= 0.8, report
    assert car.precision is not None and car.precision >= 0.8, report
    assert car.median_center_error_m is not None and car.median_center_error_m <= 0.5, report
    assert car.median_yaw_error_deg is not None and car.median_yaw_error_deg <= 15.0, report
    labels, _ = evaluate_kitti_run(replayed, kitti_dir, kitti_dir / "label_2")
    (ped,) = [m for m in labels.matches if m.reference.label == "Pedestrian"]
    assert ped.center_error_m <= 0.5
