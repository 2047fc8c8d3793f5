"""The message schema: one declarative table per message type.

Every format derives its keys, types, units and checks from these tables: the ZeroMQ wire codec
(`perception.msgs.wire`), JSON documents and JSON Lines files (`perception.msgs.jsonl`), the
MCAP companion channel and the Foxglove conversion (`perception.msgs.foxglove`,
`replay.drive`). A key is always the dataclass attribute name, in every format; a nested message
is a nested map, so `header.stamp_ns` names the header's stamp everywhere.

A table lists each dataclass field, in the dataclass's order, with its `Kind`, unit, bounds,
whether it may be None, and a one-line doc. Rules that involve several fields are attached to
the table: `together` (all set or all None), `one_of` (exactly one set) and `rules` (functions
of the message returning a problem or None). The checks themselves live in
`perception.msgs.codec` and `perception.msgs.arrays`, the JSON Schemas of the documents in
`perception.msgs.json_schemas`; this module only declares.

Floats are always finite; integers always fit in int64, and stamps stay below `MAX_STAMP_NS`.
Optional fields are always present in a document, None (nil, null) meaning absent.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from perception.msgs.types import (
    READABLE_SCHEMA_VERSIONS,
    SCHEMA_VERSION,
    CalibrationStatus,
    CameraBox,
    CameraFrame,
    Detection3D,
    DetectionList,
    Diagnostics,
    GnssFix,
    Header,
    LidarSweep,
    RealtimeStatus,
    RigMessage,
    SensorClock,
    SensorStatus,
    Track,
    TrackList,
)

__all__ = [
    "ALTITUDE_RANGE_M",
    "CAMERA_BOX",
    "CAMERA_FRAME",
    "DEFAULT_LIMITS",
    "DETECTION",
    "DETECTION_LIST",
    "DIAGNOSTICS",
    "ENCODED_IMAGE_FORMATS",
    "GNSS_FIX",
    "HEADER",
    "INT64_MAX",
    "INT64_MIN",
    "LIDAR_SWEEP",
    "MAX_SPEED_MPS",
    "MAX_STAMP_NS",
    "MAX_SWEEP_DURATION_NS",
    "MAX_TOPIC_BYTES",
    "READABLE_SCHEMA_VERSIONS",
    "REALTIME_STATUS",
    "RIG_MESSAGE",
    "SCHEMAS",
    "SCHEMA_VERSION",
    "SENSOR_CLOCK",
    "SENSOR_STATUS",
    "TRACK",
    "TRACK_LIST",
    "WIRE_TYPES",
    "Field",
    "Kind",
    "Limit",
    "Schema",
    "WireLimits",
    "above_a_limit",
    "schema_of",
    "topic_bytes",
    "versions_read",
]

INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)
#: The latest stamp any message may carry (year 2116): stamps keep headroom in int64, so a stamp
#: plus a sweep's point offsets, a clock offset or a latency cannot overflow it.
MAX_STAMP_NS = 2**62
#: The most `WireLimits.max_sweep_duration_ns` may be raised to.
MAX_SWEEP_DURATION_NS = 60_000_000_000

#: `CameraFrame.encoding` values allowed for encoded (`data`) images; raw images are "bgr8".
ENCODED_IMAGE_FORMATS = frozenset({"jpeg", "png"})

#: Ellipsoidal heights outside this span are not where a road vehicle can be: below the deepest
#: ocean trench, above the Karman line.
ALTITUDE_RANGE_M = (-12_000.0, 100_000.0)


@dataclass(frozen=True)
class WireLimits:
    """Bounds on everything a reader accepts (the wire, JSON documents), so a hostile or broken
    sender cannot make it allocate, recurse or scan without bound. A message above a limit is
    refused ("... above the limit of ..."). The node takes them from the `limits:` section of
    its config, and so do the commands given that config (`record`, `echo`, `view`, `replay`,
    `import rosbag2`). A drive keeps the limits it was written under where they are not the
    defaults, and is read with them unless a config's are given. Every other reader uses
    `DEFAULT_LIMITS`. The defaults fit a 128-beam lidar
    (3,600 columns, dual return: 921,600 points) and 8 MP cameras (3840 x 2160 BGR: 24.9 MB).

    Every limit is a positive integer, `max_sweep_duration_ns` at most a minute (ValueError,
    naming the limit, otherwise).
    """

    max_message_bytes: int = 32 * 1024 * 1024
    """Bytes in one message, all frames together; ZeroMQ refuses a single larger frame before
    it is read (and drops the connection, which the receiver restores). Fits a raw 8 MP image
    or a sweep of `max_points` points with per-point times (24 MB)."""
    max_frames: int = 8
    """Frames in one message (topic, header document, buffers); the largest message the node
    reads has 4 (a sweep with per-point times)."""
    max_header_bytes: int = 1024 * 1024
    """Size of a message's header document (msgpack), for every type but RigMessage: a
    DetectionList of `max_detections` detections takes about half of it."""
    max_rig_bytes: int = 1024 * 1024
    """Size of a RigMessage's header document, which holds the rig document: about 6,000 frames
    (a real rig, cameras and all, takes a few kB). The node parses a rig on its receiving
    thread, about 30 us a frame: one at this limit takes about 0.2 s of it."""
    max_document_depth: int = 32
    """Nesting of maps and lists inside an opaque document (the rig: 5 levels deep); the rest
    of a message has the fixed depth of its schema."""
    max_string_bytes: int = 64 * 1024
    """Length of one string in a header document (names, labels, rig fields)."""
    max_collection_items: int = 100_000
    """Entries of one map or items of one list in a header document (detections, rig frames)."""
    max_points: int = 1_000_000
    """Points in one lidar sweep."""
    max_sweep_duration_ns: int = 1_000_000_000
    """Largest per-point time offset of a sweep (a sweep lasts one rotation: 100 ms at 10 Hz),
    so that a sweep's points stay near its stamp and its end stamp fits int64."""
    max_image_pixels: int = 10_000_000
    """Height x width of a raw camera image (3 bytes per pixel)."""
    max_encoded_image_bytes: int = 24 * 1024 * 1024
    """Size of an encoded (JPEG, PNG) camera image."""
    max_detections: int = 2_000
    """Detections in one DetectionList (about 270 bytes each in the header document)."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{f.name}: must be a positive integer, got {value!r}")
        if self.max_sweep_duration_ns > MAX_SWEEP_DURATION_NS:
            raise ValueError(
                f"max_sweep_duration_ns: must be at most {MAX_SWEEP_DURATION_NS} (a minute), got "
                f"{self.max_sweep_duration_ns}"
            )


DEFAULT_LIMITS = WireLimits()


def above_a_limit(error: BaseException) -> bool:
    """Whether `error` refuses something for a `WireLimits` bound: each is worded "... above
    the limit of ...", wherever it is raised or wrapped (a drive's read, an import)."""
    return "above the limit of" in str(error)


