"""The fuzzer's seeds: valid messages of a vehicle, encoded once.

Scenes are what one lidar period of a drive sends: a rig, a camera frame, a lidar sweep and a
GNSS fix that belong together. They come from real KITTI object frames (image, scan and
calibration of each frame; KITTI has no GNSS, so the fixes of the synthetic drive go with
them) and from a short synthetic drive (replay.synth.world: sweeps with per-point time offsets,
fixes with velocity and heading, its own rig). Every sensor message is moved onto the node
config's topics, so one node takes both sources as one vehicle would send them.

A `Template` keeps a message's header document decoded and its buffer frames as bytes: a case
restamps it by editing the document and packing it again (tens of microseconds), never by
copying the arrays.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import msgpack

from calibration import Rig
from perception.config import NodeConfig
from perception.msgs import wire
from perception.msgs.types import (
    CameraFrame,
    GnssFix,
    Header,
    LidarSweep,
    Message,
    RigMessage,
)
from replay.datasets.kitti_object import KittiObjectFolder
from replay.drive import DriveReader
from replay.mcap_player import checked_messages
from replay.synth.world import generate_drive

__all__ = ["Corpus", "Scene", "Template", "build_corpus", "template"]

#: KITTI object frames taken as seeds, at most.
MAX_KITTI_FRAMES = 4
#: Length of the synthetic drive taken as seeds (s, 10 sweeps per second).
SYNTH_SECONDS = 0.3


@dataclass(frozen=True)
class Template:
    """A valid message (`message`) as the wire carries it on `topic`: its header document,
    decoded, and its buffer frames. `kind`: "rig", "camera", "sweep", "gnss" or "other" (not
    a sensor input); `origin` names where it came from."""

    kind: str
    origin: str
    message: Message
    topic: str
    doc: dict[str, Any]
    buffers: tuple[bytes, ...]

    def restamped(self, stamp_ns: int, seq: int) -> dict[str, Any]:
        """A copy of the header document with `stamp_ns` and `seq` (the rest shared)."""
        return {**self.doc, "header": {**self.doc["header"], "stamp_ns": stamp_ns, "seq": seq}}

    def frames(self, stamp_ns: int, seq: int) -> list[Any]:
        """The wire frames, restamped."""
        doc = self.restamped(stamp_ns, seq)
        return [self.topic.encode(), msgpack.packb(doc, use_bin_type=True), *self.buffers]


def template(kind: str, origin: str, msg: Message, topic: str) -> Template:
    """`msg` encoded as a Template on `topic`. Raises WireError for an invalid message."""
    frames = wire.encode(msg, topic)
    doc = msgpack.unpackb(bytes(frames[1]), raw=False)
    return Template(kind, origin, msg, topic, doc, tuple(bytes(f) for f in frames[2:]))


@dataclass(frozen=True)
class Scene:
    """What one lidar period sends. `source` groups the scenes of one calibration (a KITTI
    frame, the synthetic drive)."""

    source: str
    rig: Template
    camera: Template
    sweep: Template
    gnss: Template


@dataclass(frozen=True)
class Corpus:
    """The seeds: scenes, `default_rig` (the node's rig before any rig message), and a camera
    image of the first scene encoded as JPEG and PNG (at a quarter of its size), by encoding
    name."""

    scenes: tuple[Scene, ...]
    default_rig: Rig
    encoded_images: dict[str, bytes]

    def templates(self) -> list[Template]:
        """Every sensor template, scene by scene."""
        return [t for s in self.scenes for t in (s.rig, s.camera, s.sweep, s.gnss)]


def _on(msg: Message, stream: str) -> Message:
    return dataclasses.replace(msg, header=dataclasses.replace(msg.header, stream=stream))


def _synthetic(work_dir: Path, seed: int) -> tuple[Rig, list[Message]]:
    path = work_dir / f"fuzz-synth-{seed}.mcap"
    generate_drive(path, seed=seed, seconds=SYNTH_SECONDS)
    reader = DriveReader(path)
    messages = [r.message for r in checked_messages(reader)]
    rig = reader.rig
    if rig is None:
        raise AssertionError(f"{path}: the synthetic drive has no rig")
    return rig, messages


def build_corpus(
    config: NodeConfig, kitti_dir: Path | None, *, synth_seed: int = 1, work_dir: Path | None = None
) -> Corpus:
    """The scenes of up to `MAX_KITTI_FRAMES` KITTI object frames under `kitti_dir` (None: no
    KITTI scenes) and of a `SYNTH_SECONDS` synthetic drive generated into `work_dir` (a
    temporary folder by default), on `config`'s topics."""
    inputs = config.inputs
    camera_topic = inputs.camera_topics[0]
    with tempfile.TemporaryDirectory(prefix="perception-fuzz-") as tmp:
        synth_rig, synth = _synthetic(Path(work_dir or tmp), synth_seed)
    fixes = [m for m in synth if isinstance(m, GnssFix)]
    sweeps = [m for m in synth if isinstance(m, LidarSweep)]
    cameras = [m for m in synth if isinstance(m, CameraFrame)]
    synth_rig_msg = RigMessage(Header(inputs.rig_topic, 0, 0, "vehicle"), synth_rig.to_dict())
    gnss = [
        template("gnss", f"synthetic fix {i}", _on(f, inputs.gnss_topic), inputs.gnss_topic)
        for i, f in enumerate(fixes)
    ]
    scenes: list[Scene] = []
    for i, (sweep, camera) in enumerate(zip(sweeps, cameras, strict=False)):
        origin = f"synthetic {i}"
        scenes.append(
            Scene(
                "synthetic",
                template("rig", "synthetic rig", synth_rig_msg, inputs.rig_topic),
                template("camera", origin, _on(camera, camera_topic), camera_topic),
                template("sweep", origin, _on(sweep, inputs.lidar_topic), inputs.lidar_topic),
                gnss[i % len(gnss)],
            )
        )
    default_rig = synth_rig
    if kitti_dir is not None:
        folder = KittiObjectFolder(kitti_dir)
        for index in range(min(MAX_KITTI_FRAMES, len(folder))):
            rig_msg, camera_msg, sweep_msg = folder.frame_messages(index, 0)
            origin = f"KITTI {folder.frames[index].frame_id}"
            scenes.append(
                Scene(
                    origin,
                    template("rig", origin, _on(rig_msg, inputs.rig_topic), inputs.rig_topic),
                    template("camera", origin, _on(camera_msg, camera_topic), camera_topic),
                    template(
                        "sweep", origin, _on(sweep_msg, inputs.lidar_topic), inputs.lidar_topic
                    ),
                    gnss[index % len(gnss)],
                )
            )
            if index == 0:
                assert isinstance(rig_msg, RigMessage)
                default_rig = Rig.from_dict(rig_msg.rig)
    image = cameras[0].image
    assert image is not None
    small = cv2.resize(image, (image.shape[1] // 4, image.shape[0] // 4))
    encoded = {}
    for name, ext in (("jpeg", ".jpg"), ("png", ".png")):
        ok, blob = cv2.imencode(ext, small)
        assert ok, f"cannot encode {ext}"
        encoded[name] = blob.tobytes()
    return Corpus(tuple(scenes), default_rig, encoded)


def others(messages: Sequence[Message]) -> list[Template]:
    """Templates of messages that are not sensor inputs (DetectionLists, Diagnostics), each on
    its own stream."""
    return [template("other", type(m).__name__, m, m.header.stream) for m in messages]
