"""The nuScenes tables, read directly: `DATAROOT/<version>/<table>.json`, each a JSON list of
records keyed by `token` (the layout of the devkit's docs/schema_nuscenes.md).

The nuScenes devkit is not a dependency: its newest release (1.2.0) pins numpy<2, which would
take the whole project back to numpy 1 and OpenCV 4. `NuScenesTables` loads the tables the
importer (`replay.datasets.nuscenes`) needs, checks the fields it reads, and builds the reverse
links the devkit's `NuScenes.__make_reverse_index__` builds and the importer uses.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from calibration.errors import DuplicateKeyError, unique_keys
from perception.msgs.schema import MAX_STAMP_NS
from replay.errors import ReplayError

__all__ = ["FIELDS", "TABLES", "NuScenesTables", "Record"]

Record = dict[str, Any]

#: The fields of each table the importer reads (besides `token`). The devkit also loads `map`;
#: the importer needs no map, so `map.json` is not read.
FIELDS: Mapping[str, tuple[str, ...]] = {
    "category": ("name",),
    "attribute": ("name",),
    "visibility": ("level",),
    "instance": ("category_token",),
    "sensor": ("channel",),
    "calibrated_sensor": ("sensor_token", "translation", "rotation", "camera_intrinsic"),
    "ego_pose": ("timestamp", "translation", "rotation"),
    "log": ("location",),
    "scene": ("name", "log_token", "first_sample_token"),
    "sample": ("timestamp", "prev", "next"),
    "sample_data": (
        *("sample_token", "ego_pose_token", "calibrated_sensor_token", "timestamp"),
        *("is_key_frame", "filename", "width", "height", "prev", "next"),
    ),
    "sample_annotation": (
        *("sample_token", "instance_token", "attribute_tokens", "visibility_token"),
        *("translation", "size", "rotation", "prev", "next"),
    ),
}
#: The tables read, each `<DATAROOT>/<version>/<table>.json`.
TABLES: tuple[str, ...] = tuple(FIELDS)
_JSON_TYPES = {
    dict: "an object",
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "a boolean",
    type(None): "null",
}


# Exact types (`type(v) is int`): a JSON true is a Python int too, and this runs for every
# field of every record (v1.0-trainval has 2.6 M sample_data records).
def _number(v: Any) -> bool:
    return type(v) is int or (type(v) is float and math.isfinite(v))


def _numbers(n: int) -> Callable[[Any], bool]:
    return lambda v: type(v) is list and len(v) == n and all(map(_number, v))


def _count(v: Any) -> bool:
    return type(v) is int and v >= 0


def _relative_path(v: Any) -> bool:
    # A sample file is under DATAROOT: a table naming /etc/passwd or ../x had it read.
    return type(v) is str and v != "" and v[0] != "/" and ".." not in v.split("/")


def _intrinsic(v: Any) -> bool:
    return v == [] or (type(v) is list and len(v) == 3 and all(map(_numbers(3), v)))


_MAX_TIMESTAMP_US = MAX_STAMP_NS // 1000
#: What each field the importer reads must be (any other is a string): a value of another
#: JSON type failed as "unexpected TypeError", as an error naming no table, or was misread
#: (an is_key_frame of "false" is true).
_KINDS: Mapping[str, tuple[Callable[[Any], bool], str]] = {
    "timestamp": (
        lambda v: _count(v) and v <= _MAX_TIMESTAMP_US,
        "a whole number of microseconds from 1970 to 2116",
    ),
    "width": (_count, "a whole number of pixels"),
    "height": (_count, "a whole number of pixels"),
    "num_lidar_pts": (_count, "a whole number of points"),
    "is_key_frame": (lambda v: type(v) is bool, "true or false"),
    "translation": (_numbers(3), "3 finite numbers"),
    "size": (_numbers(3), "3 finite numbers"),
    "rotation": (_numbers(4), "4 finite numbers (a quaternion w, x, y, z)"),
    "camera_intrinsic": (_intrinsic, "[] or a 3 x 3 matrix of finite numbers"),
    "attribute_tokens": (
        lambda v: type(v) is list and all(type(t) is str for t in v),
        "a list of tokens",
    ),
    "filename": (_relative_path, "a relative path inside DATAROOT"),
}
#: Fields read where a record has them.
_OPTIONAL = ("num_lidar_pts",)


def _type_check(fields: tuple[str, ...]) -> Callable[[Record], str | None]:
    """For records with `fields` (and `token`): the first field of a record whose value is
    not of its kind (`_KINDS`, else a string), or None."""
    strings = tuple(k for k in ("token", *fields) if k not in _KINDS)
    typed = tuple((k, _KINDS[k][0]) for k in fields if k in _KINDS)
    optional = tuple((k, _KINDS[k][0]) for k in _OPTIONAL)

    def bad_field(row: Record) -> str | None:
        for key in strings:
            if type(row[key]) is not str:
                return key
        for key, check in typed:
            if not check(row[key]):
                return key
        for key, check in optional:
            if key in row and not check(row[key]):
                return key
        return None

    return bad_field


def _wrong_type(path: Path, index: int, row: Record, key: str) -> ReplayError:
    shown = json.dumps(row[key])
    shown = shown if len(shown) <= 40 else shown[:40] + "..."
    expected = _KINDS[key][1] if key in _KINDS else "a string"
    name = f"record {index}" + (f" (token {row['token']})" if key != "token" else "")
    return ReplayError(f"{path}: {name} field {key} is {shown}, expected {expected}")


def _versions(dataroot: Path) -> list[str]:
    """The version folders under `dataroot` (those holding a scene table), sorted."""
    try:
        return sorted(p.name for p in dataroot.iterdir() if (p / "scene.json").is_file())
    except OSError:
        return []


def _table_root(dataroot: Path, version: str) -> Path:
    """The version folder, after checking it and every table are there."""
    if dataroot.exists() and not dataroot.is_dir():
        # A table file given as DATAROOT was said not to exist.
        raise ReplayError(f"{dataroot}: not a folder, so no nuScenes DATAROOT")
    if not dataroot.is_dir():
        raise ReplayError(f"{dataroot}: nuScenes DATAROOT does not exist")
    root = dataroot / version
    if not root.is_dir():
        found = ", ".join(_versions(dataroot)) or "none"
        raise ReplayError(
            f"{root}: missing (the tables of version {version}); versions here: {found}"
        )
    for table in TABLES:
        path = root / f"{table}.json"
        if not path.is_file() and (path.exists() or path.is_symlink()):
            # A pipe would block the reader; a folder or looping link is no missing table.
            state = "a broken or looping link" if not path.exists() else "not a regular file"
            raise ReplayError(f"{path}: {state}, so no {table} table")
    missing = [f"{t}.json" for t in TABLES if not (root / f"{t}.json").is_file()]
    if missing:
        raise ReplayError(
            f"{root}: missing table(s) {', '.join(missing)} (the importer reads "
            f"{', '.join(f'{t}.json' for t in TABLES)})"
        )
    return root


def _load(path: Path, fields: tuple[str, ...]) -> dict[str, Record]:
    """The records of one table by token, in file order, with `fields` checked present."""
    try:
        with path.open("rb") as f:
            # 12-17% of a table's load (100k-300k sample_data records).
            rows = json.load(f, object_pairs_hook=unique_keys)
    except OSError as e:
        raise ReplayError(f"{path}: cannot read the table ({e.strerror or e})") from e
    except DuplicateKeyError as e:
        # The hook sees one object, not its place in the file: the token names the record.
        token = e.record.get("token")
        name = f"the record of token {token}" if isinstance(token, str) else "an object"
        key = e.key if len(e.key) <= 40 else e.key[:40] + "..."
        raise ReplayError(f"{path}: {name} gives the key {key!r} twice") from None
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        raise ReplayError(f"{path}: not JSON ({e})") from e
    except RecursionError:  # the parser recurses per nesting level
        raise ReplayError(f"{path}: not JSON (arrays and objects nested too deeply)") from None
    if not isinstance(rows, list):
        kind = _JSON_TYPES.get(type(rows), type(rows).__name__)
        raise ReplayError(f"{path}: not a list of records (a nuScenes table) but {kind}")
    out: dict[str, Record] = {}
    bad_field = _type_check(fields)
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise ReplayError(f"{path}: record {i} is not a JSON object")
        lacking = [k for k in ("token", *fields) if k not in row]
        if lacking:
            name = f"record {i} (token {row['token']})" if "token" in row else f"record {i}"
            raise ReplayError(f"{path}: {name} lacks field(s) {', '.join(lacking)}")
        if (bad := bad_field(row)) is not None:
            raise _wrong_type(path, i, row, bad)
        if row["token"] in out:
            raise ReplayError(f"{path}: token {row['token']} appears twice")
        out[row["token"]] = row
    return out


@dataclass(frozen=True)
class NuScenesTables:
    """The tables of one nuScenes version folder (`root`), by table and token, with the reverse
    links of the devkit: each sample's keyframe `sample_data` per channel (`keyframes`), each
    sample's annotation tokens (`annotations`, in table order), each annotation's category name
    (`category_of`) and each sample_data's channel via calibrated_sensor -> sensor
    (`channel_of`). Build with `load`."""

    root: Path
    records: Mapping[str, Mapping[str, Record]]
    keyframes: Mapping[str, Mapping[str, str]]
    annotations: Mapping[str, tuple[str, ...]]
    category_of: Mapping[str, str]
    channel_of: Mapping[str, str]

    @staticmethod
    def load(dataroot: Path, version: str) -> NuScenesTables:
        """Read `dataroot`/`version`/*.json. Raises ReplayError (one line, naming the folder or
        table): DATAROOT missing; the version folder missing (listing the versions present); a
        table missing, unreadable, not JSON, not a list of records; an object giving a key
        twice; a record that is not an object, lacks a field the importer reads or repeats a
        token; a reverse link's token (sample_data -> sample/calibrated_sensor -> sensor,
        sample_annotation -> sample/instance -> category) that is not in its table."""
        root = _table_root(Path(dataroot), version)
        records = {t: _load(root / f"{t}.json", FIELDS[t]) for t in TABLES}
        tables = NuScenesTables(root, records, {}, {}, {}, {})

        def follow(table: str, record: Record, field: str, target: str) -> Record:
            return tables.get(target, record[field], via=f"{table} {record['token']}.{field}")

        keyframes: dict[str, dict[str, str]] = {s: {} for s in records["sample"]}
        channel_of: dict[str, str] = {}
        for tok, sd in records["sample_data"].items():
            calib = follow("sample_data", sd, "calibrated_sensor_token", "calibrated_sensor")
            channel = follow("calibrated_sensor", calib, "sensor_token", "sensor")["channel"]
            channel_of[tok] = channel
            if sd["is_key_frame"]:  # as the devkit: the last keyframe of a channel wins
                sample = follow("sample_data", sd, "sample_token", "sample")
                keyframes[sample["token"]][channel] = tok
        annotations: dict[str, list[str]] = {s: [] for s in records["sample"]}
        category_of: dict[str, str] = {}
        for tok, ann in records["sample_annotation"].items():
            sample = follow("sample_annotation", ann, "sample_token", "sample")
            annotations[sample["token"]].append(tok)
            instance = follow("sample_annotation", ann, "instance_token", "instance")
            category_of[tok] = follow("instance", instance, "category_token", "category")["name"]
        return NuScenesTables(
            root,
            records,
            keyframes,
            {s: tuple(a) for s, a in annotations.items()},
            category_of,
            channel_of,
        )

    def table(self, name: str) -> list[Record]:
        """The records of table `name`, in file order."""
        return list(self.records[name].values())

    def get(self, table: str, token: str, *, via: str = "") -> Record:
        """The record `token` of `table`. Raises ReplayError naming the table file (and `via`,
        where the token came from) for a token that is not there."""
        record = self.records[table].get(token)
        if record is None:
            where = f" (from {via})" if via else ""
            raise ReplayError(f"{self.root / f'{table}.json'}: no record {token!r}{where}")
        return record

    def box_velocity(self, annotation: str, max_time_diff_s: float = 1.5) -> tuple[float, ...]:
        """Velocity (m/s, map axes: x, y, z) of the sample_annotation `annotation`, following the
        devkit's `NuScenes.box_velocity`: the central difference of its previous and next
        annotations, or the one-sided difference where it has only one of them; NaN for an
        annotation without neighbours, or when they are more than `max_time_diff_s` apart (twice
        that for a central difference; 1.5 s is the devkit's default). Unlike the devkit, which
        divides by it, a zero or negative time difference gives NaN too."""
        current = self.get("sample_annotation", annotation)
        has_prev, has_next = current["prev"] != "", current["next"] != ""
        if not has_prev and not has_next:
            return (math.nan,) * 3
        via = f"sample_annotation {annotation}"
        first = self.get("sample_annotation", current["prev"], via=via) if has_prev else current
        last = self.get("sample_annotation", current["next"], via=via) if has_next else current
        t_first = int(self.get("sample", first["sample_token"])["timestamp"])
        t_last = int(self.get("sample", last["sample_token"])["timestamp"])
        dt = (t_last - t_first) * 1e-6
        if has_prev and has_next:
            max_time_diff_s *= 2
        if not 0.0 < dt <= max_time_diff_s:
            return (math.nan,) * 3
        return tuple(
            (float(b) - float(a)) / dt
            for a, b in zip(first["translation"], last["translation"], strict=True)
        )
