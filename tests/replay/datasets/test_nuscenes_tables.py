"""`NuScenesTables`, the nuScenes table reader, on the tables of the test dataset
(`nuscenes_fixture`): the reverse links and `box_velocity` against the fixture's own records,
and each malformed table refused with one line naming the table and the problem."""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from replay.datasets.nuscenes import import_nuscenes
from replay.datasets.nuscenes_tables import TABLES, NuScenesTables
from replay.errors import ReplayError
from tests.replay.datasets.nuscenes_fixture import (
    INSTANCES,
    SAMPLE_PERIOD_US,
    SCENE,
    VERSION,
    Fixture,
    token,
    write_nuscenes,
)

Rows = list[dict[str, Any]]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Fixture:
    return write_nuscenes(tmp_path_factory.mktemp("nuscenes") / "data")


@pytest.fixture(scope="module")
def tables(dataset: Fixture) -> NuScenesTables:
    return NuScenesTables.load(dataset.root, VERSION)


def test_records_and_reverse_links(dataset: Fixture, tables: NuScenesTables) -> None:
    assert tables.root == dataset.root / VERSION
    for name in TABLES:
        assert tables.table(name) == dataset.table(name)  # every record, in file order
    channels = {r["token"]: r["channel"] for r in dataset.table("sensor")}
    calibs = {r["token"]: channels[r["sensor_token"]] for r in dataset.table("calibrated_sensor")}
    for sd in dataset.table("sample_data"):
        assert tables.channel_of[sd["token"]] == calibs[sd["calibrated_sensor_token"]]
    for sample in dataset.table("sample"):
        keys = [
            sd
            for sd in dataset.table("sample_data")
            if sd["is_key_frame"] and sd["sample_token"] == sample["token"]
        ]
        expected = {calibs[sd["calibrated_sensor_token"]]: sd["token"] for sd in keys}
        assert tables.keyframes[sample["token"]] == expected
        anns = [
            a for a in dataset.table("sample_annotation") if a["sample_token"] == sample["token"]
        ]
        assert tables.annotations[sample["token"]] == tuple(a["token"] for a in anns)
    # The first sample has LIDAR_TOP, the six cameras and RADAR_FRONT.
    assert len(tables.keyframes[token("sample", 0)]) == 8
    for inst in INSTANCES:
        for k in inst.samples:
            assert tables.category_of[token("sample_annotation", inst.name, k)] == inst.category


def test_box_velocity_follows_the_devkit(tables: NuScenesTables) -> None:
    car = next(i for i in INSTANCES if i.name == "car")
    for k in car.samples:  # one-sided at the ends, central in the middle: all the same here
        v = tables.box_velocity(token("sample_annotation", "car", k))
        assert v == pytest.approx(car.velocity)
    walker = tables.box_velocity(token("sample_annotation", "walker", 1))
    assert walker == pytest.approx((0.0, 0.0, 0.0))
    cyclist = tables.box_velocity(token("sample_annotation", "cyclist", 1))  # annotated once
    assert all(math.isnan(c) for c in cyclist)
    # The cone's two annotations are 0.5 s apart: beyond a 0.4 s limit, the velocity is unknown.
    cone = token("sample_annotation", "cone", 0)
    assert SAMPLE_PERIOD_US == 500_000
    assert tables.box_velocity(cone) == pytest.approx((0.0, 0.0, 0.0))
    assert all(math.isnan(c) for c in tables.box_velocity(cone, max_time_diff_s=0.4))
    # A central difference may span twice the limit (here 1 s over a 0.5 s limit).
    car_middle = token("sample_annotation", "car", 1)
    assert tables.box_velocity(car_middle, max_time_diff_s=0.5) == pytest.approx(car.velocity)


def test_get_names_the_table_and_the_token(tables: NuScenesTables) -> None:
    with pytest.raises(ReplayError) as info:
        tables.get("ego_pose", "nope", via="sample_data x.ego_pose_token")
    path = tables.root / "ego_pose.json"
    assert str(info.value) == f"{path}: no record 'nope' (from sample_data x.ego_pose_token)"


def _copy(dataset: Fixture, tmp_path: Path) -> Path:
    """A copy of the dataset's tables (no sample files) to break."""
    root = tmp_path / "data"
    shutil.copytree(dataset.root / VERSION, root / VERSION)
    return root


def _edit(root: Path, table: str, change: Callable[[Rows], object]) -> Path:
    """Rewrite `table` after `change` changed its rows in place (its result is ignored)."""
    path = root / VERSION / f"{table}.json"
    rows = json.loads(path.read_text())
    change(rows)
    path.write_text(json.dumps(rows))
    return path


