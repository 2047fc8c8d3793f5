"""The sensor rig: a tree of named frames, cameras, time offsets and the GNSS lever arm.

Frames
    `vehicle` is the root. Every other frame has a parent and the transform
    `parent_from_frame`; any pair is looked up through the tree with `rig.transform(target,
    source)` (`target_from_source`). Conventional names: `lidar`, `imu`, `gnss`, and
    `camera/<name>` for camera `<name>` (camera axes: x right, y down, z forward).

GNSS lever arm
    The position (metres) of the GNSS antenna (the point the fix refers to) in the vehicle frame.
    It is the frame `gnss` (parent `vehicle`, no rotation).

Time offsets
    `time_offsets_ns[stream]` is added to that stream's stamps to bring them onto the common
    clock (integer nanoseconds); missing streams have offset 0. A key names a stream (its
    messages' `header.stream`, e.g. `camera/front`) or, failing that, its frame
    (`header.frame_id`). The node adds it to every sensor message as it arrives
    (perception.node.core), before anything reads the stamp.

Rig file (YAML) schema, version 1 (`calibration/examples/kitti_rig.yaml` is a full example)::

    version: 1                      # required
    source: free text               # optional: where the calibration came from
    frames:                         # every frame except `vehicle`
      lidar:
        parent: vehicle             # optional, default `vehicle`
        rotation: [[r00, r01, r02], [r10, r11, r12], [r20, r21, r22]]   # parent_from_frame
        translation: [x, y, z]      # metres, the frame's origin in the parent frame
      camera/front:
        parent: lidar
        matrix: [[...4 values...] x 4]   # alternative to rotation + translation (3x4 or 4x4)
    cameras:
      front:                        # its frame is camera/front
        model: pinhole              # pinhole (plumb-bob) | fisheye (equidistant)
        width: 1242                 # pixels
        height: 375
        k: [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]   # pixels
        distortion: [k1, k2, p1, p2, k3]   # pinhole: [] | 4 | 5 | 8 values; fisheye: 4 values
    time_offsets_ns: {lidar: 0, camera/front: 0}
    gnss:
      lever_arm_m: [x, y, z]        # antenna position in the vehicle frame, metres
    warnings: []                    # optional: notes from the loader that made the file

Validation (on load and on construction) raises CalibrationError naming the file, the field and
the problem: rotations orthonormal with det +1 (tolerance 1e-4), finite values, positive focal
lengths, principal point inside the image, positive image size, distortion length, every frame
connected to `vehicle` (no unknown parents, no cycles), every camera has its frame, time offsets
within +-2^62 ns. Rigs also arrive over the network (rig messages), so reading a document never
raises anything but CalibrationError, whatever it holds: nesting deeper than
`MAX_DOCUMENT_DEPTH` is refused before anything recurses into it, and error messages show
values cut short.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import numpy.typing as npt
import yaml

from calibration.camera import CameraModel, camera_from_dict
from calibration.errors import CalibrationError, load_yaml, read_text, shown
from calibration.transforms import RigidTransform

__all__ = [
    "GNSS_FRAME",
    "MAX_DOCUMENT_DEPTH",
    "MAX_SENSOR_OFFSET_M",
    "MAX_TIME_OFFSET_NS",
    "RIG_FILE_VERSION",
    "VEHICLE_FRAME",
    "FrameEdge",
    "Rig",
    "camera_frame",
    "load_rig_yaml",
    "save_rig_yaml",
]

VEHICLE_FRAME = "vehicle"
GNSS_FRAME = "gnss"
RIG_FILE_VERSION = 1

_TOP_KEYS = {"version", "source", "frames", "cameras", "time_offsets_ns", "gnss", "warnings"}
#: Nesting of maps and lists a rig document may have (a valid one has 5: frames -> frame ->
#: rotation -> row -> value); deeper documents are refused before anything recurses into them.
MAX_DOCUMENT_DEPTH = 64
#: Largest time offset (ns, either sign): a stamp (at most 2^62 on the wire) plus an offset stays
#: within int64.
MAX_TIME_OFFSET_NS = 2**62
# Map keys a document may have: what YAML, JSON and msgpack give for plain keys.
_KEY_TYPES = (str, int, float, bool, type(None))
_CONTAINERS = (dict, list, tuple)


def camera_frame(name: str) -> str:
    """The frame name of camera `name`."""
    return f"camera/{name}"


@dataclass(frozen=True)
class FrameEdge:
    """A frame's parent and `parent_from_frame`."""

    parent: str
    parent_from_frame: RigidTransform


