"""Training samples straight from the synthetic world (`replay.synth.world`), no MCAP written.

Sample `i` of a `SyntheticSource` is sweep `i % n` of seed `seeds[i // n]` (n sweeps of 0.1 s per
seed). The world of a seed is `make_world(Generator(PCG64(seed)), seconds)`, as
`generate_drive` builds it, and is cached; the random parts of one sweep (lidar range noise and
dropouts, the camera's stamp jitter) come from a generator of its own,
`PCG64(SeedSequence(seed, spawn_key=(seq,)))`, so any sample is drawn alone, deterministically.
(The sweeps therefore differ in their noise from `generate_drive`'s, which draws everything from
one stream; the objects, poses and boxes are the same.)

What a sample holds, as the node would see it:
- points in the vehicle frame (= the lidar frame) at the sweep stamp: each return is moved from
  the sensor pose at its own time to the pose at the stamp with the world's exact ego motion
  (the node deskews with the GNSS twist instead);
- camera `front` rendered at its stamp (`CAMERA_OFFSET_NS` +- jitter after the sweep), through
  the camera's plumb-bob distortion and then undistorted as the pipeline does before its
  detector; the model is the pinhole of the same K without distortion, and
  `camera_from_vehicle` includes the ego motion from the sweep stamp to the camera's stamp;
- boxes as `generate_drive` writes them (within 100 m, at the sweep stamp): velocity over ground
  in vehicle axes, track id = object ident, visibility = unoccluded fraction of the silhouette
  in the rendered camera (0 when not in it), lidar_points = returns of this sweep on the object.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from calibration import PinholeCamera, RigidTransform
from replay.synth.world import (
    CAMERA_NAME,
    CAMERA_OFFSET_NS,
    CAMERA_STREAM,
    LIDAR_PERIOD_NS,
    START_NS,
    SynthWorld,
    check_world_options,
    lidar_sweep,
    make_world,
    render_camera,
    synth_rig,
)
from replay.training.samples import CameraView, TrainingSample
from replay.training.sources._boxes import box_from_truth, split_training

__all__ = ["SyntheticSource"]

FloatArray = npt.NDArray[np.float64]

# As generate_drive: ground truth within this BEV range, camera stamp jitter.
_TRUTH_RANGE_M = 100.0
_CAMERA_JITTER_NS = 2_000_000


def _seed_span(seeds: Sequence[int]) -> str:
    if len(seeds) > 1 and list(seeds) == list(range(seeds[0], seeds[0] + len(seeds))):
        return f"seeds {seeds[0]}-{seeds[-1]}"
    if len(seeds) == 1:
        return f"seed {seeds[0]}"
    shown = ", ".join(str(s) for s in seeds[:6])
    return f"seeds {shown}{', ...' if len(seeds) > 6 else ''}"


def _road_from_vehicle(world: SynthWorld, t: float) -> FloatArray:
    """4 x 4 pose of the vehicle in the road frame at `t` (s); z is left at 0 (the vehicle
    stays at one height, so it cancels in every relative motion)."""
    x, y, yaw = (float(v) for v in world.ego_pose(t))
    out: FloatArray = RigidTransform.from_yaw(yaw, (x, y, 0.0)).matrix
    return out


class SyntheticSource:
    """Synthetic drives of `seeds`, `seconds` each (10 sweeps a second), of the world `scene`
    seen by the lidar model `lidar` (`make_world`), as training samples.

    Raises ValueError: no seeds, a negative seed, `seconds` not positive, an unknown scene or
    lidar model."""

    def __init__(
        self,
        seeds: Sequence[int],
        seconds: float = 10.0,
        *,
        scene: str = "simple",
        lidar: str | None = None,
    ) -> None:
        self.seeds = tuple(int(s) for s in seeds)
        if not self.seeds:
            raise ValueError("synthetic source: no seeds")
        if any(s < 0 for s in self.seeds):
            raise ValueError(f"synthetic source: seeds must be >= 0, got {list(self.seeds)}")
        if not (math.isfinite(seconds) and seconds > 0):
            raise ValueError(f"synthetic source: seconds must be > 0, got {seconds}")
        self.seconds = float(seconds)
        # Checked here, so that a bad name fails when the config is read, not mid-training.
        check_world_options(scene, lidar)
        self.scene, self.lidar = scene, lidar
        self.sweeps_per_seed = max(1, round(self.seconds * 10))  # as generate_drive
        what = "synthetic" if scene == "simple" else f"synthetic {scene}"
        self.name = f"{what} {_seed_span(self.seeds)}"
        rig = synth_rig()
        camera = rig.cameras[CAMERA_NAME]
        assert isinstance(camera, PinholeCamera)
        self._camera = camera
        self._pinhole = PinholeCamera(camera.k.copy(), (), camera.width, camera.height)
        self._camera_from_vehicle = rig.transform(CAMERA_STREAM, "vehicle")
        self._vehicle_from_camera = self._camera_from_vehicle.inverse()
        self._worlds: dict[int, SynthWorld] = {}

    def __len__(self) -> int:
        return len(self.seeds) * self.sweeps_per_seed

    def describe(self) -> str:
        return f"{self.name}, {self.seconds:.1f} s: {len(self):,} sweeps"

    def world(self, seed: int) -> SynthWorld:
        """The world of `seed` (built once)."""
        if seed not in self._worlds:
            self._worlds[seed] = make_world(
                np.random.Generator(np.random.PCG64(seed)),
                self.seconds,
                scene=self.scene,
                lidar=self.lidar,
            )
        return self._worlds[seed]

    def __getitem__(self, index: int) -> TrainingSample:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"{self.name}: index {index} out of range ({n} samples)")
        seed_pos, seq = divmod(index % n, self.sweeps_per_seed)
        seed = self.seeds[seed_pos]
        world = self.world(seed)
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(seq,))))
        t0 = seq * LIDAR_PERIOD_NS * 1e-9
        stamp_ns = START_NS + seq * LIDAR_PERIOD_NS
        raw, offsets_ns, ident = lidar_sweep(world, t0, rng)
        points = self._deskewed(world, raw, offsets_ns, t0)
        jitter = int(rng.integers(-_CAMERA_JITTER_NS, _CAMERA_JITTER_NS + 1))
        camera_offset_ns = CAMERA_OFFSET_NS + jitter
        tc = t0 + camera_offset_ns * 1e-9
        image, seen = render_camera(world, tc, self._camera, self._vehicle_from_camera)
        image = self._camera.undistort_image(image)  # what the pipeline's detector sees
        # camera(tc) <- vehicle(tc) <- road <- vehicle(t0)
        motion = np.linalg.inv(_road_from_vehicle(world, tc)) @ _road_from_vehicle(world, t0)
        camera_from_vehicle = self._camera_from_vehicle.matrix @ motion
        hits = np.bincount(ident[ident >= 0], minlength=len(world.objects))
        visible = {b.ident: b.visible for b in seen}
        docs = [
            b for b in world.boxes_in_vehicle(t0) if math.hypot(*b["center"][:2]) < _TRUTH_RANGE_M
        ]
        for b in docs:
            b["lidar_points"] = int(hits[b["id"]])
            b["camera_visible"] = float(visible.get(b["id"], 0.0))
        boxes, ignored = split_training(box_from_truth(b) for b in docs)
        return TrainingSample(
            name=f"synth:seed={seed}:seq={seq}",
            points=points,
            cameras={
                CAMERA_NAME: CameraView(
                    image, self._pinhole, camera_from_vehicle.astype(np.float64)
                )
            },
            boxes=boxes,
            stamp_ns=stamp_ns,
            extra={
                "ignore": ignored,
                "camera_stamps_ns": {CAMERA_NAME: stamp_ns + camera_offset_ns},
            },
        )

    @staticmethod
    def _deskewed(
        world: SynthWorld,
        raw: npt.NDArray[np.float32],
        offsets_ns: npt.NDArray[np.int64],
        t0: float,
    ) -> npt.NDArray[np.float32]:
        """Points measured from the sensor pose at each point's time, moved to the vehicle frame
        at `t0` with the world's exact ego motion."""
        t = t0 + offsets_ns.astype(np.float64) * 1e-9
        x, y, yaw = world.ego_pose(t)
        x0, y0, yaw0 = (float(v) for v in world.ego_pose(t0))
        px, py = raw[:, 0].astype(np.float64), raw[:, 1].astype(np.float64)
        c, s = np.cos(yaw), np.sin(yaw)
        rx, ry = c * px - s * py + x - x0, s * px + c * py + y - y0
        c0, s0 = math.cos(yaw0), math.sin(yaw0)
        out = raw.copy()
        out[:, 0] = c0 * rx + s0 * ry
        out[:, 1] = -s0 * rx + c0 * ry
        return out
