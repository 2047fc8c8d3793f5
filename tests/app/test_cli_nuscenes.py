"""`perception import nuscenes` through `app.cli.main`, on the nuScenes-format dataset the
tests write (tests/replay/datasets/nuscenes_fixture.py): a scene imported, and each mistake one
line on stderr with exit code 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.cli import main
from replay.drive import DriveReader
from tests.app.one_line import fails as _fails
from tests.replay.datasets.nuscenes_fixture import OTHER_SCENE, SCENE, VERSION, write_nuscenes


@pytest.fixture(scope="module")
def dataroot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_nuscenes(tmp_path_factory.mktemp("nuscenes") / "data").root


def test_import_a_scene(capsys: pytest.CaptureFixture[str], dataroot: Path, tmp_path: Path) -> None:
    out = tmp_path / "scene.mcap"
    argv = ["import", "nuscenes", str(dataroot), "--out", str(out), "--scene", SCENE, "--quiet"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert f"perception import: {out}: " in text
    assert "ground_truth 3" in text and "lidar/top 3" in text
    assert "set sync.camera_offsets_ms" in text
    reader = DriveReader(out)
    assert reader.rig is not None and len(reader.rig.cameras) == 6
    assert len(reader.ground_truth()) == 3


def test_mistakes(capsys: pytest.CaptureFixture[str], dataroot: Path, tmp_path: Path) -> None:
    out = str(tmp_path / "x.mcap")
    base = ["import", "nuscenes", str(dataroot), "--out", out, "--quiet"]
    err = _fails(capsys, *base, "--scene", "scene-0000")
    assert err.endswith(f"scenes available: {SCENE}, {OTHER_SCENE}")
    err = _fails(capsys, *base, "--scene", SCENE, "--version", "v1.0-test")
    assert f"{dataroot / 'v1.0-test'}: missing (the tables of version v1.0-test)" in err
    table = dataroot / VERSION / "visibility.json"
    saved = table.read_bytes()
    table.unlink()
    try:
        err = _fails(capsys, *base, "--scene", SCENE)
        assert f"{dataroot / VERSION}: missing table(s) visibility.json" in err
        table.write_text('{"visibility": []}')
        err = _fails(capsys, *base, "--scene", SCENE)
        assert f"{table}: not a list of records (a nuScenes table) but an object" in err
    finally:
        table.write_bytes(saved)
    err = _fails(capsys, *base, "--scene", SCENE, "--origin", "1,2")
    assert "expected LAT,LON,ALT" in err
    # It was numpy's RuntimeWarnings, then "ego_pose: the poses around ... give no valid fix".
    for alt in ("1e300", "inf", "nan"):
        err = _fails(capsys, *base, "--scene", SCENE, "--origin", f"1,2,{alt}")
        assert err == (
            f"perception import: error: --origin '1,2,{alt}': altitude out of range (-12000 to "
            "100000 m, what a GNSS fix may hold)"
        )
    assert not Path(out).exists()