#: The longest topic a ZeroMQ subscription may name, UTF-8 bytes: the longest string a header
#: holds (a publisher drops the connection of a longer one: perception.io.transport).
MAX_TOPIC_BYTES = DEFAULT_LIMITS.max_string_bytes


def topic_bytes(topic: str) -> int:
    """A topic's length on the wire: its UTF-8 bytes, bytes a shell gave that are not UTF-8
    counted as they are."""
    return len(topic.encode("utf-8", "surrogateescape"))


class Kind(enum.Enum):
    """What a field holds, and so how every format carries it."""

    INT = "int"  # int64
    FLOAT = "float"  # finite float64; an integer is accepted and converted
    BOOL = "bool"
    STR = "str"
    STRS = "tuple of str"
    INTS = "tuple of int"
    FLOATS = "fixed-length tuple of float"  # `length` items
    INT_MAP = "map str -> int"
    FLOAT_MAP = "map str -> float"
    MESSAGE = "nested message"  # `schema`
    MESSAGES = "tuple of nested messages"  # `schema`
    ARRAY = "numpy array"  # a raw buffer on the wire: `dtype`, `shape`
    BYTES = "encoded bytes"  # a raw 1-D uint8 buffer on the wire, `bytes` in the message
    DOCUMENT = "opaque document"  # a map with string keys, checked by its owner (the rig)
    VERSION = "schema version"  # the document's schema version, not a field of its own

    @property
    def is_buffer(self) -> bool:
        """Carried as a raw buffer frame on the wire (base64 with dtype and shape in JSON)."""
        return self in (Kind.ARRAY, Kind.BYTES)


