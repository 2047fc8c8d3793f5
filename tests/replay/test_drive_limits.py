"""A drive keeps the wire limits it was written under (replay.drive.LIMITS_METADATA): a camera
above the default 10 MP, recorded from a node whose `limits:` were raised for it, is read back,
played and replayed, not refused as undecodable."""

from __future__ import annotations

import dataclasses
import functools
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from perception.errors import WireError
from perception.msgs.schema import DEFAULT_LIMITS, WireLimits
from perception.msgs.types import CameraFrame, GnssFix, Header
from replay.datasets.kitti_object import KittiObjectFolder
from replay.drive import LIMITS_METADATA, DriveReader, DriveWriter
from replay.errors import ReplayError

#: 12 MP, above the default `max_image_pixels` (10 MP).
BIG_PIXELS = 3000 * 4000
#: The limits of a node configured for a 12 MP camera.
ROOMY = dataclasses.replace(DEFAULT_LIMITS, max_image_pixels=13_000_000)


@functools.cache
def _big_png() -> bytes:
    # Black compresses to 40 kB: the pixel count is read from the PNG header, not decoded.
    ok, png = cv2.imencode(".png", np.zeros((3000, 4000, 3), np.uint8))
    assert ok
    return png.tobytes()


def big_frame(seq: int, stream: str = "camera/front") -> CameraFrame:
    """A 12 MP PNG camera frame stamped `seq` ms."""
    return CameraFrame(
        Header(stream, seq, seq * 1_000_000, stream), data=_big_png(), encoding="png"
    )


def big_kitti_drive(kitti_dir: Path, path: Path) -> Path:
    """The KITTI object frames as a drive written under `ROOMY`, each camera frame a 12 MP
    one (with the frame's own header)."""
    with DriveWriter(path, limits=ROOMY) as writer:
        for msg in KittiObjectFolder(kitti_dir).messages():
            if isinstance(msg, CameraFrame):
                writer.write(
                    dataclasses.replace(big_frame(0), header=msg.header), msg.header.stamp_ns
                )
            else:
                writer.write(msg, msg.header.stamp_ns)
    return path


def _write(path: Path, limits: WireLimits = ROOMY) -> None:
    with DriveWriter(path, limits=limits) as writer:
        for seq in range(3):
            writer.write(big_frame(seq), seq * 1_000_000)


def test_a_drive_written_under_raised_limits_is_read_back_with_them(tmp_path: Path) -> None:
    with DriveWriter(tmp_path / "default.mcap") as writer, pytest.raises(WireError, match="above"):
        writer.write(big_frame(0), 0)
    path = tmp_path / "roomy.mcap"
    _write(path)
    reader = DriveReader(path)
    assert reader.metadata(LIMITS_METADATA) == {
        f.name: str(getattr(ROOMY, f.name)) for f in dataclasses.fields(WireLimits)
    }
    assert reader.limits == ROOMY
    got = [r.message for r in reader.messages()]
    assert [m.header.seq for m in got] == [0, 1, 2]
    assert all(isinstance(m, CameraFrame) and m.data == _big_png() for m in got)
    # Read with other limits (a node configured so would refuse them), each is named, and
    # said to be allowed by the drive's own, which are read once, not once a message.
    errors: list[ReplayError] = []
    held = DriveReader(path, limits=DEFAULT_LIMITS)
    reads: list[str] = []
    metadata = held.metadata

    def counted(name: str) -> dict[str, str] | None:
        reads.append(name)
        return metadata(name)

    held.metadata = counted  # type: ignore[method-assign]
    assert list(held.messages(on_error=errors.append)) == []
    assert len(errors) == 3
    assert f"above the limit of {DEFAULT_LIMITS.max_image_pixels}); the drive was" in str(errors[2])
    assert reads == [LIMITS_METADATA]


def test_a_drive_of_the_default_limits_names_none(tmp_path: Path) -> None:
    path = tmp_path / "plain.mcap"
    with DriveWriter(path) as writer:
        writer.write(GnssFix(Header("gnss", 0, 1_000, "gnss"), 49.0, 8.4, 100.0), 1_000)
    reader = DriveReader(path)
    assert reader.metadata(LIMITS_METADATA) is None
    assert reader.limits == DEFAULT_LIMITS


@pytest.mark.parametrize(
    ("stored", "problem"),
    [
        ({"max_image_pixels": "-5"}, "max_image_pixels: not a positive integer: '-5'"),
        ({"max_image_pixels": "1" * 40}, "max_image_pixels: not a positive integer"),
        ({"max_sweep_duration_ns": "99000000000"}, "max_sweep_duration_ns: must be at most"),
    ],
)
def test_invalid_recorded_limits_are_said_once_and_the_defaults_used(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, stored: dict[str, str], problem: str
) -> None:
    path = tmp_path / "odd.mcap"
    with DriveWriter(path) as writer:
        writer.write_metadata(LIMITS_METADATA, stored)
        writer.write(GnssFix(Header("gnss", 0, 1_000, "gnss"), 49.0, 8.4, 100.0), 1_000)
    with caplog.at_level(logging.WARNING):
        reader = DriveReader(path)
        assert reader.limits == DEFAULT_LIMITS
        assert [r.message.header.seq for r in reader.messages()] == [0]
        assert DriveReader(path).limits == DEFAULT_LIMITS
    warnings = [r.getMessage() for r in caplog.records if LIMITS_METADATA in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith(f"{path}: the drive's {LIMITS_METADATA} metadata is invalid (")
    assert problem in warnings[0]
    assert warnings[0].endswith(
        "decoded with the default limits, so those above them cannot be read"
    )


def test_a_limit_this_reader_does_not_know_is_passed_over(tmp_path: Path) -> None:
    """A newer writer's limit: the rest still apply."""
    path = tmp_path / "newer.mcap"
    with DriveWriter(path) as writer:
        writer.write_metadata(
            LIMITS_METADATA, {"max_image_pixels": "13000000", "max_radar_targets": "9"}
        )
    assert DriveReader(path).limits == ROOMY


def test_recorded_limits_below_the_defaults_read_as_the_defaults(tmp_path: Path) -> None:
    """A drive written under lower limits holds nothing above them; a lower value read back
    (a damaged record: metadata has no CRC) would only refuse intact messages."""
    path = tmp_path / "low.mcap"
    low = dataclasses.replace(ROOMY, max_points=10)
    with DriveWriter(path, limits=low) as writer:
        writer.write(GnssFix(Header("gnss", 0, 1_000, "gnss"), 49.0, 8.4, 100.0), 1_000)
    assert DriveReader(path).metadata(LIMITS_METADATA)["max_points"] == "10"  # type: ignore[index]
    assert DriveReader(path).limits == ROOMY