def _refused(root: Path) -> str:
    with pytest.raises(ReplayError) as info:
        NuScenesTables.load(root, VERSION)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_folder_and_missing_tables(dataset: Fixture, tmp_path: Path) -> None:
    assert _refused(tmp_path / "nope") == f"{tmp_path / 'nope'}: nuScenes DATAROOT does not exist"
    # A table given as DATAROOT was said not to exist.
    table = tmp_path / "scene.json"
    table.write_text("[]")
    assert _refused(table) == f"{table}: not a folder, so no nuScenes DATAROOT"
    root = _copy(dataset, tmp_path)
    with pytest.raises(
        ReplayError, match=r"missing \(the tables of version v9\); versions here: v1"
    ):
        NuScenesTables.load(root, "v9")
    (root / VERSION / "map.json").unlink()  # the devkit needs it, the importer does not
    NuScenesTables.load(root, VERSION)
    (root / VERSION / "instance.json").unlink()
    (root / VERSION / "ego_pose.json").unlink()
    err = _refused(root)
    assert err.startswith(f"{root / VERSION}: missing table(s) instance.json, ego_pose.json (")


def test_table_not_json(dataset: Fixture, tmp_path: Path) -> None:
    root = _copy(dataset, tmp_path)
    path = root / VERSION / "sample.json"
    path.write_text('[{"token": ')
    assert _refused(root).startswith(f"{path}: not JSON (")
    path.write_bytes(b"\xff\xfe[]")
    assert _refused(root).startswith(f"{path}: not JSON (")
    path.write_text("[" * 100_000 + "]" * 100_000)  # was a RecursionError: "a bug"
    assert _refused(root) == f"{path}: not JSON (arrays and objects nested too deeply)"


def test_table_not_a_list_of_records(dataset: Fixture, tmp_path: Path) -> None:
    root = _copy(dataset, tmp_path)
    path = root / VERSION / "scene.json"
    path.write_text(json.dumps({"scenes": dataset.table("scene")}))
    assert _refused(root) == f"{path}: not a list of records (a nuScenes table) but an object"
    path.write_text("null")
    assert _refused(root) == f"{path}: not a list of records (a nuScenes table) but null"
    path.write_text(json.dumps([["token", "name"]]))
    assert _refused(root) == f"{path}: record 0 is not a JSON object"


def test_record_missing_a_field(dataset: Fixture, tmp_path: Path) -> None:
    root = _copy(dataset, tmp_path)
    tok = dataset.table("sample_data")[3]["token"]
    path = _edit(root, "sample_data", lambda rows: [rows[3].pop(k) for k in ("prev", "width")])
    assert _refused(root) == f"{path}: record 3 (token {tok}) lacks field(s) width, prev"
    path = _edit(root, "visibility", lambda rows: rows[1].pop("token"))
    assert _refused(root) == f"{path}: record 1 lacks field(s) token"


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        # Was "unexpected TypeError: unhashable type: 'list'" (exit 1, "a bug").
        ("sample.token", [5], "field token is [5], expected a string"),
        # Was "unexpected TypeError: sequence item 0: expected str instance, int found".
        ("scene.name", 5, "field name is 5, expected a string"),
        # The string "false" is true: a sweep became a keyframe without a word.
        ("sample_data.is_key_frame", "false",
         'field is_key_frame is "false", expected true or false'),
        # Was "scene-0061: invalid literal for int() with base 10: 'abc'", naming no table.
        ("sample_data.timestamp", "abc",
         'field timestamp is "abc", expected a whole number of microseconds from 1970 to 2116'),
        # Was "rig: field 'header.stamp_ns' must not be negative", naming no table.
        ("sample_data.timestamp", -5,
         "field timestamp is -5, expected a whole number of microseconds from 1970 to 2116"),
        ("sample_data.timestamp", 1.5,
         "field timestamp is 1.5, expected a whole number of microseconds from 1970 to 2116"),
        ("ego_pose.translation", [1.0, 2.0],
         "field translation is [1.0, 2.0], expected 3 finite numbers"),
        ("ego_pose.rotation", [math.nan, 0.0, 0.0, 1.0],
         "field rotation is [NaN, 0.0, 0.0, 1.0], expected 4 finite numbers (a quaternion w, x, "
         "y, z)"),
        ("calibrated_sensor.camera_intrinsic", [[1, 2], [3]],
         "field camera_intrinsic is [[1, 2], [3]], expected [] or a 3 x 3 matrix of finite "
         "numbers"),
        ("sample_annotation.attribute_tokens", 5,
         "field attribute_tokens is 5, expected a list of tokens"),
        ("sample_annotation.num_lidar_pts", "many",
         'field num_lidar_pts is "many", expected a whole number of points'),
        # A sample file outside DATAROOT was read (and imported, had it been a JPEG).
        ("sample_data.filename", "/etc/passwd",
         'field filename is "/etc/passwd", expected a relative path inside DATAROOT'),
        ("sample_data.filename", "samples/../../x.jpg",
         'field filename is "samples/../../x.jpg", expected a relative path inside DATAROOT'),
    ],
)  # fmt: skip
def test_field_of_the_wrong_type(
    dataset: Fixture, tmp_path: Path, field: str, value: object, problem: str
) -> None:
    """Record 0 of the table with `field` (table.key) set to `value`: refused naming both."""
    table, key = field.split(".")
    root = _copy(dataset, tmp_path)
    path = _edit(root, table, lambda rows: rows[0].__setitem__(key, value))
    token = dataset.table(table)[0]["token"]
    record = "record 0" if key == "token" else f"record 0 (token {token})"
    assert _refused(root) == f"{path}: {record} {problem}"


