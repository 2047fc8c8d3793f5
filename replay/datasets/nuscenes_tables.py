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
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


def _versions(dataroot: Path) -> list[str]:
    """The version folders under `dataroot` (those holding a scene table), sorted."""
    try:
        return sorted(p.name for p in dataroot.iterdir() if (p / "scene.json").is_file())
    except OSError:
        return []


def _table_root(dataroot: Path, version: str) -> Path:
    """The version folder, after checking it and every table are there."""
    if not dataroot.is_dir():
        raise ReplayError(f"{dataroot}: nuScenes DATAROOT does not exist")
    root = dataroot / version
    if not root.is_dir():
        found = ", ".join(_versions(dataroot)) or "none"
        raise ReplayError(
            f"{root}: missing (the tables of version {version}); versions here: {found}"
        )
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
            rows = json.load(f)
    except OSError as e:
        raise ReplayError(f"{path}: cannot read the table ({e.strerror or e})") from e
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        raise ReplayError(f"{path}: not JSON ({e})") from e
    except RecursionError:  # the parser recurses per nesting level
        raise ReplayError(f"{path}: not JSON (arrays and objects nested too deeply)") from None
    if not isinstance(rows, list):
        kind = _JSON_TYPES.get(type(rows), type(rows).__name__)
        raise ReplayError(f"{path}: not a list of records (a nuScenes table) but {kind}")
    out: dict[str, Record] = {}
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise ReplayError(f"{path}: record {i} is not a JSON object")
        lacking = [k for k in ("token", *fields) if k not in row]
        if lacking:
            name = f"record {i} (token {row['token']})" if "token" in row else f"record {i}"
            raise ReplayError(f"{path}: {name} lacks field(s) {', '.join(lacking)}")
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
        table missing, unreadable, not JSON, not a list of records; a record that is not an
        object, lacks a field the importer reads or repeats a token; a reverse link's token
        (sample_data -> sample/calibrated_sensor -> sensor, sample_annotation -> sample/instance
        -> category) that is not in its table."""
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
