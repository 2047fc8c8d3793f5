"""open_source builds each kind of training source from a config entry (paths relative to the
config's folder) and refuses bad entries with one line naming the source; ConcatSource chains
sources into one index space."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from replay.training.sources import (
    ConcatSource,
    DriveSource,
    KittiSource,
    SyntheticSource,
    TrainingSource,
    check_source,
    open_source,
    open_sources,
)


def test_each_kind_is_built_from_its_entry(
    tmp_path: Path, synth_drive: Callable[[int, float], Path]
) -> None:
    synthetic = open_source({"kind": "synthetic", "seeds": {"start": 10, "count": 20}}, tmp_path)
    assert isinstance(synthetic, SyntheticSource) and isinstance(synthetic, TrainingSource)
    assert synthetic.describe() == "synthetic seeds 10-29, 10.0 s: 2,000 sweeps"
    listed = open_source({"kind": "synthetic", "seeds": [3, 1], "seconds": 0.5}, tmp_path)
    assert listed.describe() == "synthetic seeds 3, 1, 0.5 s: 10 sweeps"
    # Relative paths are taken from the config's folder.
    drive = synth_drive(2, 1.0)
    built = open_source({"kind": "drive", "path": drive.name, "name": "seed 2"}, drive.parent)
    assert isinstance(built, DriveSource) and built.name == "seed 2" and len(built) == 10


def test_kitti_entry(tmp_path: Path, kitti_dir: Path) -> None:
    kitti = open_source(
        {"kind": "kitti", "root": str(kitti_dir), "frames": [0], "labels": "label_2"}, tmp_path
    )
    assert isinstance(kitti, KittiSource) and [f.frame_id for f in kitti.frames] == ["000000"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            {"kind": "lidarsim"},
            r"training source lidarsim: unknown kind 'lidarsim' \(use synthetic",
        ),
        ({"seeds": [1]}, r"training source \?: unknown kind None"),
        ({"kind": "synthetic"}, "training source synthetic: missing key seeds"),
        ({"kind": "synthetic", "seeds": [1], "sconds": 2}, "unknown key sconds"),
        ({"kind": "synthetic", "seeds": "1-3"}, "seeds: expected a list or"),
        ({"kind": "synthetic", "seeds": {"start": 1}}, "seeds: expected a list or"),
        (
            {"kind": "synthetic", "seeds": {"start": "0", "count": 2}},
            "seeds: start must be an integer from 0 to 4,294,967,295, got '0'",
        ),
        ({"kind": "synthetic", "seeds": [-1]}, "seeds: each must be an integer from 0 to"),
        ({"kind": "synthetic", "seeds": [1], "seconds": 0}, "seconds must be > 0"),
        # Typos that would otherwise be a MemoryError once the samples are prepared.
        (
            {"kind": "synthetic", "seeds": {"start": 0, "count": 99999999999}},
            "seeds: count must be an integer from 1 to 100,000, got 99999999999",
        ),
        (
            {"kind": "synthetic", "seeds": {"start": 2**32 - 1, "count": 2}},
            "seeds: each must be an integer from 0 to 4,294,967,295, got 4294967296",
        ),
        (
            {"kind": "synthetic", "seeds": [2**64]},
            "seeds: each must be an integer from 0 to 4,294,967,295",
        ),
        ({"kind": "synthetic", "seeds": [1], "seconds": 1e9}, "seconds must be > 0 and at most"),
        ({"kind": "synthetic", "seeds": [1], "seconds": float("nan")}, "seconds must be > 0"),
        (
            {"kind": "drive", "path": "gone.mcap", "name": "d1"},
            r"training source d1: drive .*gone\.mcap does not exist",
        ),
        (
            {"kind": "kitti", "root": "nowhere"},
            r"training source kitti: KITTI folder .*nowhere does not exist",
        ),
        # They were "does not exist" too.
        (
            {"kind": "drive", "path": "."},
            r"training source drive: drive .* is not a regular file \(a folder or pipe\)$",
        ),
        (
            {"kind": "kitti", "root": "/dev/null"},
            r"training source kitti: KITTI folder /dev/null is not a folder$",
        ),
        (
            {"kind": "kitti", "root": "KITTI", "labels": "label_9"},
            "labels: 'label_9' is not one of",
        ),
        (
            {"kind": "kitti", "root": "KITTI", "frames": ["000004"]},
            r"training source kitti: kitti source .*: frame 000004 has no labels",
        ),
        ({"kind": "kitti", "root": "KITTI", "frames": "000000"}, "frames: expected a list"),
    ],
)
def test_bad_entries_raise_one_line_naming_the_source(
    spec: dict[str, Any], message: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if spec.get("root") == "KITTI":  # only these need the real data (skipped without it)
        spec = {**spec, "root": str(request.getfixturevalue("kitti_dir"))}
    with pytest.raises(ValueError, match=message) as err:
        open_source(spec, tmp_path)
    assert "\n" not in str(err.value)


def test_check_source_checks_values_but_opens_no_file() -> None:
    """What a training config runs when it is read: the missing folder waits for open_source."""
    check_source({"kind": "kitti", "root": "nowhere", "frames": [3]})
    check_source({"kind": "drive", "path": "gone.mcap"})
    with pytest.raises(ValueError, match=r"training source kitti: labels: 'x' is not one of"):
        check_source({"kind": "kitti", "root": "nowhere", "labels": "x"})
    with pytest.raises(ValueError, match=r"training source drive: path: expected a path"):
        check_source({"kind": "drive", "path": 3})
    with pytest.raises(ValueError, match=r"training source synthetic: scene: choose among"):
        check_source({"kind": "synthetic", "seeds": [1], "scene": "moon"})


def test_concat_source_chains_indices() -> None:
    a = SyntheticSource([1], 0.3)
    b = SyntheticSource([2], 0.2)
    both = ConcatSource([a, b])
    assert len(both) == 5
    assert [both[i].name for i in range(5)] == [
        "synth:seed=1:seq=0",
        "synth:seed=1:seq=1",
        "synth:seed=1:seq=2",
        "synth:seed=2:seq=0",
        "synth:seed=2:seq=1",
    ]
    assert np.array_equal(both[-1].points, b[1].points)
    assert both.describe() == (
        "2 sources, 5 samples: synthetic seed 1, 0.3 s: 3 sweeps; synthetic seed 2, 0.2 s: 2 sweeps"
    )
    with pytest.raises(IndexError):
        both[5]
    with pytest.raises(ValueError, match="no sources"):
        ConcatSource([])
    chained = open_sources([{"kind": "synthetic", "seeds": [1], "seconds": 0.3}] * 2, Path("."))
    assert len(chained) == 6
