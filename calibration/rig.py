"""The sensor rig: named frames, their transforms to `vehicle`, cameras and time offsets.

Minimal model for the walking skeleton; the Calibration issue completes it (rig files, validation,
distortion models, lever arm).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from calibration.camera import PinholeCamera
from calibration.errors import CalibrationError
from calibration.transforms import RigidTransform

__all__ = ["VEHICLE_FRAME", "Rig"]

VEHICLE_FRAME = "vehicle"


@dataclass(frozen=True, eq=False)
class Rig:
    """`vehicle_from` maps a frame name (e.g. `lidar`, `camera/front`) to `vehicle_from_<frame>`.

    `cameras` maps a camera name (`front`) to its model; its frame is `camera/<name>`.
    `time_offsets_ns` maps a stream name to the offset added to its stamps.
    """

    vehicle_from: dict[str, RigidTransform]
    cameras: dict[str, PinholeCamera]
    time_offsets_ns: dict[str, int] = field(default_factory=dict)
    source: str = ""

    def __post_init__(self) -> None:
        for name in self.cameras:
            if f"camera/{name}" not in self.vehicle_from:
                raise CalibrationError(f"{self.source or 'rig'}: camera {name!r} has no extrinsics")

    def transform(self, target: str, source: str) -> RigidTransform:
        """`target_from_source` for any two frames of the rig."""
        return self._vehicle_from(target).inverse() @ self._vehicle_from(source)

    def _vehicle_from(self, frame: str) -> RigidTransform:
        if frame == VEHICLE_FRAME:
            return RigidTransform.identity()
        try:
            return self.vehicle_from[frame]
        except KeyError:
            known = ", ".join(sorted([VEHICLE_FRAME, *self.vehicle_from]))
            raise CalibrationError(
                f"{self.source or 'rig'}: unknown frame {frame!r} (frames: {known})"
            ) from None

    def to_dict(self) -> dict[str, Any]:
        """A plain document (lists, floats, strings) for YAML files and wire messages."""
        return {
            "source": self.source,
            "frames": {n: t.matrix.tolist() for n, t in self.vehicle_from.items()},
            "cameras": {
                n: {
                    "k": c.k.tolist(),
                    "distortion": list(c.distortion),
                    "width": c.width,
                    "height": c.height,
                }
                for n, c in self.cameras.items()
            },
            "time_offsets_ns": dict(self.time_offsets_ns),
        }

    @staticmethod
    def from_dict(doc: dict[str, Any], source: str = "rig") -> Rig:
        try:
            frames = {
                str(n): RigidTransform.from_matrix(m, name=f"{source}: frames.{n}")
                for n, m in doc["frames"].items()
            }
            cameras = {
                str(n): PinholeCamera(
                    k=np.asarray(c["k"], dtype=np.float64),
                    distortion=tuple(float(v) for v in c.get("distortion", ())),
                    width=int(c["width"]),
                    height=int(c["height"]),
                )
                for n, c in doc.get("cameras", {}).items()
            }
            offsets = {str(k): int(v) for k, v in doc.get("time_offsets_ns", {}).items()}
        except CalibrationError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise CalibrationError(
                f"{source}: malformed rig document ({type(e).__name__}: {e})"
            ) from e
        return Rig(frames, cameras, offsets, source=str(doc.get("source", source)))
