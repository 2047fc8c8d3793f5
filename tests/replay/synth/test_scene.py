"""The rich synthetic world: what it holds, that road users never overlap, that it is
deterministic, and that its sensors see materials and appearance."""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from perception.msgs.types import Detection3D
from perception.pipeline.boxes import bev_iou
from replay.evaluation import ReferenceBox
from replay.synth.scene import ROAD_USER_LABELS
from replay.synth.world import (
    CAMERA_NAME,
    SynthWorld,
    generate_drive,
    lidar_sweep,
    make_world,
    read_ground_truth,
    render_camera,
    synth_rig,
)

SEEDS = (200, 201, 202, 203)


def _world(seed: int, seconds: float = 3.0) -> SynthWorld:
    return make_world(np.random.Generator(np.random.PCG64(seed)), seconds, scene="rich")


def test_the_rich_world_holds_every_road_user_and_clutter_kind_and_curves() -> None:
    users: Counter[str] = Counter()
    scenery: Counter[str] = Counter()
    curved = junctions = 0
    crossing = 0
    for seed in SEEDS:
        world = _world(seed)
        users.update(o.label for o in world.objects)
        scenery.update(o.label for o in world.scenery)
        curved += any(k != 0.0 for k in world.road.curvature)
        junctions += len(world.road.junctions)
        crossing += sum(
            1
            for o in world.objects
            if o.label == "Pedestrian" and o.speed_mps > 0 and abs(abs(o.yaw) - math.pi / 2) < 1e-9
        )
    assert set(users) == set(ROAD_USER_LABELS)
    assert {"building", "hedge", "wall", "rail", "trailer", "pole", "tree"} <= set(scenery)
    assert curved == len(SEEDS)
    assert junctions >= 1
    assert crossing >= len(SEEDS)


def _box(doc: dict[str, object]) -> Detection3D:
    c, size = doc["center"], doc["size"]
    return Detection3D(str(doc["label"]), 1.0, tuple(c), tuple(size), float(doc["yaw"]))  # type: ignore[arg-type]


@pytest.mark.parametrize("seed", SEEDS)
def test_no_two_road_users_overlap_and_none_touches_the_ego_vehicle(seed: int) -> None:
    world = _world(seed)
    for t in np.arange(0.0, world.seconds + 1e-9, 0.25):
        boxes = [b for b in world.boxes_in_vehicle(float(t), 60.0)]
        for b in boxes:
            assert math.hypot(*b["center"][:2]) > 2.5, f"t={t}: {b['label']} {b['id']} on the ego"
        dets = [_box(b) for b in boxes]
        refs = [ReferenceBox(d.label, d.center, d.size, d.yaw) for d in dets]
        for i in range(len(dets)):
            for j in range(i + 1, len(dets)):
                if math.dist(dets[i].center[:2], dets[j].center[:2]) > 12.0:
                    continue
                iou = bev_iou(dets[i], refs[j])
                assert iou == 0.0, (
                    f"seed {seed} t={t}: {boxes[i]['label']} {boxes[i]['id']} overlaps "
                    f"{boxes[j]['label']} {boxes[j]['id']} (BEV IoU {iou:.2f})"
                )


def test_headings_vary_on_a_curved_road_and_vehicles_follow_it() -> None:
    world = _world(SEEDS[0])
    yaws = [b["yaw"] for b in world.boxes_in_vehicle(1.0, 40.0) if b["label"] == "Car"]
    spread = np.ptp(np.unwrap(np.asarray(yaws) % math.pi * 2) / 2)
    assert spread > math.radians(5)
    # A lane car keeps its lane's lateral offset as the road turns.
    mover = next(o for o in world.objects if o.label == "Car" and o.speed_mps > 6.5)
    for t in (0.0, 1.5, 3.0):
        x, y, _ = mover.pose(t)
        _, d = world.road.locate(x, y)
        assert abs(float(d) - mover.y0) < 0.05


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_same_seed_gives_byte_identical_rich_drives_with_full_ground_truth(
    tmp_path: Path,
) -> None:
    a = generate_drive(tmp_path / "a.mcap", seed=7, seconds=0.2, scene="rich")
    b = generate_drive(tmp_path / "b.mcap", seed=7, seconds=0.2, scene="rich")
    c = generate_drive(tmp_path / "c.mcap", seed=8, seconds=0.2, scene="rich")
    assert _sha(a.path) == _sha(b.path) and _sha(a.ground_truth) == _sha(b.ground_truth)
    assert _sha(a.path) != _sha(c.path)
    frames = read_ground_truth(a.ground_truth)
    labels = {box.label for f in frames for box in f.boxes}
    assert {"Car", "Pedestrian", "Cyclist"} <= labels
    line = a.ground_truth.read_text().splitlines()[0]
    for key in ('"id"', '"velocity"', '"camera_visible"', '"lidar_points"', '"yaw"'):
        assert key in line
    assert not any(box.label in {"hedge", "building", "tree"} for f in frames for box in f.boxes)


def test_the_rich_lidar_is_a_kitti_like_hdl64e_with_intensity_by_material() -> None:
    world = _world(SEEDS[1])
    assert world.lidar_model().name == "hdl64e"
    points, _, ident = lidar_sweep(world, 1.0, np.random.default_rng(0))
    assert 90_000 < len(points) < 260_000
    labels = {o.ident: o.label for o in world.objects + world.scenery}
    kind = np.array([labels.get(int(i), "ground") for i in ident])
    # Asphalt right around the vehicle (within a lane of it) is dark; vegetation is brighter.
    near_road = (kind == "ground") & (np.hypot(points[:, 0], points[:, 1]) < 12.0)
    near_road &= np.abs(points[:, 1]) < 1.2
    hedge = np.isin(kind, ["hedge", "tree"])
    assert near_road.sum() > 100 and hedge.sum() > 100
    assert np.median(points[hedge, 3]) > np.median(points[near_road, 3])


def test_appearance_is_randomised_by_seed_and_fixed_for_a_seed() -> None:
    rig = synth_rig()
    camera = rig.cameras[CAMERA_NAME]
    vehicle_from_camera = rig.transform("camera/front", "vehicle").inverse()
    means = []
    for seed in SEEDS:
        world = _world(seed, 1.0)
        image, boxes = render_camera(world, 0.5, camera, vehicle_from_camera)  # type: ignore[arg-type]
        again, _ = render_camera(world, 0.5, camera, vehicle_from_camera)  # type: ignore[arg-type]
        assert np.array_equal(image, again)
        assert any(b.label == "Car" and b.visible > 0.5 for b in boxes)
        means.append(image.reshape(-1, 3).mean(0))
    spread = np.ptp(np.asarray(means), axis=0)
    assert spread.max() > 15.0, f"image colour means barely differ across seeds: {means}"
