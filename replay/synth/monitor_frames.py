"""The rich world's frames as the calibration monitor gets them, rendered frame by frame.

The calibration monitor's test bed (#16) without writing drives first: every
`every_n_sweeps`-th sweep of a rich world, its points moved to the camera's exposure with the
world's own ego motion, the points on ground-truth objects left out (the node leaves out its
detections'), the odometer and the ground plane fitted to the whole sweep as the node fits it.
Used by `benchmarks.calibration_monitor` and the monitor's tests.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import numpy.typing as npt

from calibration import PinholeCamera, RigidTransform
from calibration.monitor import object_mask
from perception.config import NodeConfig
from perception.pipeline.deskew import deskew_points
from perception.pipeline.ground import estimate_ground
from replay.synth.world import (
    CAMERA_NAME,
    CAMERA_OFFSET_NS,
    LIDAR_PERIOD_NS,
    SynthWorld,
    lidar_sweep,
    make_world,
    render_camera,
    synth_rig,
)

__all__ = ["MonitorFrame", "monitor_frames", "synth_camera"]

#: A frame as the monitor gets it: points (N x 4, vehicle frame at the exposure), image,
#: odometer (m), ground plane (nx, ny, nz, d).
MonitorFrame = tuple[
    npt.NDArray[np.float32], npt.NDArray[np.uint8], float, tuple[float, float, float, float]
]


def synth_camera() -> tuple[PinholeCamera, RigidTransform]:
    """The synthetic rig's camera and its exact vehicle_from_camera."""
    rig = synth_rig()
    camera = rig.cameras[CAMERA_NAME]
    assert isinstance(camera, PinholeCamera)
    return camera, rig.transform("vehicle", f"camera/{CAMERA_NAME}")


def monitor_frames(
    seed: int, seconds: float, time_error_ns: int = 0, limit: int | None = None
) -> Iterator[MonitorFrame]:
    """The monitor's frames of `seconds` of the rich world made from `seed`, at most `limit`,
    the ego motion to the exposure computed `time_error_ns` off."""
    camera, vehicle_from_camera = synth_camera()
    config = NodeConfig()
    defaults = config.calibration_monitor
    every = defaults.every_n_sweeps
    rng = np.random.Generator(np.random.PCG64(seed))
    world = make_world(rng, seconds, scene="rich")
    odometer = 0.0
    for n, i in enumerate(range(0, round(seconds * 10), every)):
        if limit is not None and n >= limit:
            return
        t0 = i * LIDAR_PERIOD_NS * 1e-9
        pts, offsets, _ = lidar_sweep(world, t0, rng)
        exposure = t0 + CAMERA_OFFSET_NS * 1e-9
        image, _ = render_camera(world, exposure, camera, vehicle_from_camera)
        (vx, vy), yaw_rate = _twist(world, t0)
        moved = deskew_points(
            pts, offsets, (vx, vy, 0.0), yaw_rate, CAMERA_OFFSET_NS + time_error_ns
        )
        boxes = [(b["center"], b["size"], b["yaw"]) for b in world.boxes_in_vehicle(exposure)]
        keep = ~object_mask(moved, boxes, defaults.object_margin_m)
        odometer += math.hypot(vx, vy) * every * LIDAR_PERIOD_NS * 1e-9
        # The node's ground: fitted to the whole sweep, objects and all.
        plane = estimate_ground(moved, config.pipeline.ground)
        yield moved[keep], image, odometer, (*plane.normal, plane.offset)


def _twist(world: SynthWorld, t: float) -> tuple[tuple[float, float], float]:
    """The ego velocity (vehicle frame, m/s) and yaw rate (rad/s) at `t`."""
    x0, y0, h0 = (float(v) for v in world.ego_pose(t))
    x1, y1, h1 = (float(v) for v in world.ego_pose(t + 0.01))
    ve, vn = (x1 - x0) / 0.01, (y1 - y0) / 0.01
    c, s = math.cos(h0), math.sin(h0)
    return (c * ve + s * vn, -s * ve + c * vn), math.remainder(h1 - h0, 2 * math.pi) / 0.01