def test_a_table_that_is_no_file_is_named(dataset: Fixture, tmp_path: Path) -> None:
    """A pipe, a folder or a looping link for a table was "missing table(s)"."""
    root = _copy(dataset, tmp_path)
    path = root / VERSION / "log.json"
    path.unlink()
    os.mkfifo(path)
    assert _refused(root) == f"{path}: not a regular file, so no log table"
    path.unlink()
    path.symlink_to("log.json")
    assert _refused(root) == f"{path}: a broken or looping link, so no log table"


def test_duplicate_token(dataset: Fixture, tmp_path: Path) -> None:
    root = _copy(dataset, tmp_path)
    path = _edit(root, "category", lambda rows: rows.append(dict(rows[0])))
    assert _refused(root) == f"{path}: token {dataset.table('category')[0]['token']} appears twice"


def test_a_key_given_twice_in_a_record_is_refused(dataset: Fixture, tmp_path: Path) -> None:
    """json keeps the last of two equal keys: a sample_data record's second timestamp was
    taken without a word."""
    root = _copy(dataset, tmp_path)
    path = root / VERSION / "sample_data.json"
    first = dataset.table("sample_data")[0]
    text = path.read_text()
    stamp = f'"timestamp": {first["timestamp"]}'
    assert text.count(stamp) == 1  # the first record's, no other's
    path.write_text(text.replace(stamp, f'"timestamp": 0, {stamp}'))
    assert _refused(root) == (
        f"{path}: the record of token {first['token']} gives the key 'timestamp' twice"
    )


def test_dangling_token(dataset: Fixture, tmp_path: Path) -> None:
    root = _copy(dataset, tmp_path)
    ann = dataset.table("sample_annotation")[2]["token"]

    def drop_instance(rows: Rows) -> None:
        rows[2]["instance_token"] = "gone"

    _edit(root, "sample_annotation", drop_instance)
    assert _refused(root) == (
        f"{root / VERSION / 'instance.json'}: no record 'gone' "
        f"(from sample_annotation {ann}.instance_token)"
    )
    shutil.copy(dataset.root / VERSION / "sample_annotation.json", root / VERSION)
    calib = dataset.table("calibrated_sensor")[0]["token"]
    _edit(root, "sensor", lambda rows: rows.pop(0))
    assert _refused(root) == (
        f"{root / VERSION / 'sensor.json'}: no record {dataset.table('sensor')[0]['token']!r} "
        f"(from calibrated_sensor {calib}.sensor_token)"
    )


def test_dangling_token_of_the_scene_refused_on_import(dataset: Fixture, tmp_path: Path) -> None:
    """Tokens the scene's import follows (not checked on loading) are checked when followed."""
    root = _copy(dataset, tmp_path)
    first = dataset.lidar_keys[0]

    def drop_pose(rows: Rows) -> None:
        next(r for r in rows if r["token"] == first["token"])["ego_pose_token"] = "lost"

    _edit(root, "sample_data", drop_pose)
    out = tmp_path / "x.mcap"
    with pytest.raises(ReplayError) as info:
        import_nuscenes(root, out, version=VERSION, scene=SCENE, origin=None, progress=None)
    assert str(info.value) == (
        f"{root / VERSION / 'ego_pose.json'}: no record 'lost' "
        f"(from sample_data {first['token']}.ego_pose_token)"
    )
    assert not out.exists()