#: The farthest a frame of a rig may lie from the vehicle origin, m (a road train is 50 m long).
MAX_SENSOR_OFFSET_M = 1000.0


class Rig:
    """Frames, cameras, time offsets and the GNSS lever arm of one vehicle.

    `vehicle_from` maps frames attached directly to `vehicle` to `vehicle_from_<frame>`;
    `edges` maps other frames to `(parent, parent_from_frame)`. `gnss_lever_arm_m` adds the
    frame `gnss`. `source` names the file (used in error messages); `warnings` carries a
    loader's notes (e.g. an image size that differs from the one a file states).

    Raises CalibrationError for a frame not connected to `vehicle`, a camera without its frame
    `camera/<name>`, a frame defined twice, or a non-finite lever arm.
    """

    def __init__(
        self,
        vehicle_from: Mapping[str, RigidTransform] | None = None,
        cameras: Mapping[str, CameraModel] | None = None,
        time_offsets_ns: Mapping[str, int] | None = None,
        source: str = "",
        *,
        edges: Mapping[str, tuple[str, RigidTransform] | FrameEdge] | None = None,
        gnss_lever_arm_m: npt.ArrayLike | None = None,
        warnings: Sequence[str] = (),
    ) -> None:
        self.source = source
        where = source or "rig"
        tree: dict[str, FrameEdge] = {}
        for name, t in (vehicle_from or {}).items():
            tree[name] = FrameEdge(VEHICLE_FRAME, t)
        for name, edge in (edges or {}).items():
            if name in tree:
                raise CalibrationError(f"{where}: frames.{name}: frame defined twice")
            tree[name] = edge if isinstance(edge, FrameEdge) else FrameEdge(edge[0], edge[1])
        if gnss_lever_arm_m is not None:
            arm = np.asarray(gnss_lever_arm_m, dtype=np.float64)
            if arm.shape != (3,) or not np.all(np.isfinite(arm)):
                raise CalibrationError(
                    f"{where}: gnss.lever_arm_m: expected 3 finite values, got {arm.tolist()}"
                )
            if GNSS_FRAME in tree:
                raise CalibrationError(
                    f"{where}: gnss.lever_arm_m: frame {GNSS_FRAME!r} is also defined in frames"
                )
            m = np.eye(4)
            m[:3, 3] = arm
            tree[GNSS_FRAME] = FrameEdge(VEHICLE_FRAME, RigidTransform(m))
        if VEHICLE_FRAME in tree:
            raise CalibrationError(f"{where}: frames.{VEHICLE_FRAME}: the root frame has no parent")
        self._tree = tree
        self._vehicle_from = self._resolve_all(where)
        for name, t in self._vehicle_from.items():
            far = float(np.abs(t.translation).max(initial=0.0))
            if not far <= MAX_SENSOR_OFFSET_M:
                # Points moved by 1e300 m overflow float32 in every sweep's deskew.
                raise CalibrationError(
                    f"{where}: frames.{name}: {shown(t.translation.tolist())} m from the vehicle "
                    f"origin, beyond the {MAX_SENSOR_OFFSET_M:.0f} m a sensor on a vehicle can be"
                )
        self.cameras: Mapping[str, CameraModel] = MappingProxyType(dict(cameras or {}))
        for name in self.cameras:
            if camera_frame(name) not in tree:
                raise CalibrationError(
                    f"{where}: cameras.{name}: camera {name!r} has no extrinsics "
                    f"(no frame {camera_frame(name)!r})"
                )
        offsets = dict(time_offsets_ns or {})
        for stream, value in offsets.items():
            if isinstance(value, bool) or not isinstance(value, int | np.integer):
                raise CalibrationError(
                    f"{where}: time_offsets_ns.{stream}: expected integer nanoseconds, "
                    f"got {shown(value)}"
                )
            if abs(int(value)) > MAX_TIME_OFFSET_NS:
                raise CalibrationError(
                    f"{where}: time_offsets_ns.{stream}: {shown(int(value))} ns is beyond "
                    f"+-{MAX_TIME_OFFSET_NS} ns"
                )
        self.time_offsets_ns: Mapping[str, int] = MappingProxyType(
            {k: int(v) for k, v in offsets.items()}
        )
        self.warnings: tuple[str, ...] = tuple(warnings)

    def _resolve_all(self, where: str) -> dict[str, RigidTransform]:
        """`vehicle_from_<frame>` of every frame, each composed once from its parent's (so a
        long chain of frames costs one product per frame, not one per ancestor)."""
        resolved: dict[str, RigidTransform] = {}
        for name in self._tree:
            chain: list[str] = []
            on_chain: set[str] = set()
            frame = name
            while frame != VEHICLE_FRAME and frame not in resolved:
                if frame in on_chain:
                    raise CalibrationError(
                        f"{where}: frames.{name}: not connected to {VEHICLE_FRAME!r} "
                        f"(parent chain {_chain([*chain, frame])} is a cycle)"
                    )
                edge = self._tree.get(frame)
                if edge is None:
                    raise CalibrationError(
                        f"{where}: frames.{name}: not connected to {VEHICLE_FRAME!r} "
                        f"(parent chain {_chain([*chain, frame])}: {shown(frame)} is not a frame)"
                    )
                chain.append(frame)
                on_chain.add(frame)
                frame = edge.parent
            out = RigidTransform.identity() if frame == VEHICLE_FRAME else resolved[frame]
            for f in reversed(chain):
                out = out @ self._tree[f].parent_from_frame
                resolved[f] = out
        return {name: resolved[name] for name in self._tree}

    # -- frames ---------------------------------------------------------------------------

    @property
    def frames(self) -> tuple[str, ...]:
        """Every frame name, `vehicle` first."""
        return (VEHICLE_FRAME, *self._tree)

    @property
    def edges(self) -> Mapping[str, FrameEdge]:
        """Frame -> (parent, parent_from_frame), for every frame but `vehicle`."""
        return MappingProxyType(self._tree)

    @property
    def vehicle_from(self) -> Mapping[str, RigidTransform]:
        """Frame -> `vehicle_from_<frame>` for every frame but `vehicle`."""
        return MappingProxyType(self._vehicle_from)

    def parent(self, frame: str) -> str | None:
        """The parent of `frame` (None for `vehicle`). Raises CalibrationError if unknown."""
        if frame == VEHICLE_FRAME:
            return None
        self._check_frame(frame)
        return self._tree[frame].parent

    def children(self, frame: str) -> list[str]:
        return [n for n, e in self._tree.items() if e.parent == frame]

    def _check_frame(self, frame: str) -> None:
        if frame != VEHICLE_FRAME and frame not in self._tree:
            known = ", ".join(self.frames)
            raise CalibrationError(
                f"{self.source or 'rig'}: unknown frame {frame!r} (frames: {known})"
            )

    def _ancestors(self, frame: str) -> list[str]:
        chain = [frame]
        while chain[-1] != VEHICLE_FRAME:
            chain.append(self._tree[chain[-1]].parent)
        return chain

    def _ancestor_from(self, frame: str, ancestor: str) -> RigidTransform:
        out = RigidTransform.identity()
        while frame != ancestor:
            edge = self._tree[frame]
            out = edge.parent_from_frame @ out
            frame = edge.parent
        return out

    def transform(self, target: str, source: str) -> RigidTransform:
        """`target_from_source` for any two frames, composed through their lowest common
        ancestor (so a direct edge is used as stored). Raises CalibrationError if unknown."""
        self._check_frame(target)
        self._check_frame(source)
        up_source = self._ancestors(source)
        common = next(f for f in self._ancestors(target) if f in up_source)
        ancestor_from_source = self._ancestor_from(source, common)
        ancestor_from_target = self._ancestor_from(target, common)
        if target == common:
            return ancestor_from_source
        return ancestor_from_target.inverse() @ ancestor_from_source

    @property
    def gnss_lever_arm_m(self) -> npt.NDArray[np.float64] | None:
        """The antenna position in the vehicle frame (metres), or None without a `gnss` frame."""
        if GNSS_FRAME not in self._tree:
            return None
        out: npt.NDArray[np.float64] = self._vehicle_from[GNSS_FRAME].translation.copy()
        return out

    def time_offset_ns(self, stream: str) -> int:
        return int(self.time_offsets_ns.get(stream, 0))

    def with_vehicle_from(self, frame: str, vehicle_from_frame: RigidTransform) -> Rig:
        """A copy with `frame` moved so that `vehicle_from_<frame>` is `vehicle_from_frame`
        (its parent stays; the frames below it move with it).

        Raises CalibrationError for an unknown frame or the root frame."""
        self._check_frame(frame)
        if frame == VEHICLE_FRAME:
            raise CalibrationError(f"{self.source or 'rig'}: the root frame cannot move")
        parent = self._tree[frame].parent
        parent_from_frame = self.transform(parent, VEHICLE_FRAME) @ vehicle_from_frame
        edges = dict(self._tree)
        edges[frame] = FrameEdge(parent, parent_from_frame)
        # The GNSS antenna's frame travels as an edge like the others.
        return Rig(
            cameras=self.cameras,
            time_offsets_ns=self.time_offsets_ns,
            source=self.source,
            edges=edges,
            warnings=self.warnings,
        )

    # -- documents --------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The rig-file document (plain lists, floats, strings); see the module docstring."""
        frames: dict[str, Any] = {}
        lever = None
        for name, edge in self._tree.items():
            t = edge.parent_from_frame
            if (
                name == GNSS_FRAME
                and edge.parent == VEHICLE_FRAME
                and np.array_equal(t.rotation, np.eye(3))
            ):
                lever = t.translation.tolist()
                continue
            frames[name] = {
                "parent": edge.parent,
                "rotation": t.rotation.tolist(),
                "translation": t.translation.tolist(),
            }
        doc: dict[str, Any] = {
            "version": RIG_FILE_VERSION,
            "source": self.source,
            "frames": frames,
            "cameras": {n: c.to_dict() for n, c in self.cameras.items()},
            "time_offsets_ns": dict(self.time_offsets_ns),
        }
        if lever is not None:
            doc["gnss"] = {"lever_arm_m": lever}
        if self.warnings:
            doc["warnings"] = list(self.warnings)
        return doc

    @cached_property
    def calibration_digest(self) -> str:
        """A digest of what the rig calibrates: its document without `source` (where it was
        read from). Equal for rigs that calibrate alike; made once per rig, since a big rig's
        document takes a while (a rig is not changed once made)."""
        doc = self.to_dict()
        doc.pop("source", None)
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()

    @staticmethod
    def from_dict(doc: Any, source: str = "rig") -> Rig:
        """Validate and build a rig from its document. `source` (the file) prefixes errors.

        Raises CalibrationError `"<source>: <field>: <problem>"` for any invalid field, and
        nothing else for any document (nesting, types and sizes included).
        """
        _check_document(doc, source)
        try:
            return Rig._from_dict(doc, source)
        except CalibrationError:
            raise
        except Exception as e:  # the last line of defence: rigs come from the network too
            raise CalibrationError(
                f"{source}: malformed rig document ({type(e).__name__}: {shown(str(e))})"
            ) from e

    @staticmethod
    def _from_dict(doc: Any, source: str) -> Rig:
        if not isinstance(doc, dict):
            raise CalibrationError(
                f"{source}: expected a mapping at the top, got {type(doc).__name__}"
            )
        unknown = set(doc) - _TOP_KEYS
        if unknown:
            raise CalibrationError(f"{source}: unknown top-level field(s) {_names(unknown)}")
        version = doc.get("version", RIG_FILE_VERSION)
        if version != RIG_FILE_VERSION:
            raise CalibrationError(
                f"{source}: version: unsupported rig file version {shown(version)} "
                f"(this reader knows {RIG_FILE_VERSION})"
            )
        frames_doc = doc.get("frames", {})
        if not isinstance(frames_doc, dict):
            raise CalibrationError(
                f"{source}: frames: expected a mapping of frame name -> transform"
            )
        edges: dict[str, FrameEdge] = {}
        for name, value in frames_doc.items():
            edges[str(name)] = _edge_from_doc(value, f"{source}: frames.{name}")
        cams_doc = doc.get("cameras", {}) or {}
        if not isinstance(cams_doc, dict):
            raise CalibrationError(f"{source}: cameras: expected a mapping of camera name -> model")
        cameras = {
            str(n): camera_from_dict(c, f"{source}: cameras.{n}") for n, c in cams_doc.items()
        }
        offsets_doc = doc.get("time_offsets_ns", {}) or {}
        if not isinstance(offsets_doc, dict):
            raise CalibrationError(f"{source}: time_offsets_ns: expected a mapping stream -> ns")
        lever = None
        gnss = doc.get("gnss")
        if gnss is not None:
            if not isinstance(gnss, dict) or "lever_arm_m" not in gnss:
                raise CalibrationError(f"{source}: gnss: expected a mapping with lever_arm_m")
            lever = _vector(gnss["lever_arm_m"], f"{source}: gnss.lever_arm_m")
        warnings = doc.get("warnings", []) or []
        if not isinstance(warnings, list) or not all(isinstance(w, str) for w in warnings):
            raise CalibrationError(f"{source}: warnings: expected a list of strings")
        origin = doc.get("source")
        if origin is not None and not isinstance(origin, str):
            raise CalibrationError(f"{source}: source: expected a string, got {shown(origin)}")
        rig = Rig(
            cameras=cameras,
            time_offsets_ns={str(k): v for k, v in offsets_doc.items()},
            source=source,
            edges=edges,
            gnss_lever_arm_m=lever,
            warnings=warnings,
        )
        # Validation errors above name the file read; the rig keeps the origin the document
        # states (e.g. the KITTI calib a wire message was made from).
        if origin:
            rig.source = origin
        return rig