@dataclass(frozen=True)
class Limit:
    """A `WireLimits` bound on a field: `attr` names the limit; the count is the product of the
    first `dims` dimensions of an array (the length of a tuple of messages). Errors read
    "oversize <what>: <count> <unit>, above the limit of <limit>"."""

    attr: str
    what: str
    unit: str
    dims: int = 1

    def __post_init__(self) -> None:
        if self.attr not in {f.name for f in dataclasses.fields(WireLimits)}:
            raise TypeError(f"Limit.attr {self.attr!r} is not a WireLimits field")


# Dimension of an array shape: a fixed size, None (any size) or the name of another array
# field whose first dimension this one must equal ("one per point").
Dim = int | str | None
# A cross-field rule: the message -> a problem (a sentence without the stream) or None.
Rule = Callable[[Any], str | None]


@dataclass(frozen=True)
class Field:
    """One field of a table; see the kind-specific constructors below (`integer`, `array`, ...).

    `lo`/`hi` bound numbers (inclusive; array values: `lo` only, and `value_limit`, the
    `WireLimits` attribute their maximum may not exceed). Arrays: `dtype` (numpy dtype string,
    little-endian), `shape`, `layout` (for errors, e.g. "N x 4 float32 (x, y, z, intensity)"),
    `columns` (names along the last axis), `rows` (what one row is), `finite`.
    """

    name: str
    kind: Kind
    doc: str
    unit: str = ""
    optional: bool = False
    lo: float | None = None
    hi: float | None = None
    nonempty: bool = False
    length: int = 0
    schema: Schema | None = None
    dtype: str = ""
    shape: tuple[Dim, ...] = ()
    layout: str = ""
    columns: tuple[str, ...] = ()
    rows: str = "row"
    finite: bool = False
    limit: Limit | None = None
    value_limit: str | None = None
    since: int = 1

    def __post_init__(self) -> None:
        if self.since > 1 and not self.optional:
            raise TypeError(f"field {self.name}: a field added after version 1 must be optional")
        if self.value_limit is not None and (
            self.kind is not Kind.ARRAY
            or self.value_limit not in {f.name for f in dataclasses.fields(WireLimits)}
        ):
            raise TypeError(f"field {self.name}: value_limit must name a WireLimits field")
        if (self.kind in (Kind.MESSAGE, Kind.MESSAGES)) != (self.schema is not None):
            raise TypeError(f"field {self.name}: a nested schema is for MESSAGE(S) fields only")
        if self.kind is Kind.ARRAY and not (self.dtype and self.shape and self.layout):
            raise TypeError(f"field {self.name}: an array needs dtype, shape and layout")
        if self.kind is Kind.FLOATS and self.length <= 0:
            raise TypeError(f"field {self.name}: a fixed-length tuple needs a length")

    @property
    def description(self) -> str:
        """The doc with the unit, as generated documentation shows it."""
        return f"{self.doc} [{self.unit}]" if self.unit else self.doc


def integer(
    name: str,
    doc: str,
    *,
    unit: str = "",
    lo: int = INT64_MIN,
    hi: int = INT64_MAX,
    optional: bool = False,
) -> Field:
    return Field(name, Kind.INT, doc, unit, optional, lo=lo, hi=hi)


