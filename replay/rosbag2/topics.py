"""Which bag topic becomes which drive stream: the mapping by message type, and the `--topics`
YAML file that overrides it (docs/rosbag2.md has the format).

By type (a topic the YAML does not name):

- `sensor_msgs/msg/PointCloud2` -> the lidar (stream `lidar/top`). A drive has one lidar, so
  a bag with several point-cloud topics needs the YAML to say which.
- `sensor_msgs/msg/Image` and `CompressedImage` -> a camera per namespace (`<ns>/image_raw`,
  `<ns>/image_raw/compressed`): a raw Image before a CompressedImage, a rectified one
  (`rect` in the name) before an unrectified one, colour before mono; the others of the
  namespace are skipped. One camera is `front` (the node's default camera); several are named
  after their namespace's last part. Each takes the CameraInfo of its namespace
  (`<ns>/camera_info`), or the bag's only CameraInfo when it has one camera.
- `sensor_msgs/msg/NavSatFix` -> the GNSS (stream `gnss`), with the velocity of a
  `geometry_msgs/msg/TwistStamped`, `TwistWithCovarianceStamped` or `nav_msgs/msg/Odometry`
  topic (in that order of preference; one in the fix's namespace first).
- `tf2_msgs/msg/TFMessage` on `/tf_static` -> the rig. Dynamic `/tf` is not a rig.

Everything else is listed (`TopicPlan.skipped`) and skipped.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import Any

from calibration.errors import load_yaml, read_text
from replay.datasets.kitti_object import LIDAR_STREAM
from replay.rosbag2.errors import Rosbag2Error

__all__ = [
    "AUTO",
    "GNSS_STREAM",
    "ROLE_TYPES",
    "CameraPlan",
    "LidarPlan",
    "Role",
    "TopicOptions",
    "TopicPlan",
    "TopicsFile",
    "load_topics_file",
    "plan_topics",
    "rectified_by_name",
]

GNSS_STREAM = "gnss"
#: `time_field` value: choose the per-point time field by its name (see replay.rosbag2.convert).
AUTO = ""
POINT_CLOUD2 = "sensor_msgs/msg/PointCloud2"
IMAGE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
NAV_SAT_FIX = "sensor_msgs/msg/NavSatFix"
TWIST_STAMPED = "geometry_msgs/msg/TwistStamped"
TWIST_COV_STAMPED = "geometry_msgs/msg/TwistWithCovarianceStamped"
ODOMETRY = "nav_msgs/msg/Odometry"
TF_MESSAGE = "tf2_msgs/msg/TFMessage"
TF_STATIC_TOPIC = "/tf_static"


class Role(StrEnum):
    """What a topic is imported as."""

    LIDAR = "lidar"
    CAMERA = "camera"
    CAMERA_INFO = "camera_info"
    GNSS = "gnss"
    VELOCITY = "velocity"
    TF_STATIC = "tf_static"
    SKIP = "skip"


#: The message types each role converts, in order of preference.
ROLE_TYPES: Mapping[Role, tuple[str, ...]] = {
    Role.LIDAR: (POINT_CLOUD2,),
    Role.CAMERA: (IMAGE, COMPRESSED_IMAGE),
    Role.CAMERA_INFO: (CAMERA_INFO,),
    Role.GNSS: (NAV_SAT_FIX,),
    Role.VELOCITY: (TWIST_STAMPED, TWIST_COV_STAMPED, ODOMETRY),
    Role.TF_STATIC: (TF_MESSAGE,),
}

_TOP_KEYS = {"topics", "vehicle_frame", "rig"}
_OPTION_KEYS: Mapping[Role, frozenset[str]] = {
    Role.LIDAR: frozenset({"role", "time_field"}),
    Role.CAMERA: frozenset({"role", "name", "camera_info", "rectified"}),
}
_CAMERA_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_MAX_TOPICS_FILE_BYTES = 1 << 20


@dataclass(frozen=True)
class TopicOptions:
    """One topic of the `--topics` file: its role and, for a lidar, the per-point time field
    (`time_field`: a name, `None` for none, `AUTO` (empty) to choose by name); for a camera its
    rig name, its CameraInfo topic and whether its images are rectified (`None`: from the
    topic's name)."""

    role: Role
    name: str | None = None
    camera_info: str | None = None
    rectified: bool | None = None
    time_field: str | None = AUTO


@dataclass(frozen=True)
class TopicsFile:
    """A parsed `--topics` file: per-topic options, the tf frame that becomes the rig's
    `vehicle` (None: `base_link`, else the lidar frame's root) and a rig file to use instead
    of tf_static and CameraInfo (resolved against the YAML file's folder)."""

    path: Path
    topics: Mapping[str, TopicOptions] = field(default_factory=dict)
    vehicle_frame: str | None = None
    rig: Path | None = None


@dataclass(frozen=True)
class LidarPlan:
    topic: str
    msgtype: str
    time_field: str | None = AUTO


@dataclass(frozen=True)
class CameraPlan:
    """A camera: its image topic, rig name (stream `camera/<name>`), CameraInfo topic (None
    without one) and whether the images are rectified (None: decided from the topic's name)."""

    topic: str
    msgtype: str
    name: str
    info_topic: str | None
    rectified: bool | None = None

    @property
    def stream(self) -> str:
        return f"camera/{self.name}"


@dataclass(frozen=True)
class TopicPlan:
    """What the import reads: the lidar, the cameras, the GNSS fix and velocity topics (None
    when absent), the tf_static topics, and the topics skipped with the reason."""

    lidar: LidarPlan
    cameras: tuple[CameraPlan, ...]
    gnss: str | None
    velocity: tuple[str, str] | None  # (topic, message type)
    tf_static: tuple[str, ...]
    skipped: tuple[tuple[str, str, str], ...]  # (topic, message type, why)

    @property
    def streams(self) -> dict[str, str]:
        """Bag topic -> drive stream of the data topics."""
        out = {self.lidar.topic: LIDAR_STREAM}
        out |= {c.topic: c.stream for c in self.cameras}
        if self.gnss is not None:
            out[self.gnss] = GNSS_STREAM
        return out


# -- the YAML file ------------------------------------------------------------------------------


def load_topics_file(path: Path) -> TopicsFile:
    """Read and check a `--topics` file (docs/rosbag2.md).

    Raises Rosbag2Error naming the file and the key for a missing or unreadable file, text
    that is not YAML, unknown keys or roles, and values of the wrong kind."""
    path = Path(path)
    try:
        if path.stat().st_size > _MAX_TOPICS_FILE_BYTES:
            raise Rosbag2Error(f"{path}: --topics file is larger than 1 MiB")
    except OSError as e:
        raise Rosbag2Error(f"{path}: cannot read the --topics file ({e.strerror})") from e
    text = read_text(path, "the --topics file", Rosbag2Error)
    doc = load_yaml(text, path, "--topics file is not valid YAML", Rosbag2Error)
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise Rosbag2Error(f"{path}: expected a mapping with `topics:`, got {type(doc).__name__}")
    unknown = sorted(str(k) for k in doc if k not in _TOP_KEYS)
    if unknown:
        raise Rosbag2Error(f"{path}: unknown key(s) {unknown} (known: {sorted(_TOP_KEYS)})")
    topics_doc = doc.get("topics") or {}
    if not isinstance(topics_doc, dict):
        raise Rosbag2Error(f"{path}: topics: expected a mapping of topic -> role")
    topics = {
        _topic_name(topic, path): _options(value, f"{path}: topics.{topic}")
        for topic, value in topics_doc.items()
    }
    vehicle = doc.get("vehicle_frame")
    if vehicle is not None and (not isinstance(vehicle, str) or not vehicle.strip("/")):
        raise Rosbag2Error(f"{path}: vehicle_frame: expected a tf frame name, got {vehicle!r}")
    rig = doc.get("rig")
    rig_path = None
    if rig is not None:
        if not isinstance(rig, str) or not rig:
            raise Rosbag2Error(f"{path}: rig: expected a rig file path, got {rig!r}")
        rig_path = (path.parent / Path(rig).expanduser()).resolve()
    return TopicsFile(
        path,
        topics,
        vehicle_frame=vehicle.strip("/") if vehicle else None,
        rig=rig_path,
    )


def _topic_name(topic: Any, path: Path) -> str:
    if not isinstance(topic, str) or not topic.strip():
        raise Rosbag2Error(f"{path}: topics: {topic!r} is not a topic name")
    # ROS 2 topic names are absolute in a bag; `points` and `/points` mean the same here.
    return topic if topic.startswith("/") else f"/{topic}"


def _options(value: Any, where: str) -> TopicOptions:
    roles = ", ".join(r.value for r in Role)
    if isinstance(value, str):
        value = {"role": value}
    if not isinstance(value, dict):
        raise Rosbag2Error(f"{where}: expected a role ({roles}) or a mapping with `role:`")
    try:
        role = Role(str(value.get("role")))
    except ValueError:
        raise Rosbag2Error(
            f"{where}.role: unknown role {value.get('role')!r} (roles: {roles})"
        ) from None
    allowed = _OPTION_KEYS.get(role, frozenset({"role"}))
    unknown = sorted(str(k) for k in value if k not in allowed)
    if unknown:
        raise Rosbag2Error(f"{where}: unknown key(s) {unknown} for role {role.value}")
    name = value.get("name")
    if name is not None and (not isinstance(name, str) or not _CAMERA_NAME.match(name)):
        raise Rosbag2Error(
            f"{where}.name: expected a camera name of letters, digits, _ and -, got {name!r}"
        )
    info = value.get("camera_info")
    if info is not None and (not isinstance(info, str) or not info.strip()):
        raise Rosbag2Error(f"{where}.camera_info: expected a topic name, got {info!r}")
    rectified = value.get("rectified")
    if rectified is not None and not isinstance(rectified, bool):
        raise Rosbag2Error(f"{where}.rectified: expected true or false, got {rectified!r}")
    time_field: str | None = AUTO
    if "time_field" in value:
        time_field = value["time_field"]
        if time_field is not None and (not isinstance(time_field, str) or not time_field):
            raise Rosbag2Error(
                f"{where}.time_field: expected a PointCloud2 field name or null, got {time_field!r}"
            )
    return TopicOptions(
        role=role,
        name=name,
        camera_info=(info if info is None or info.startswith("/") else f"/{info}"),
        rectified=rectified,
        time_field=time_field,
    )


# -- the mapping --------------------------------------------------------------------------------


def _namespace(topic: str, msgtype: str) -> str:
    """The camera (or sensor) namespace of a topic: `/cam/image_raw` and
    `/cam/image_raw/compressed` and `/cam/camera_info` -> `/cam`."""
    p = PurePosixPath(topic)
    if msgtype == COMPRESSED_IMAGE and p.name in ("compressed", "compressedDepth"):
        p = p.parent
    return str(p.parent)


def rectified_by_name(topic: str, msgtype: str) -> bool:
    """Whether an image topic's name says its images are rectified (`image_rect`,
    `image_rect_color`, and their `/compressed` forms)."""
    p = PurePosixPath(topic)
    if msgtype == COMPRESSED_IMAGE and p.name in ("compressed", "compressedDepth"):
        p = p.parent
    return "rect" in p.name


def _camera_rank(topic: str, msgtype: str) -> tuple[bool, bool, bool, str]:
    mono = "mono" in PurePosixPath(topic).name
    return (msgtype != IMAGE, not rectified_by_name(topic, msgtype), mono, topic)


def _default_camera_names(namespaces: list[str]) -> list[str]:
    if len(namespaces) == 1:
        return ["front"]
    names: list[str] = []
    for i, ns in enumerate(namespaces):
        base = re.sub(r"[^A-Za-z0-9_-]", "_", PurePosixPath(ns).name)[:48] or f"cam{i}"
        name, n = base, 2
        while name in names:
            name, n = f"{base}_{n}", n + 1
        names.append(name)
    return names


def plan_topics(
    bag_topics: Mapping[str, str],
    known_types: frozenset[str] | set[str],
    topics_file: TopicsFile | None,
    where: str,
) -> TopicPlan:
    """The plan for a bag's topics (`topic -> message type`), the message types the
    typestore can decode (`known_types`) and the optional `--topics` file; `where` (the bag)
    prefixes errors.

    Raises Rosbag2Error: a topic of the file is not in the bag, has a type its role cannot
    convert or a type the typestore does not know; no lidar topic, or several without the
    file saying which; two cameras of the same name; a CameraInfo topic that is not one."""
    options = dict(topics_file.topics) if topics_file is not None else {}
    src = f"{topics_file.path}: " if topics_file is not None else ""
    for topic, opt in options.items():
        if topic not in bag_topics:
            listed = ", ".join(sorted(bag_topics)) or "none"
            raise Rosbag2Error(f"{src}topics.{topic}: not in the bag {where} (topics: {listed})")
        msgtype = bag_topics[topic]
        if opt.role is Role.SKIP:
            continue
        if msgtype not in known_types:
            raise Rosbag2Error(
                f"{where}: topic {topic}: message type {msgtype} is unknown (the bag has no "
                "usable definition of it and rosbags' typestores lack it)"
            )
        accepted = ROLE_TYPES[opt.role]
        if msgtype not in accepted:
            raise Rosbag2Error(
                f"{src}topics.{topic}: cannot convert {msgtype} to {opt.role.value} "
                f"(expects {' or '.join(accepted)})"
            )

    roles: dict[str, Role] = {}
    why: dict[str, str] = {}
    for topic, msgtype in sorted(bag_topics.items()):
        given = options.get(topic)
        if given is not None:
            roles[topic] = given.role
            if given.role is Role.SKIP:
                why[topic] = f"skipped by {topics_file.path if topics_file else '--topics'}"
            continue
        role = _role_by_type(topic, msgtype)
        if msgtype not in known_types:
            why[topic] = "message type unknown (no definition in the bag)"
            roles[topic] = Role.SKIP
        elif role is None:
            why[topic] = (
                "dynamic transforms are not part of the rig"
                if msgtype == TF_MESSAGE
                else "no conversion for this type"
            )
            roles[topic] = Role.SKIP
        else:
            roles[topic] = role

    lidar = _choose_lidar(bag_topics, roles, options, why, where)
    cameras = _plan_cameras(bag_topics, roles, options, why, src)
    gnss = _choose_one(roles, options, Role.GNSS, why, "another GNSS topic is used")
    velocity = None
    if gnss is None:
        for topic, role in roles.items():
            if role is Role.VELOCITY and topic not in options:
                roles[topic] = Role.SKIP
                why[topic] = "no NavSatFix topic to give the velocity to"
    else:
        velocity = _choose_velocity(bag_topics, roles, options, gnss, why)
    tf_static = tuple(t for t, r in roles.items() if r is Role.TF_STATIC)
    used_info = {c.info_topic for c in cameras}
    for topic, role in roles.items():
        if role is Role.CAMERA_INFO and topic not in used_info:
            why.setdefault(topic, "CameraInfo of no imported camera")
    skipped = tuple((t, bag_topics[t], why[t]) for t in sorted(why))
    return TopicPlan(lidar, cameras, gnss, velocity, tf_static, skipped)


def _role_by_type(topic: str, msgtype: str) -> Role | None:
    if msgtype == TF_MESSAGE:
        return Role.TF_STATIC if topic == TF_STATIC_TOPIC else None
    for role, types in ROLE_TYPES.items():
        if msgtype in types:
            return role
    return None


def _choose_lidar(
    bag_topics: Mapping[str, str],
    roles: dict[str, Role],
    options: Mapping[str, TopicOptions],
    why: dict[str, str],
    where: str,
) -> LidarPlan:
    chosen = [t for t, o in options.items() if o.role is Role.LIDAR]
    if len(chosen) > 1:
        raise Rosbag2Error(
            f"--topics maps {len(chosen)} topics to lidar ({', '.join(sorted(chosen))}); a "
            "drive has one lidar"
        )
    candidates = [t for t, r in roles.items() if r is Role.LIDAR]
    if chosen:
        topic = chosen[0]
    elif len(candidates) == 1:
        topic = candidates[0]
    elif not candidates:
        listed = ", ".join(f"{t} ({m})" for t, m in sorted(bag_topics.items())) or "none"
        raise Rosbag2Error(
            f"{where}: no lidar topic (sensor_msgs/msg/PointCloud2) in the bag (topics: {listed})"
        )
    else:
        raise Rosbag2Error(
            f"{where}: several PointCloud2 topics ({', '.join(candidates)}): a drive has one "
            "lidar; say which in --topics (`<topic>: lidar`, the others `skip`)"
        )
    for other in candidates:
        if other != topic:
            roles[other] = Role.SKIP
            why[other] = f"another lidar ({topic}) is imported"
    opt = options.get(topic)
    return LidarPlan(topic, bag_topics[topic], opt.time_field if opt else AUTO)


def _plan_cameras(
    bag_topics: Mapping[str, str],
    roles: dict[str, Role],
    options: Mapping[str, TopicOptions],
    why: dict[str, str],
    src: str,
) -> tuple[CameraPlan, ...]:
    by_ns: dict[str, list[str]] = {}
    explicit: list[str] = []
    for topic, role in roles.items():
        if role is not Role.CAMERA:
            continue
        if topic in options:
            explicit.append(topic)
        else:
            by_ns.setdefault(_namespace(topic, bag_topics[topic]), []).append(topic)
    chosen = list(explicit)
    explicit_ns = {_namespace(t, bag_topics[t]) for t in explicit}
    for ns, topics in sorted(by_ns.items()):
        ranked = sorted(topics, key=lambda t: _camera_rank(t, bag_topics[t]))
        first = None if ns in explicit_ns else ranked[0]
        if first is not None:
            chosen.append(first)
        for other in ranked:
            if other != first:
                roles[other] = Role.SKIP
                why[other] = f"the camera {ns} is imported from another topic"
    chosen.sort()
    namespaces = [_namespace(t, bag_topics[t]) for t in chosen]
    names = _default_camera_names(namespaces)
    infos = {
        _namespace(t, CAMERA_INFO): t for t, r in sorted(roles.items()) if r is Role.CAMERA_INFO
    }
    all_infos = [t for t, m in bag_topics.items() if m == CAMERA_INFO]
    plans: list[CameraPlan] = []
    for topic, ns, default in zip(chosen, namespaces, names, strict=True):
        opt = options.get(topic)
        name = opt.name if opt and opt.name else default
        info = opt.camera_info if opt and opt.camera_info else infos.get(ns)
        if info is None and len(chosen) == 1 and len(all_infos) == 1:
            info = all_infos[0]
        if info is not None:
            if info not in bag_topics:
                raise Rosbag2Error(f"{src}topics.{topic}.camera_info: {info} is not in the bag")
            if bag_topics[info] != CAMERA_INFO:
                raise Rosbag2Error(
                    f"{src}topics.{topic}.camera_info: {info} is a {bag_topics[info]}, "
                    f"not a {CAMERA_INFO}"
                )
            why.pop(info, None)
        plans.append(
            CameraPlan(topic, bag_topics[topic], name, info, opt.rectified if opt else None)
        )
    seen: dict[str, str] = {}
    for plan in plans:
        if plan.name in seen:
            raise Rosbag2Error(
                f"{src}cameras {seen[plan.name]} and {plan.topic} are both named {plan.name!r}; "
                "give one another `name:` in --topics"
            )
        seen[plan.name] = plan.topic
    return tuple(plans)


def _choose_one(
    roles: dict[str, Role],
    options: Mapping[str, TopicOptions],
    role: Role,
    why: dict[str, str],
    reason: str,
) -> str | None:
    explicit = sorted(t for t, o in options.items() if o.role is role)
    candidates = explicit or sorted(t for t, r in roles.items() if r is role)
    if not candidates:
        return None
    topic = candidates[0]
    for other, r in roles.items():
        if r is role and other != topic:
            roles[other] = Role.SKIP
            why[other] = f"{reason} ({topic})"
    return topic


def _choose_velocity(
    bag_topics: Mapping[str, str],
    roles: dict[str, Role],
    options: Mapping[str, TopicOptions],
    gnss: str,
    why: dict[str, str],
) -> tuple[str, str] | None:
    explicit = sorted(t for t, o in options.items() if o.role is Role.VELOCITY)
    candidates = explicit or [t for t, r in roles.items() if r is Role.VELOCITY]
    if not candidates:
        return None
    gnss_ns = _namespace(gnss, NAV_SAT_FIX)
    types = ROLE_TYPES[Role.VELOCITY]

    def rank(topic: str) -> tuple[int, bool, str]:
        return (types.index(bag_topics[topic]), _namespace(topic, "") != gnss_ns, topic)

    topic = min(candidates, key=rank)
    for other, r in roles.items():
        if r is Role.VELOCITY and other != topic:
            roles[other] = Role.SKIP
            why[other] = f"another velocity topic ({topic}) is used"
    return topic, bag_topics[topic]