def _check_document(doc: Any, source: str) -> None:
    """Refuse a document nested deeper than `MAX_DOCUMENT_DEPTH` or with map keys that are not
    plain values, walking it level by level (no recursion), before anything else reads it:
    numpy, `repr` and `str` recurse per level and would fail on a list nested 1,000 deep. Errors
    name the top-level field the fault is under."""
    if not isinstance(doc, dict):
        return  # from_dict refuses it
    _check_keys(doc, source, "")
    for top, value in doc.items():
        level = [value] if isinstance(value, _CONTAINERS) else []
        depth = 1  # the document itself
        while level:
            depth += 1
            if depth > MAX_DOCUMENT_DEPTH:
                raise CalibrationError(
                    f"{source}: {str(top)[:80]}: maps and lists nested more than "
                    f"{MAX_DOCUMENT_DEPTH} deep"
                )
            below: list[Any] = []
            for node in level:
                items: Any = node
                if isinstance(node, dict):
                    _check_keys(node, source, top)
                    items = node.values()
                below += [v for v in items if isinstance(v, _CONTAINERS)]
            level = below


def _check_keys(node: dict[Any, Any], source: str, top: Any) -> None:
    for key in node:
        if not isinstance(key, _KEY_TYPES):
            where = f"{str(top)[:80]}: " if top != "" else ""
            raise CalibrationError(f"{source}: {where}map keys must be strings, got {shown(key)}")