def number(
    name: str,
    doc: str,
    *,
    unit: str = "",
    lo: float = -math.inf,
    hi: float = math.inf,
    optional: bool = False,
    since: int = 1,
) -> Field:
    return Field(name, Kind.FLOAT, doc, unit, optional, lo=lo, hi=hi, since=since)


def numbers(
    name: str,
    length: int,
    doc: str,
    *,
    unit: str = "",
    lo: float = -math.inf,
    hi: float = math.inf,
    optional: bool = False,
) -> Field:
    return Field(name, Kind.FLOATS, doc, unit, optional, lo=lo, hi=hi, length=length)


def boolean(name: str, doc: str) -> Field:
    return Field(name, Kind.BOOL, doc)


def text(name: str, doc: str, *, nonempty: bool = False) -> Field:
    return Field(name, Kind.STR, doc, nonempty=nonempty)


def texts(name: str, doc: str) -> Field:
    return Field(name, Kind.STRS, doc)


def integers(name: str, doc: str, *, lo: int = INT64_MIN) -> Field:
    return Field(name, Kind.INTS, doc, lo=lo, hi=INT64_MAX)


def int_map(name: str, doc: str, *, unit: str = "", lo: int = INT64_MIN) -> Field:
    return Field(name, Kind.INT_MAP, doc, unit, lo=lo, hi=INT64_MAX)


def float_map(name: str, doc: str, *, unit: str = "", lo: float = -math.inf) -> Field:
    return Field(name, Kind.FLOAT_MAP, doc, unit, lo=lo, hi=math.inf)


def nested(name: str, schema: Schema, doc: str, *, optional: bool = False) -> Field:
    return Field(name, Kind.MESSAGE, doc, optional=optional, schema=schema)


def nested_tuple(name: str, schema: Schema, doc: str, *, limit: Limit | None = None) -> Field:
    return Field(name, Kind.MESSAGES, doc, schema=schema, limit=limit)


def document(name: str, doc: str) -> Field:
    return Field(name, Kind.DOCUMENT, doc)


def version(name: str, doc: str) -> Field:
    return Field(name, Kind.VERSION, doc)


def encoded(name: str, doc: str, *, limit: Limit, optional: bool = False) -> Field:
    return Field(
        name,
        Kind.BYTES,
        doc,
        optional=optional,
        nonempty=True,
        dtype="|u1",
        shape=(None,),
        layout="N uint8 (encoded bytes)",
        rows="byte",
        limit=limit,
    )


def array(
    name: str,
    doc: str,
    *,
    dtype: str,
    shape: tuple[Dim, ...],
    layout: str,
    unit: str = "",
    columns: tuple[str, ...] = (),
    rows: str = "row",
    finite: bool = False,
    lo: float | None = None,
    nonempty: bool = False,
    limit: Limit | None = None,
    value_limit: str | None = None,
    optional: bool = False,
) -> Field:
    if np.dtype(dtype).str != dtype:
        raise TypeError(f"array {name}: dtype {dtype!r} is not a canonical numpy dtype string")
    return Field(
        name,
        Kind.ARRAY,
        doc,
        unit,
        optional,
        lo=lo,
        nonempty=nonempty,
        dtype=dtype,
        shape=shape,
        layout=layout,
        columns=columns,
        rows=rows,
        finite=finite,
        limit=limit,
        value_limit=value_limit,
    )


# Keys of a document's envelope: no field may use them.
_RESERVED = frozenset({"type", "version", "schema_version", "fields", "buffers"})


