"""Training samples from a recorded drive (MCAP, `replay.drive`) with a ground-truth channel.

The pairing is the node's own: the drive's messages go through `perception.sync.Bundler` (with
the node's default sync settings, the input topics and camera offsets taken from the drive as
`replay.drive_config.config_for_messages` does, the drive's rig), so each sample is one
SyncedBundle the node would have processed. Its points are the sweep deskewed to its stamp in the
vehicle frame (`perception.pipeline.deskew.deskew_sweep`, as `Pipeline` does, with the bundle's
GNSS ego poses); each camera's image is undistorted as the pipeline does before its detector,
its model is the pinhole of the same K, and `camera_from_vehicle` includes the ego motion
between the sweep stamp and the camera's stamp (the bundle's GNSS twist, as `Pipeline.step`).
Without GNSS ego poses the points are not deskewed and the cameras not moved (as in the node;
`extra["deskewed"]` says which). The boxes are the ground-truth document stamped with the
sweep's stamp; boxes of other classes than the training ones go to `extra["ignore"]`.

Opening a drive reads it once to pair the messages; it keeps only where each message is (topic,
log time, stamp), not the images or points, and reads a sample's messages again on access.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from calibration import Rig
from perception.config import NodeConfig
from perception.msgs.types import CameraFrame, EgoPose, LidarSweep, Message, SyncedBundle
from perception.pipeline.deskew import deskew_sweep, ego_twist, vehicle_motion
from perception.pipeline.pipeline import frame_image
from perception.sync.bundler import Bundler
from replay.drive import GROUND_TRUTH_TOPIC, DriveReader
from replay.drive_config import config_for_messages
from replay.errors import ReplayError
from replay.mcap_player import checked_messages
from replay.training.samples import CameraView, TrainingSample
from replay.training.sources._boxes import box_from_truth, split_training

__all__ = ["DriveSource"]

FloatArray = npt.NDArray[np.float64]

# Where a message is in the drive: (topic, log time ns, stamp ns).
_Where = tuple[str, int, int]


@dataclass(frozen=True)
class _Entry:
    """One bundle, without its payloads."""

    sweep: _Where
    cameras: dict[str, _Where]  # rig camera name -> frame
    rig: Rig
    ego_pose: EgoPose | None
    ego_pose_end: EgoPose | None
    missing: tuple[str, ...]
    truth: dict[str, Any]


def _camera_name(frame: CameraFrame, stream: str, rig: Rig) -> str | None:
    """The rig camera of a frame, as the pipeline finds it (frame id, else stream name)."""
    for candidate in (frame.header.frame_id, stream):
        name = candidate.removeprefix("camera/")
        if name in rig.cameras:
            return name
    return None


class DriveSource:
    """The sweeps of a drive with a ground-truth channel, each with its camera frames.

    Raises ValueError naming the drive: it cannot be read, holds no lidar sweeps or camera
    frames, has no rig or no ground-truth channel, or a paired sweep has no ground truth."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.name = f"drive {self.path.name}"
        where = f"drive source {self.path}"
        if not self.path.is_file():
            raise ValueError(f"{where}: no such file")
        try:
            self._reader = DriveReader(self.path)
            truth = {int(d["stamp_ns"]): d for d in self._reader.ground_truth()}
            if not truth:
                raise ValueError(
                    f"{where}: no ground-truth channel ({GROUND_TRUTH_TOPIC}); training needs "
                    "a drive written with its ground truth (e.g. replay.synth.world)"
                )
            rig = self._reader.rig
            if rig is None:
                raise ValueError(f"{where}: the drive has no rig")
            self._entries = self._index(rig, truth, where)
        except ReplayError as e:
            raise ValueError(f"{where}: {e}") from e
        if not self._entries:
            raise ValueError(f"{where}: no sweep could be paired with camera frames and a rig")

    def _index(self, rig: Rig, truth: dict[int, dict[str, Any]], where: str) -> list[_Entry]:
        recorded = ((r.topic, r.message) for r in checked_messages(self._reader))
        config = config_for_messages(recorded, NodeConfig())
        inputs = config.inputs
        bundler = Bundler.from_config(inputs.camera_topics, config.sync, default_rig=rig)
        topics = [inputs.lidar_topic, *inputs.camera_topics, inputs.gnss_topic, inputs.rig_topic]
        log_times: dict[tuple[str, int], _Where] = {}
        entries: list[_Entry] = []

        def add(bundles: list[SyncedBundle]) -> None:
            for b in bundles:
                stamp = b.lidar.header.stamp_ns
                doc = truth.get(stamp)
                if doc is None:
                    raise ValueError(
                        f"{where}: sweep {b.lidar.header.seq} (stamp {stamp}) has no ground truth"
                    )
                cameras = {}
                for stream, frame in sorted(b.cameras.items()):
                    name = _camera_name(frame, stream, b.rig)
                    if name is not None:
                        cameras[name] = log_times[(frame.header.stream, frame.header.stamp_ns)]
                entries.append(
                    _Entry(
                        log_times[(b.lidar.header.stream, stamp)],
                        cameras,
                        b.rig,
                        b.ego_pose,
                        b.ego_pose_end,
                        b.missing,
                        doc,
                    )
                )

        for rec in checked_messages(self._reader, topics=topics):
            msg: Message = rec.message
            if isinstance(msg, LidarSweep | CameraFrame):
                key = (msg.header.stream, msg.header.stamp_ns)
                log_times[key] = (rec.topic, rec.log_time_ns, msg.header.stamp_ns)
            bundler.add(msg, rec.log_time_ns)
            add(bundler.poll(rec.log_time_ns))
        add(bundler.flush())
        return entries

    def __len__(self) -> int:
        return len(self._entries)

    def describe(self) -> str:
        return f"{self.name}: {len(self):,} sweeps"

    def _read(self, where: _Where) -> Message:
        topic, log_time_ns, stamp_ns = where
        for rec in checked_messages(self._reader, topics=[topic], start_ns=log_time_ns):
            if rec.log_time_ns == log_time_ns and rec.message.header.stamp_ns == stamp_ns:
                return rec.message
            if rec.log_time_ns > log_time_ns:
                break
        raise ValueError(
            f"drive source {self.path}: {topic} message at log time {log_time_ns} is gone"
        )

    def __getitem__(self, index: int) -> TrainingSample:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"{self.name}: index {index} out of range ({n} samples)")
        entry = self._entries[index]
        sweep = self._read(entry.sweep)
        assert isinstance(sweep, LidarSweep)
        rig = entry.rig
        vehicle_from_lidar = rig.transform("vehicle", sweep.header.frame_id)
        points, deskewed = deskew_sweep(
            sweep, entry.ego_pose, entry.ego_pose_end, vehicle_from_lidar.matrix
        )
        twist = ego_twist(entry.ego_pose, entry.ego_pose_end)
        views: dict[str, CameraView] = {}
        stamps: dict[str, int] = {}
        for name, where in entry.cameras.items():
            frame = self._read(where)
            assert isinstance(frame, CameraFrame)
            camera = rig.cameras[name]
            image = camera.undistort_image(self._image(frame))
            motion = np.eye(4)
            if twist is not None:
                motion = vehicle_motion(twist, frame.header.stamp_ns - sweep.header.stamp_ns)
            camera_from_vehicle = rig.transform(f"camera/{name}", "vehicle").matrix @ motion
            views[name] = CameraView(image, camera.undistorted(), camera_from_vehicle)
            stamps[name] = frame.header.stamp_ns
        try:
            labels = [box_from_truth(b) for b in entry.truth["boxes"]]
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise ValueError(
                f"drive source {self.path}: ground truth of sweep {sweep.header.seq}: malformed "
                f"({type(e).__name__}: {e})"
            ) from e
        boxes, ignored = split_training(labels)
        extra: dict[str, object] = {
            "ignore": ignored,
            "camera_stamps_ns": stamps,
            "deskewed": deskewed,
        }
        if entry.missing:
            extra["missing_cameras"] = entry.missing
        return TrainingSample(
            name=f"drive:{self.path.name}:seq={sweep.header.seq}",
            points=np.ascontiguousarray(points, dtype=np.float32),
            cameras=views,
            boxes=boxes,
            stamp_ns=sweep.header.stamp_ns,
            extra=extra,
        )

    @staticmethod
    def _image(frame: CameraFrame) -> npt.NDArray[np.uint8]:
        return frame_image(frame)