def _names(keys: Any) -> list[str]:
    """Keys for an error message, sorted (they may mix types: YAML keys can be numbers)."""
    return sorted(str(k)[:80] for k in keys)


def _chain(frames: list[str]) -> str:
    """A parent chain for an error message, its middle left out when long."""
    names = frames if len(frames) <= 8 else [*frames[:4], "...", *frames[-3:]]
    return " -> ".join(names)


def _vector(value: Any, where: str) -> npt.NDArray[np.float64]:
    try:
        v = np.array(value, dtype=np.float64)
    except (TypeError, ValueError, OverflowError) as e:
        raise CalibrationError(f"{where}: expected 3 numbers, got {shown(value)}") from e
    if v.shape != (3,):
        raise CalibrationError(f"{where}: expected 3 numbers, got {shown(value)}")
    if not np.all(np.isfinite(v)):
        raise CalibrationError(f"{where}: non-finite values {v.tolist()}")
    return v


def _edge_from_doc(value: Any, where: str) -> FrameEdge:
    if isinstance(value, list):
        # A bare matrix: `vehicle_from_frame` (the compact form of earlier documents).
        return FrameEdge(VEHICLE_FRAME, RigidTransform.from_matrix(value, where))
    if not isinstance(value, dict):
        raise CalibrationError(f"{where}: expected a mapping with rotation/translation or matrix")
    unknown = set(value) - {"parent", "rotation", "translation", "matrix"}
    if unknown:
        raise CalibrationError(f"{where}: unknown field(s) {_names(unknown)}")
    parent = value.get("parent", VEHICLE_FRAME)
    if not isinstance(parent, str) or not parent:
        raise CalibrationError(f"{where}.parent: expected a frame name, got {shown(parent)}")
    if "matrix" in value:
        if "rotation" in value or "translation" in value:
            raise CalibrationError(f"{where}: give either matrix or rotation + translation")
        return FrameEdge(parent, RigidTransform.from_matrix(value["matrix"], f"{where}.matrix"))
    for key in ("rotation", "translation"):
        if key not in value:
            raise CalibrationError(f"{where}: missing field {key!r}")
    translation = _vector(value["translation"], f"{where}.translation")
    try:
        rotation = np.array(value["rotation"], dtype=np.float64)
    except (TypeError, ValueError, OverflowError) as e:
        raise CalibrationError(f"{where}.rotation: expected a 3x3 matrix of numbers") from e
    return FrameEdge(parent, RigidTransform.from_rotation_translation(rotation, translation, where))


def load_rig_yaml(path: Path | str) -> Rig:
    """Read and validate a rig file. Raises CalibrationError naming the file and field."""
    p = Path(path)
    doc = load_yaml(read_text(p, "rig file"), p, "not valid YAML")
    if doc is None:
        raise CalibrationError(f"{p}: empty rig file")
    return Rig.from_dict(doc, source=str(p))


def save_rig_yaml(rig: Rig, path: Path | str, comment: str = "") -> None:
    """Write `rig` as a rig file (exact float round trip); `comment` lines go on top."""
    header = "".join(f"# {line}\n" for line in comment.splitlines())
    body = yaml.safe_dump(rig.to_dict(), sort_keys=False, default_flow_style=None, width=100)
    Path(path).write_text(header + body)