@dataclass(frozen=True)
class Schema:
    """The table of one message type. Raises TypeError at import when it does not list exactly
    the dataclass's fields in their order, or names unknown fields in its rules."""

    cls: type[Any]
    fields: tuple[Field, ...]
    together: tuple[tuple[str, ...], ...] = ()
    one_of: tuple[tuple[str, ...], ...] = ()
    rules: tuple[Rule, ...] = ()

    def __post_init__(self) -> None:
        declared = [f.name for f in dataclasses.fields(self.cls)]
        listed = [f.name for f in self.fields]
        if listed != declared:
            raise TypeError(f"schema of {self.name} lists {listed}, the dataclass has {declared}")
        for group in (*self.together, *self.one_of):
            unknown = set(group) - set(listed)
            if unknown or len(group) < 2:
                raise TypeError(f"schema of {self.name}: bad field group {group}")
        for f in self.fields:
            if f.kind is not Kind.VERSION and f.name in _RESERVED:
                raise TypeError(f"schema of {self.name}: {f.name!r} is a reserved document key")

    @property
    def name(self) -> str:
        """The message type's name, as documents carry it in `type`."""
        return self.cls.__name__

    @property
    def doc(self) -> str:
        return (self.cls.__doc__ or self.name).split("\n\n")[0].strip()

    def field(self, name: str) -> Field:
        """The field called `name`; KeyError when there is none."""
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"{self.name} has no field {name!r}")

    def defaults(self) -> dict[str, Any]:
        """Each field's dataclass default (fields without one are left out)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self.cls):
            if f.default is not dataclasses.MISSING:
                out[f.name] = f.default
            elif f.default_factory is not dataclasses.MISSING:
                out[f.name] = f.default_factory()
        return out


# -- rules ---------------------------------------------------------------------------------------


def _camera_encoding(frame: CameraFrame) -> str | None:
    if frame.image is not None and frame.encoding != "bgr8":
        return f"a raw image must have encoding 'bgr8', got {frame.encoding!r}"
    if frame.data is not None and frame.encoding not in ENCODED_IMAGE_FORMATS:
        formats = sorted(ENCODED_IMAGE_FORMATS)
        return f"encoded image has encoding {frame.encoding!r}, expected one of {formats}"
    return None


def _variances(fix: GnssFix) -> str | None:
    cov = fix.position_covariance_m2
    if any(cov[i] < 0 for i in (0, 4, 8)):
        return f"position_covariance_m2 has a negative variance: {list(cov)}"
    return None


def _speed(fix: GnssFix) -> str | None:
    # Each component within the bound still let the speed reach sqrt(3) times it.
    v = fix.velocity_enu_mps
    if v is None:
        return None
    speed = math.hypot(*v)
    if speed > MAX_SPEED_MPS:
        return (
            f"velocity_enu_mps {list(v)} is a speed of {speed:.1f} m/s, above {MAX_SPEED_MPS:g} "
            "m/s (no road vehicle moves faster)"
        )
    return None


# -- the tables ----------------------------------------------------------------------------------

HEADER = Schema(Header, (
    text("stream", "stream (topic) name, e.g. camera/front", nonempty=True),
    integer("seq", "sequence number within the stream", lo=0),
    integer("stamp_ns", "sensor time: mid-exposure (camera), sweep start (lidar)", unit="ns",
            lo=0, hi=MAX_STAMP_NS),
    text("frame_id", "rig frame the data is expressed in"),
))  # fmt: skip

CAMERA_FRAME = Schema(CameraFrame, (
    nested("header", HEADER, "common header"),
    array("image", "raw image, blue-green-red", dtype="|u1", shape=(None, None, 3),
          layout="H x W x 3 uint8 (BGR)", columns=("b", "g", "r"), unit="px",
          nonempty=True, limit=Limit("max_image_pixels", "image", "pixels", dims=2),
          optional=True),
    encoded("data", "encoded image (JPEG or PNG file bytes)", optional=True,
            limit=Limit("max_encoded_image_bytes", "encoded image", "bytes")),
    text("encoding", "'bgr8' for `image`, 'jpeg' or 'png' for `data`"),
), one_of=(("image", "data"),), rules=(_camera_encoding,))  # fmt: skip

LIDAR_SWEEP = Schema(LidarSweep, (
    nested("header", HEADER, "common header (stamp: sweep start)"),
    array("points", "points in the sensor frame; intensity as the sensor reports it",
          dtype="<f4", shape=(None, 4), layout="N x 4 float32 (x, y, z, intensity)",
          columns=("x", "y", "z", "intensity"), rows="point", unit="m", finite=True,
          limit=Limit("max_points", "sweep", "points")),
    array("point_time_offsets_ns", "each point's time after header.stamp_ns", dtype="<i8",
          shape=("points",), layout="N int64 (one per point)", rows="point", unit="ns", lo=0,
          value_limit="max_sweep_duration_ns", optional=True),
))  # fmt: skip

#: No road vehicle moves faster (a speed of 1e300 m/s put NaN into the positions derived from
#: it).
MAX_SPEED_MPS = 200.0
# A heading is an angle, given within a few turns.
_MAX_HEADING_RAD = 4 * math.pi

GNSS_FIX = Schema(GnssFix, (
    nested("header", HEADER, "common header"),
    number("latitude_deg", "WGS84 latitude", unit="deg", lo=-90.0, hi=90.0),
    number("longitude_deg", "WGS84 longitude", unit="deg", lo=-180.0, hi=180.0),
    number("altitude_m", "WGS84 ellipsoidal height", unit="m", lo=ALTITUDE_RANGE_M[0],
           hi=ALTITUDE_RANGE_M[1]),
    numbers("position_covariance_m2", 9, "ENU position covariance, row-major 3 x 3",
            unit="m^2"),
    numbers("velocity_enu_mps", 3, "ENU velocity", unit="m/s", lo=-MAX_SPEED_MPS,
            hi=MAX_SPEED_MPS, optional=True),
    number("heading_rad", "ENU yaw: 0 = east, counter-clockwise positive", unit="rad",
           lo=-_MAX_HEADING_RAD, hi=_MAX_HEADING_RAD, optional=True),
), rules=(_variances, _speed))  # fmt: skip

RIG_MESSAGE = Schema(RigMessage, (
    nested("header", HEADER, "common header (stamp: in force from)"),
    document("rig", "rig document (calibration.Rig.to_dict), checked by Rig.from_dict"),
))  # fmt: skip

CAMERA_BOX = Schema(CameraBox, (
    text("camera", "camera name"),
    number("x1", "left edge, original image", unit="px"),
    number("y1", "top edge", unit="px"),
    number("x2", "right edge", unit="px"),
    number("y2", "bottom edge", unit="px"),
))  # fmt: skip

DETECTION = Schema(Detection3D, (
    text("label", "class name"),
    number("score", "confidence", lo=0.0, hi=1.0),
    numbers("center", 3, "box centre (x, y, z), vehicle frame", unit="m"),
    numbers("size", 3, "box length, width, height", unit="m", lo=0.0),
    number("yaw", "heading of the length axis about +z", unit="rad"),
    texts("sources", "sensors that support the detection (camera, lidar)"),
    number("latitude_deg", "WGS84 latitude of the centre", unit="deg", lo=-90.0, hi=90.0,
           optional=True),
    number("longitude_deg", "WGS84 longitude of the centre", unit="deg", lo=-180.0, hi=180.0,
           optional=True),
    nested("camera_box", CAMERA_BOX, "2D box the detection came from", optional=True),
    number("camera_contribution", "learned fusion: the score minus the score with the camera "
           "features removed (one engine call); null where not measured", lo=-1.0, hi=1.0,
           optional=True, since=2),
), together=(("latitude_deg", "longitude_deg"),))  # fmt: skip

DETECTION_LIST = Schema(DetectionList, (
    nested("header", HEADER, "common header (stamp: the lidar sweep's)"),
    nested_tuple("detections", DETECTION, "fused 3D detections",
                 limit=Limit("max_detections", "detection list", "detections")),
    int_map("timings_ns", "time spent per pipeline stage", unit="ns", lo=0),
    integer("latency_ns", "sensor stamp to publish (negative when the clocks disagree)",
            unit="ns"),
    boolean("budget_ok", "every stage and the end-to-end latency within budget"),
    texts("degraded", "input streams missing or unfit (a camera image too dark or blurred)"),
    boolean("valid", "every input present and fit"),
    version("schema_version", "schema version the list was written with"),
))  # fmt: skip

TRACK = Schema(Track, (
    integer("track_id", "the track's id, unique within a run of the node", lo=0),
    text("label", "class name (the class most of its detections voted for)"),
    number("score", "existence probability", lo=0.0, hi=1.0),
    numbers("center", 3, "box centre (x, y, z), vehicle frame", unit="m"),
    numbers("size", 3, "smoothed box length, width, height", unit="m", lo=0.0),
    number("yaw", "heading of the length axis about +z, vehicle frame", unit="rad"),
    numbers("velocity_mps", 2, "velocity over the ground, vehicle axes", unit="m/s"),
    numbers("center_world", 3, "box centre, world frame", unit="m"),
    number("yaw_world", "heading, world frame", unit="rad"),
    numbers("velocity_world_mps", 2, "velocity, world frame", unit="m/s"),
    number("yaw_rate", "turn rate", unit="rad/s"),
    numbers("covariance_world", 16, "covariance of (x, y, vx, vy), world frame, row-major "
            "4 x 4"),
    integer("age_ns", "time since the track was born", unit="ns", lo=0),
    integer("hits", "detections the track took", lo=0),
    integer("misses", "consecutive sweeps unseen (coasting when > 0)", lo=0),
))  # fmt: skip

TRACK_LIST = Schema(TrackList, (
    nested("header", HEADER, "common header (stamp: the lidar sweep's)"),
    nested_tuple("tracks", TRACK, "confirmed tracks",
                 limit=Limit("max_detections", "track list", "tracks")),
    text("world_frame", "enu (local ENU at the drive origin) or vehicle (no ego pose)"),
    int_map("timings_ns", "time spent per stage, tracking included", unit="ns", lo=0),
    integer("resets", "times the tracker started over", lo=0),
    version("schema_version", "schema version the list was written with"),
))  # fmt: skip

SENSOR_CLOCK = Schema(SensorClock, (
    text("stream", "sensor stream"),
    integer("offset_ns", "host - sensor clock at the newest stamp", unit="ns", optional=True),
    number("drift_ppm", "host seconds gained per sensor second x 1e6", unit="ppm"),
    integer("samples", "samples in the estimator's window", lo=0),
    integer("jumps", "clock jumps seen", lo=0),
    integer("last_jump_stamp_ns", "sensor stamp of the last jump", unit="ns", lo=0,
            optional=True),
    integer("rejected", "messages dropped for a stamp too far from the host receive clock",
            lo=0),
))  # fmt: skip

SENSOR_STATUS = Schema(SensorStatus, (
    text("stream", "sensor stream"),
    boolean("alive", "heard from within dead_after_periods of its period"),
    number("rate_hz", "rate measured from receive times (0 when dead)", unit="Hz", lo=0.0),
    number("nominal_rate_hz", "nominal rate from the config", unit="Hz", lo=0.0),
    integer("messages", "messages accepted", lo=0),
    integer("outages", "times it came back after being dead", lo=0),
    integer("last_receive_ns", "host receive time of its last message", unit="ns",
            optional=True),
))  # fmt: skip

REALTIME_STATUS = Schema(RealtimeStatus, (
    integers("cpu_affinity", "CPUs the node may run on", lo=0),
    integer("nice", "nice value"),
    text("scheduler", "scheduling policy: fifo or other"),
    boolean("gc_hold", "garbage collection held per frame"),
    texts("refused", "settings the OS refused, one line each"),
))  # fmt: skip

CALIBRATION_STATUS = Schema(CalibrationStatus, (
    text("camera", "camera name in the rig", nonempty=True),
    text("state", "collecting, aligned or drifted"),
    numbers("rotation_deg", 3, "correction: rotation vector about the vehicle axes",
            unit="deg"),
    numbers("translation_m", 3, "correction: translation along the vehicle axes", unit="m"),
    numbers("rotation_sigma_deg", 3, "standard deviation per axis, -1: not observed",
            unit="deg", lo=-1.0),
    numbers("translation_sigma_m", 3, "standard deviation per axis, -1: not observed",
            unit="m", lo=-1.0),
    integer("frames", "frames used", lo=0),
    integer("skipped", "frames skipped (few points, no contrast, not moving)", lo=0),
    number("score", "mutual information at the search's centre", unit="nats"),
))  # fmt: skip

DIAGNOSTICS = Schema(Diagnostics, (
    nested("header", HEADER, "common header (stamp: host wall time)"),
    int_map("counters", "messages received, dropped, skipped, published", lo=0),
    int_map("overruns_by_stage", "budget overruns per stage and end_to_end", lo=0),
    int_map("sync", "synchroniser counters", lo=0),
    int_map("missing_by_stream", "bundles that went out without the stream", lo=0),
    int_map("late_by_stream", "messages that arrived too late for their bundle", lo=0),
    nested_tuple("clocks", SENSOR_CLOCK, "each sensor clock against the host clock"),
    float_map("budgets_ms", "budgets in force per stage and end_to_end", unit="ms", lo=0.0),
    integer("last_publish_ns", "host time of the last DetectionList's publish", unit="ns",
            lo=0),
    integer("last_latency_ns", "the last DetectionList's latency", unit="ns"),
    texts("engines", "what each engine runs on (backend, device, precision)"),
    texts("notes", "conditions a user must know about, such as a backend fallback"),
    nested("realtime", REALTIME_STATUS, "real-time settings in force", optional=True),
    nested_tuple("sensors", SENSOR_STATUS, "each input sensor alive or dead, and its rate"),
    text("status", "inputs overall: ok, degraded (some dead), stale (all dead), unknown"),
    nested_tuple("calibration", CALIBRATION_STATUS, "the calibration monitor, per camera"),
))  # fmt: skip

#: The message types that travel on the wire, by the name documents carry in `type`.
WIRE_TYPES: Mapping[str, Schema] = {
    s.name: s
    for s in (
        CAMERA_FRAME,
        LIDAR_SWEEP,
        GNSS_FIX,
        RIG_MESSAGE,
        DETECTION_LIST,
        TRACK_LIST,
        DIAGNOSTICS,
    )
}
#: Every table (wire types and the messages nested in them), by dataclass.
SCHEMAS: Mapping[type[Any], Schema] = {
    s.cls: s
    for s in (
        *WIRE_TYPES.values(),
        HEADER,
        CAMERA_BOX,
        DETECTION,
        TRACK,
        SENSOR_CLOCK,
        SENSOR_STATUS,
        REALTIME_STATUS,
        CALIBRATION_STATUS,
    )
}


def _check_wire_types() -> None:
    # The wire codec relies on this shape: a header first, buffers only at the top level.
    for s in WIRE_TYPES.values():
        if s.fields[0].name != "header" or s.fields[0].schema is not HEADER:
            raise TypeError(f"wire type {s.name} must start with a Header field `header`")
    for s in SCHEMAS.values():
        if s.name not in WIRE_TYPES and any(f.kind.is_buffer for f in s.fields):
            raise TypeError(f"nested type {s.name} cannot carry array buffers")


_check_wire_types()


def versions_read() -> str:
    """The schema versions this node reads, for an error naming an unsupported one."""
    lo, hi = min(READABLE_SCHEMA_VERSIONS), max(READABLE_SCHEMA_VERSIONS)
    return f"this node reads versions {lo} to {hi}" if hi > lo else f"this node reads version {lo}"


def schema_of(message_type: type[Any] | str) -> Schema:
    """The table of a message dataclass or wire type name. Raises KeyError when it has none."""
    if isinstance(message_type, str):
        found = WIRE_TYPES.get(message_type)
    else:
        found = SCHEMAS.get(message_type)
    if found is None:
        raise KeyError(f"no message schema for {message_type!r}")
    return found
