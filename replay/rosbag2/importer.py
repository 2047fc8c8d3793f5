"""ROS 2 bag -> drive (`perception import rosbag2 BAG --out DRIVE.mcap`).

Two passes over the bag. The first reads the small topics (tf_static, CameraInfo, the GNSS
velocity) and the lidar's and GNSS's frame ids; the second converts the sensor topics in
receive order (replay.rosbag2.convert), each written with the bag's receive time as its log
time. The rig (replay.rosbag2.rig) is built from the first transform of each tf frame and
the first CameraInfo of each camera, so the data before them is calibrated too; it is the
drive's rig, written first (stamped at the first sensor message's stamp). When a later
tf_static or CameraInfo changes it, the new rig is written as a RigMessage before the next
sensor message, stamped with that message's stamp (a rig is in force from its stamp on).
A `rig:` file in `--topics` replaces tf_static and CameraInfo.

A camera's images must have the size of one of its calibrations (a CameraInfo, or the rig
file's camera): the intrinsics are per size, so an image of a size no calibration has (a
camera reconfigured mid-drive without a CameraInfo of its new size) is refused with the
bag. An image of a calibrated size received before the CameraInfo of that size took effect
is imported and counted in a warning: the node leaves it out as unfit.

Faults of single messages that a recording has now and then are skipped, counted per topic
in the warnings with the first one's place (one glitch must not end the import of a long bag):
a fix without a position, a compressed image cut short or whose header gives no size (a
camera driver's damaged frame), a message stamped as the one before it on its topic (a driver
that repeats a stamp). A camera topic whose every image is damaged is refused: that is a fault
of the camera or of how its images are read, not a glitch.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from calibration import CalibrationError, Rig, load_rig
from calibration.images import encoded_image_size
from perception.msgs.schema import DEFAULT_LIMITS, WireLimits
from perception.msgs.types import CameraFrame, GnssFix, Message, RigMessage
from perception.msgs.types import Header as NodeHeader
from replay.datasets.importers import (
    ImportProgress,
    ImportStats,
    atomic_drive,
    camera_offsets_ms,
    encoded_image_fault,
)
from replay.datasets.kitti_object import LIDAR_STREAM
from replay.drive import RIG_TOPIC
from replay.rosbag2.bag import Bag, open_bag
from replay.rosbag2.convert import (
    VELOCITY_WINDOW_NS,
    VelocitySample,
    compressed_image_to_frame,
    image_to_frame,
    navsat_to_fix,
    pointcloud_to_sweep,
    velocity_sample,
)
from replay.rosbag2.errors import Rosbag2Error
from replay.rosbag2.rig import (
    LIDAR_FRAME,
    CameraCalibration,
    TfEdge,
    build_rig,
    camera_calibration,
    tf_edges,
)
from replay.rosbag2.topics import (
    COMPRESSED_IMAGE,
    GNSS_STREAM,
    CameraPlan,
    TopicPlan,
    TopicsFile,
    load_topics_file,
    plan_topics,
    rectified_by_name,
)

__all__ = ["import_rosbag2"]

_GNSS_FRAME = "gnss"
_WARNED_OFFSET_MS = 0.5  # camera offsets below this are not worth a config change


@dataclass
class _Calibration:
    """What the first pass read: tf_static and CameraInfo events in receive order, velocity
    samples by stamp, the lidar's and GNSS's frame ids."""

    tf: list[tuple[int, list[TfEdge]]] = field(default_factory=list)
    cameras: list[tuple[int, str, CameraCalibration]] = field(default_factory=list)
    velocities: list[VelocitySample] = field(default_factory=list)
    lidar_frame: str = ""
    gnss_frame: str | None = None


class _RigState:
    """The rig in force as the second pass goes: calibration events applied up to a receive
    time. It starts from each frame's and camera's first value."""

    def __init__(
        self, calib: _Calibration, plan: TopicPlan, topics_file: TopicsFile | None, source: str
    ) -> None:
        self._calib = calib
        self._source = source
        self._vehicle = topics_file.vehicle_frame if topics_file else None
        self._events: list[tuple[int, int, list[TfEdge] | tuple[str, CameraCalibration]]] = []
        for i, (t, edges) in enumerate(calib.tf):
            self._events.append((t, i, edges))
        for i, (t, name, cal) in enumerate(calib.cameras, start=len(calib.tf)):
            self._events.append((t, i, (name, cal)))
        self._events.sort(key=lambda e: (e[0], e[1]))
        self._next = 0
        self.tf: dict[str, TfEdge] = {}
        self.cams: dict[str, CameraCalibration] = {}
        for _t, _i, event in self._events:
            if isinstance(event, tuple):
                self.cams.setdefault(event[0], event[1])
            else:
                for edge in event:
                    self.tf.setdefault(edge.child, edge)
        for cam in plan.cameras:
            if cam.name not in self.cams:
                expected = cam.info_topic or "<namespace>/camera_info"
                raise Rosbag2Error(
                    f"{source}: camera {cam.topic} has no CameraInfo ({expected} holds none): "
                    "name its topic with `camera_info:` in --topics, or give a rig file (`rig:`)"
                )

    def advance(self, log_time_ns: int) -> bool:
        """Apply the events received up to `log_time_ns`; whether any was applied."""
        changed = False
        while self._next < len(self._events) and self._events[self._next][0] <= log_time_ns:
            event = self._events[self._next][2]
            if isinstance(event, tuple):
                self.cams[event[0]] = event[1]
            else:
                self.tf.update((e.child, e) for e in event)
            self._next += 1
            changed = True
        return changed

    def rig(self) -> Rig:
        return build_rig(
            self.tf,
            lidar_frame=self._calib.lidar_frame,
            cameras=self.cams,
            gnss_frame=self._calib.gnss_frame,
            vehicle_frame=self._vehicle,
            source=self._source,
        )


def _where(bag: Bag, topic: str, log_time: int) -> str:
    return f"{bag.path}: {topic} at receive time {log_time}"


@contextmanager
def _as_ros_defines(where: str, msgtype: str) -> Iterator[None]:
    """A message read as ROS 2 defines its type. A bag stores its own definitions, and one
    that defines a standard type otherwise (a PointCloud2 without a header) decoded fine and
    then failed as "unexpected AttributeError"."""
    try:
        yield
    except AttributeError as e:
        raise Rosbag2Error(
            f"{where}: {msgtype} as the bag defines it has no field {e.name!r} (not the ROS 2 "
            "message of that name)"
        ) from e
    except (TypeError, ValueError, OverflowError) as e:
        # A field of another type (a string latitude, a 4-element K) fails as int(), float()
        # or reshape meet it: "unexpected ValueError" blamed the importer.
        raise Rosbag2Error(
            f"{where}: {msgtype} as the bag defines it is not the ROS 2 message of that name ({e})"
        ) from e


def _first_pass(bag: Bag, plan: TopicPlan) -> _Calibration:
    calib = _Calibration()
    infos: dict[str, list[CameraPlan]] = {}
    for cam in plan.cameras:
        if cam.info_topic is not None:
            infos.setdefault(cam.info_topic, []).append(cam)
    velocity_topic = plan.velocity[0] if plan.velocity else None
    small = [*plan.tf_static, *infos, *([velocity_topic] if velocity_topic else [])]
    for topic, msgtype, log_time, data in bag.raw(small):
        where = _where(bag, topic, log_time)
        msg = bag.decode(data, msgtype, where)
        with _as_ros_defines(where, msgtype):
            if topic in plan.tf_static:
                calib.tf.append((log_time, tf_edges(msg, where)))
            elif topic == velocity_topic:
                sample = velocity_sample(msg, msgtype, where)
                if sample is not None:
                    calib.velocities.append(sample)
            for cam in infos.get(topic, []):
                rectified = cam.rectified
                if rectified is None:
                    rectified = rectified_by_name(cam.topic, cam.msgtype)
                cal = camera_calibration(msg, rectified=rectified, where=f"{where} ({cam.stream})")
                calib.cameras.append((log_time, cam.name, cal))
    calib.velocities.sort(key=lambda s: s.stamp_ns)
    lidar_frame = _first_frame_id(bag, plan.lidar.topic)
    if lidar_frame is None:
        # Said here: the rig built without it blamed the cameras' tf frames instead.
        raise Rosbag2Error(f"{bag.path}: the lidar topic {plan.lidar.topic} has no messages")
    calib.lidar_frame = lidar_frame or LIDAR_FRAME
    if plan.gnss is not None:
        calib.gnss_frame = _first_frame_id(bag, plan.gnss) or None
    return calib


def _first_frame_id(bag: Bag, topic: str) -> str | None:
    """The frame id of the topic's first message ("" when it gives none); None when the topic
    has no message."""
    for _topic, msgtype, log_time, data in bag.raw([topic]):
        where = _where(bag, topic, log_time)
        msg = bag.decode(data, msgtype, where)
        with _as_ros_defines(where, msgtype):
            return str(msg.header.frame_id).lstrip("/")
    return None


def _nearest_velocity(samples: list[VelocitySample], stamp: int) -> VelocitySample | None:
    if not samples:
        return None
    stamps = [s.stamp_ns for s in samples]  # small: a bag's GNSS velocity samples
    i = bisect.bisect_left(stamps, stamp)
    near = [samples[j] for j in (i - 1, i) if 0 <= j < len(samples)]
    best = min(near, key=lambda s: abs(s.stamp_ns - stamp))
    return best if abs(best.stamp_ns - stamp) <= VELOCITY_WINDOW_NS else None


@dataclass
class _Skipped:
    """Messages of one topic left out for one fault: how many, and the first one's place and
    fault."""

    count: int
    first: str


class _Converter:
    """Bag messages of the data topics -> node messages, with per-stream sequence numbers.

    Faults of single messages that a recording has now and then are skipped and counted (one
    glitch must not end the import of a long bag; the stats' warnings say them): a fix without
    a position, a compressed image that is cut short or gives no size in its header (a camera
    driver's damaged frame: the node would leave it out), a message stamped as the one before
    it on its topic (a driver that repeats a stamp: the node drops the second, not after its
    stream's last)."""

    def __init__(self, bag: Bag, plan: TopicPlan, calib: _Calibration) -> None:
        self._bag = bag
        self._plan = plan
        self._calib = calib
        self._cameras = {c.topic: c for c in plan.cameras}
        self.seq: dict[str, int] = {}
        self.no_fix = 0
        self._last_stamp: dict[str, int] = {}
        #: Per topic: the messages received, the damaged images and the repeated stamps left out.
        self.received: dict[str, int] = {}
        self.damaged: dict[str, _Skipped] = {}
        self.repeated: dict[str, _Skipped] = {}

    def convert(self, topic: str, msgtype: str, log_time: int, data: bytes) -> Message | None:
        where = _where(self._bag, topic, log_time)
        msg = self._bag.decode(data, msgtype, where)
        self.received[topic] = self.received.get(topic, 0) + 1
        # Where a skipped message was: its place on the topic, as rosbag2 tools count.
        at = f"message {self.received[topic]} of the topic, received at {log_time} ns"
        with _as_ros_defines(where, msgtype):
            return self._convert(topic, msgtype, msg, where, at)

    @staticmethod
    def _skip(skipped: dict[str, _Skipped], topic: str, first: str) -> None:
        if topic in skipped:
            skipped[topic].count += 1
        else:
            skipped[topic] = _Skipped(1, first)

    def _convert(self, topic: str, msgtype: str, msg: Any, where: str, at: str) -> Message | None:
        stream = self._plan.streams[topic]
        seq = self.seq.get(stream, 0)
        out: Message | None
        if topic == self._plan.lidar.topic:
            frame = str(msg.header.frame_id).lstrip("/") or LIDAR_FRAME
            if frame != self._calib.lidar_frame:
                # The rig places the lidar by its first sweep's frame: a sweep in another
                # frame would be put where that one is, without a word.
                raise Rosbag2Error(
                    f"{where}: the sweep is in frame {frame!r}, the lidar topic's first in "
                    f"{self._calib.lidar_frame!r} (the rig holds one lidar frame)"
                )
            out = pointcloud_to_sweep(
                msg,
                stream=stream,
                frame_id=LIDAR_FRAME,
                seq=seq,
                time_field=self._plan.lidar.time_field,
                where=where,
            )
        elif topic in self._cameras:
            kwargs: dict[str, Any] = {"stream": stream, "frame_id": stream, "seq": seq}
            if msgtype == COMPRESSED_IMAGE:
                out = compressed_image_to_frame(msg, where=where, **kwargs)
                assert out.data is not None and out.encoding is not None
                fault = encoded_image_fault(out.data, out.encoding)
                if fault is not None:
                    self._skip(self.damaged, topic, f"{at}: {fault}")
                    return None
            else:
                out = image_to_frame(msg, where=where, **kwargs)
        else:
            stamp = int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)
            velocity = _nearest_velocity(self._calib.velocities, stamp)
            out = navsat_to_fix(
                msg, stream=GNSS_STREAM, frame_id=_GNSS_FRAME, seq=seq, velocity=velocity,
                where=where,
            )  # fmt: skip
            if out is None:
                self.no_fix += 1
                return None
        stamp = out.header.stamp_ns
        if self._last_stamp.get(stream) == stamp:
            self._skip(self.repeated, topic, f"{at}, stamp {stamp} ns")
            return None
        self._last_stamp[stream] = stamp
        self.seq[stream] = seq + 1
        return out

    def warnings(self) -> list[str]:
        """The messages skipped, per topic and fault."""
        out = [
            f"{topic}: {s.count} of {self.received[topic]} image(s) damaged, skipped (the "
            f"first: {s.first})"
            for topic, s in self.damaged.items()
        ]
        out += [
            f"{topic}: {s.count} message(s) repeating the stamp of the one before on the "
            f"topic, skipped (the first: {s.first})"
            for topic, s in self.repeated.items()
        ]
        return out

    def check_cameras(self, source: Path) -> None:
        """Raises Rosbag2Error for a camera topic whose every image is damaged: a fault of the
        camera or of how its images are read, not a glitch to skip."""
        for topic, s in self.damaged.items():
            if s.count == self.received[topic]:
                raise Rosbag2Error(
                    f"{source}: {topic}: every one of its {s.count} image(s) is damaged (the "
                    f"first: {s.first})"
                )


class _ImageSizes:
    """Checks each camera image against the sizes its camera is calibrated for."""

    def __init__(self, plan: TopicPlan, calib: _Calibration, rig_file: Path | None) -> None:
        self._cameras = {c.topic: c for c in plan.cameras}
        self._rig_file = rig_file
        self._calibrated: dict[str, set[tuple[int, int]]] = {}
        for _t, name, cal in calib.cameras:
            self._calibrated.setdefault(name, set()).add(cal.camera.size)
        #: Images per topic of a calibrated size other than the rig's in force at the time.
        self.early: dict[str, int] = {}

    def check(self, frame: CameraFrame, topic: str, rig: Rig, where: str) -> None:
        """Raises Rosbag2Error for an image of a size no calibration of its camera has."""
        if frame.image is not None:
            size: tuple[int, int] | None = (frame.image.shape[1], frame.image.shape[0])
        else:
            assert frame.data is not None
            # Never None here: an image whose header gives no size was skipped as damaged.
            size = encoded_image_size(frame.data)
        cam = self._cameras[topic]
        in_force = rig.cameras[cam.name].size
        if size is None or size == in_force:
            return
        calibrated = {in_force} if self._rig_file else self._calibrated.get(cam.name, {in_force})
        if size in calibrated:
            self.early[topic] = self.early.get(topic, 0) + 1
            return
        sizes = " and ".join(f"{w}x{h}" for w, h in sorted(calibrated))
        source = (
            f"the --topics rig file {self._rig_file}"
            if self._rig_file
            else f"its CameraInfo on {cam.info_topic}"
        )
        raise Rosbag2Error(
            f"{where}: image {frame.header.seq + 1} of the topic (stamp "
            f"{frame.header.stamp_ns} ns) is {size[0]}x{size[1]}, but camera {cam.name} is "
            f"calibrated for {sizes} only ({source}): intrinsics hold for one image size, and "
            "a camera reconfigured mid-drive needs a calibration of its new size"
        )

    def warnings(self) -> list[str]:
        return [
            f"{topic}: {n} image(s) received before the CameraInfo of their size; the node "
            "leaves them out as unfit (the rig in force then is of another size)"
            for topic, n in self.early.items()
        ]


def _load_rig_file(path: Path, plan: TopicPlan) -> Rig:
    try:
        rig = load_rig(path)
    except CalibrationError as e:
        raise Rosbag2Error(f"--topics rig: {e}") from e
    for cam in plan.cameras:
        if cam.name not in rig.cameras:
            raise Rosbag2Error(
                f"{path}: has no camera {cam.name!r} for {cam.topic} (cameras: "
                f"{', '.join(rig.cameras) or 'none'})"
            )
    if LIDAR_FRAME not in rig.frames:
        raise Rosbag2Error(f"{path}: has no frame {LIDAR_FRAME!r} for the lidar")
    return rig


def import_rosbag2(
    source: Path,
    out: Path,
    *,
    topics: Path | None = None,
    progress: ImportProgress | None = None,
    compression: str | None = "zstd",
    overwrite: bool = True,
    limits: WireLimits = DEFAULT_LIMITS,
) -> ImportStats:
    """Import the ROS 2 bag `source` (a bag folder, or its `.mcap` / `.db3` storage file;
    sqlite3 or mcap storage) into the drive `out` (docs/rosbag2.md). `topics`: a `--topics`
    YAML file overriding the mapping by message type. `progress(done, total)` is called after
    each sensor message written. Topics not imported are listed in the stats' warnings.
    `overwrite`: see replay.datasets.importers.atomic_drive. `limits`: what a message may
    hold, kept with the drive (a node config's `limits:` raised for a 12 MP camera).

    The drive appears only when complete. Raises Rosbag2Error (a ReplayError) naming the bag,
    topic or file: a missing or unreadable bag or `--topics` file, no lidar topic, a topic
    mapped to a role its type cannot fill or whose type is unknown, a camera without
    CameraInfo, tf frames that do not connect the sensors, a message that cannot be decoded
    or converted, a camera topic whose every compressed image is damaged; a ReplayError
    naming the message's topic and log time for one converted but beyond the drive's limits
    (an image above the wire's size limit)."""
    begin = time.perf_counter()
    source = Path(source)
    topics_file = load_topics_file(topics) if topics is not None else None
    with open_bag(source) as bag:
        plan = plan_topics(bag.topics, bag.known_types, topics_file, str(source))
        calib = _first_pass(bag, plan)
        fixed_rig = None
        state = None
        rig_file = topics_file.rig if topics_file is not None else None
        if rig_file is not None:
            fixed_rig = _load_rig_file(rig_file, plan)
        else:
            state = _RigState(calib, plan, topics_file, str(source))
        rig = fixed_rig or (state.rig() if state else None)
        assert rig is not None
        rig_doc = rig.to_dict()
        converter = _Converter(bag, plan, calib)
        sizes = _ImageSizes(plan, calib, rig_file)
        data_topics = list(plan.streams)
        total = bag.count(data_topics)
        counts: dict[str, int] = {}
        sweeps: list[int] = []
        camera_stamps: dict[str, list[int]] = {c.stream: [] for c in plan.cameras}
        first = last = None
        with atomic_drive(out, compression, overwrite=overwrite, limits=limits) as writer:
            for done, (topic, msgtype, log_time, data) in enumerate(bag.raw(data_topics), 1):
                msg = converter.convert(topic, msgtype, log_time, data)
                if msg is not None:
                    stamp = msg.header.stamp_ns
                    if first is None:
                        writer.write_rig(rig, stamp)
                        counts[RIG_TOPIC] = 1
                    elif state is not None and state.advance(log_time):
                        new = state.rig()
                        if new.to_dict() != rig_doc:
                            rig, rig_doc = new, new.to_dict()
                            header = NodeHeader(RIG_TOPIC, counts[RIG_TOPIC], stamp, "vehicle")
                            writer.write(RigMessage(header, rig_doc), log_time, RIG_TOPIC,
                                         source=f"{source}: rig")  # fmt: skip
                            counts[RIG_TOPIC] += 1
                    if isinstance(msg, CameraFrame):
                        sizes.check(msg, topic, rig, _where(bag, topic, log_time))
                    stream = msg.header.stream
                    writer.write(msg, log_time, stream, source=_where(bag, topic, log_time))
                    counts[stream] = counts.get(stream, 0) + 1
                    first = stamp if first is None else min(first, stamp)
                    last = stamp if last is None else max(last, stamp)
                    if stream == LIDAR_STREAM:
                        sweeps.append(stamp)
                    elif not isinstance(msg, GnssFix):
                        camera_stamps[stream].append(stamp)
                if progress is not None:
                    progress(done, total)
            if counts.get(LIDAR_STREAM, 0) == 0:
                raise Rosbag2Error(f"{source}: the lidar topic {plan.lidar.topic} has no messages")
            converter.check_cameras(source)
            written = writer.bytes_written
    warnings = [f"skipped {t} ({m}): {why}" for t, m, why in plan.skipped]
    warnings += [
        f"skipped {t} (several message types: {', '.join(m)})" for t, m in sorted(bag.mixed.items())
    ]
    if converter.no_fix:
        warnings.append(f"{plan.gnss}: {converter.no_fix} fix(es) without a position skipped")
    warnings += converter.warnings()
    warnings += sizes.warnings()
    warnings += list(rig.warnings)
    return ImportStats(
        path=Path(out),
        messages=counts,
        first_stamp_ns=first or 0,
        last_stamp_ns=last or 0,
        bytes=written,
        wall_s=time.perf_counter() - begin,
        camera_offsets_ms=camera_offsets_ms(sweeps, camera_stamps, _WARNED_OFFSET_MS),
        warnings=tuple(warnings),
    )
