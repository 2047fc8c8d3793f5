"""Shared fixtures: the real data corpus (PERCEPTION_DATA, default ../shared/data), KITTI
object frames, the trained detector's reference boxes, and synthetic drives (generated once per
session)."""

from __future__ import annotations

import atexit
import os
import pickle
import shutil
import struct
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import pytest
from filelock import FileLock

from app.threads import let_openmp_threads_sleep
from calibration import CameraModel, RigidTransform, load_kitti_object_calib

REPO = Path(__file__).resolve().parents[1]


def pytest_configure(config: pytest.Config) -> None:
    """The suite's process settings. A cache folder of its own (`_hermetic_cache`). Bytecode
    caches on, whatever the environment says
    (PYTHONDONTWRITEBYTECODE): every pytest process of a run collects ~240 test modules and the
    tests start ~100 Python processes (nodes, CLI commands). Without caches each recompiles the
    project and pytest rewrites every test module's asserts again: collecting took 18.6 s per
    process here, 6.5 s with caches, and a node's imports 0.3 s more."""
    sys.dont_write_bytecode = False
    _hermetic_cache()
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    # Two workers share the cores: torch's OpenMP threads, which spin while they wait for
    # work, then hold a core the other worker needs. A 250-step training (the `kitti_learned`
    # fixture) took 54 s beside one busy core with two spinning threads, 27 s with them
    # sleeping, the same weights either way. As every `perception` command does it: before any
    # test module imports torch, and inherited by the processes the tests start.
    let_openmp_threads_sleep()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-references",
        action="store_true",
        help="rewrite the regression replays' stored references from this run (on purpose)",
    )


T = TypeVar("T")


def built_once(
    tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], T]
) -> T:
    """`build(folder)`'s value, built once per test run even across pytest-xdist's workers: the
    first worker to ask builds it in a folder every worker of the run shares (under a file
    lock, so the others wait for it rather than build it again), the others read it back. The
    suite's costliest fixtures (a training run, rendered drives) are each asked for by files
    that land on different workers. `build`'s value must pickle; a build that fails or skips
    leaves nothing, and the next to ask tries again."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        # The workers' base folders are siblings in the run's own folder.
        root = root.parent
    folder = root / f"built-once-{name}"
    done = folder / "value.pickle"
    with FileLock(str(folder) + ".lock"):
        if done.exists():
            value: T = pickle.loads(done.read_bytes())
            return value
        folder.mkdir(exist_ok=True)
        value = build(folder)
        part = done.with_suffix(".part")
        part.write_bytes(pickle.dumps(value))
        part.replace(done)
        return value


def _hermetic_cache() -> None:
    """The run's own cache folder: XDG_CACHE_HOME (engines.cache reads it when first imported,
    which is after this hook; the processes the tests start inherit it), so a run reads nothing
    from the user's ~/.cache and writes nothing there. The registered camera models are copied
    in from the corpus, as `perception models fetch --source-dir` would: tests that take the
    default model (a KITTI replay, a drive not known to be synthetic) passed only where an
    earlier session had left it in ~/.cache, and failed on a new machine without internet."""
    root = Path(tempfile.mkdtemp(prefix="perception-test-cache-"))
    atexit.register(shutil.rmtree, root, True)
    os.environ["XDG_CACHE_HOME"] = str(root)
    data = find_data_dir()
    if data is None:
        return
    models = root / "perception-node" / "models"
    models.mkdir(parents=True)
    for model in (data / "camera_detector").glob("*.onnx"):
        shutil.copyfile(model, models / model.name)


def find_data_dir() -> Path | None:
    env = os.environ.get("PERCEPTION_DATA")
    path = Path(env) if env else REPO.parent / "shared" / "data"
    return path if path.is_dir() else None


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = find_data_dir()
    if path is None:
        pytest.skip(
            "real data not found: set PERCEPTION_DATA or place the corpus at ../shared/data"
        )
    return path


@pytest.fixture(scope="session")
def kitti_dir(data_dir: Path) -> Path:
    return data_dir / "kitti_object" / "training"


@pytest.fixture(scope="session")
def yolox_path(data_dir: Path) -> Path:
    return data_dir / "camera_detector" / "yolox_nano_coco_416.onnx"


@dataclass(frozen=True)
class KittiFrame:
    """One KITTI object frame: FOV-cropped scan (Velodyne = vehicle frame) and camera 2."""

    frame_id: str
    points: npt.NDArray[np.float32]
    camera: CameraModel
    camera_from_vehicle: RigidTransform
    calib_path: Path


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG header, without decoding the image."""
    with path.open("rb") as f:
        head = f.read(24)
    if head[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{path}: not a PNG file")
    width, height = struct.unpack(">II", head[16:24])
    return int(width), int(height)


def copy_kitti_frames(
    kitti_dir: Path, dest: Path, frames: Sequence[str], *, labels: Sequence[str] = ()
) -> Path:
    """A KITTI object folder at `dest` of real `frames` (image, reduced scan, calib), with the
    label files of the frames in `labels`: a folder a test may break or write beside."""
    for sub, ext in (("image_2", "png"), ("velodyne_reduced", "bin"), ("calib", "txt")):
        (dest / sub).mkdir(parents=True)
        for frame in frames:
            shutil.copy(kitti_dir / sub / f"{frame}.{ext}", dest / sub)
    if labels:
        (dest / "label_2").mkdir()
        for frame in labels:
            shutil.copy(kitti_dir / "label_2" / f"{frame}.txt", dest / "label_2")
    return dest


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real data not found: {path} (set PERCEPTION_DATA to the data corpus)")
    return path


@pytest.fixture(scope="session")
def reference_dir(data_dir: Path) -> Path:
    """PointPillars reference boxes (Velodyne frame) of frames 000000 and 000003-000005."""
    return _require(data_dir / "kitti_pointpillars" / "reference_pred_velo")


@pytest.fixture(scope="session")
def kitti_frame(kitti_dir: Path) -> Callable[[str], KittiFrame]:
    """Loader of a KITTI object frame by id (cached); skips when its files are absent."""
    cache: dict[str, KittiFrame] = {}

    def load(frame_id: str) -> KittiFrame:
        if frame_id not in cache:
            calib = _require(kitti_dir / "calib" / f"{frame_id}.txt")
            image = _require(kitti_dir / "image_2" / f"{frame_id}.png")
            scan = _require(kitti_dir / "velodyne_reduced" / f"{frame_id}.bin")
            width, height = png_size(image)
            rig = load_kitti_object_calib(calib, width, height)
            points = np.fromfile(scan, dtype="<f4").reshape(-1, 4).astype(np.float32)
            cache[frame_id] = KittiFrame(
                frame_id,
                points,
                rig.cameras["front"],
                rig.transform("camera/front", "vehicle"),
                calib,
            )
        return cache[frame_id]

    return load


@pytest.fixture(scope="session")
def synth_drive(tmp_path_factory: pytest.TempPathFactory) -> Callable[[int, float], Path]:
    """`synth_drive(seed, seconds)`: the path of the synthetic drive of that seed and length,
    with its ground truth beside it, generated once per test session. Tests must not modify
    these files (copy them when they need a drive of their own)."""
    from replay.synth.world import generate_drive

    drives: dict[tuple[int, float], Path] = {}

    def build(seed: int, seconds: float, folder: Path) -> Path:
        path = folder / f"seed{seed}_{seconds:g}s.mcap"
        generate_drive(path, seed=seed, seconds=seconds)
        return path

    def get(seed: int, seconds: float) -> Path:
        key = (seed, seconds)
        if key not in drives:
            drives[key] = built_once(
                tmp_path_factory,
                f"synth-seed{seed}-{seconds:g}s",
                lambda folder: build(seed, seconds, folder),
            )
        return drives[key]

    return get


@pytest.fixture(scope="session")
def rich_drive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2 s drive of the rich synthetic world (textured surfaces, the KITTI-like lidar), seed
    5, with its exact calibration: the calibration monitor's test bed. Generated once per
    session (15-30 s, as fast as the cores are); tests must not modify it."""
    from replay.synth.world import generate_drive

    def build(folder: Path) -> Path:
        path = folder / "rich_seed5_2s.mcap"
        generate_drive(path, seed=5, seconds=2.0, scene="rich")
        return path

    return built_once(tmp_path_factory, "rich-drive", build)


#: The drift of `drifted_rich_drive`'s rig: its camera turned 0.5 degrees in yaw.
RIG_DRIFT_YAW_DEG = 0.5


@pytest.fixture(scope="session")
def drifted_rich_drive(tmp_path_factory: pytest.TempPathFactory, rich_drive: Path) -> Path:
    """`rich_drive` with its rig's camera turned by `RIG_DRIFT_YAW_DEG` (the images are the
    true camera's): a drifted extrinsic. What `generate_drive(..., rig_error=...)` writes, made
    by rewriting the rig of `rich_drive` rather than rendering the world again."""
    import shutil

    from calibration.monitor import Correction, corrected_rig
    from perception.msgs.types import LidarSweep
    from replay.drive import RIG_TOPIC, DriveReader, DriveWriter
    from replay.synth.world import CAMERA_NAME, ground_truth_path

    path = tmp_path_factory.mktemp("rich-drive-drifted") / "rich_seed5_2s_drifted.mcap"
    reader = DriveReader(rich_drive)
    rig = reader.rig
    assert rig is not None
    drifted = corrected_rig(rig, CAMERA_NAME, Correction((0.0, 0.0, RIG_DRIFT_YAW_DEG)))
    truth = {doc["stamp_ns"]: doc for doc in reader.ground_truth()}
    with DriveWriter(path, rig=None) as writer:
        for rec in reader.messages():
            if rec.topic == RIG_TOPIC:
                writer.write_rig(drifted, rec.message.header.stamp_ns)
                continue
            writer.write(rec.message, rec.log_time_ns, rec.topic)
            if isinstance(rec.message, LidarSweep):
                # Its ground truth goes with its sweep, as generate_drive writes it.
                writer.write_ground_truth(truth.pop(rec.message.header.stamp_ns), rec.log_time_ns)
    assert not truth
    shutil.copyfile(ground_truth_path(rich_drive), ground_truth_path(path))
    return path


#: A learned-engine grid that holds every labelled or referenced object of the KITTI frames
#: within 40 m (small, so that training it takes seconds).
KITTI_LEARNED_GRID = {"x_range_m": [0.0, 25.6], "y_range_m": [-12.8, 12.8], "max_pillars": 3000}


def kitti_training_config(kitti_dir: Path, yolox_path: Path, steps: int) -> dict[str, Any]:
    """A training config over the KITTI frames that carry labels (000000) or the trained
    detector's reference boxes (000003-000005), painted by YOLOX-nano."""
    return {
        "seed": 0,
        "data": {
            "train": [
                {"kind": "kitti", "root": str(kitti_dir), "frames": ["000000"],
                 "labels": "label_2"},
                {"kind": "kitti", "root": str(kitti_dir), "frames": ["000003", "000004", "000005"],
                 "labels": "pointpillars"},
            ],
        },
        "camera": {"model": str(yolox_path), "score_threshold": 0.25},
        "model": KITTI_LEARNED_GRID,
        "train": {"steps": steps, "batch": 2, "lr": 0.006, "checkpoint_every": 100,
                  "eval_every": 0, "threads": 2},
        "augment": {"rotate_deg": 5.0, "scale": [0.98, 1.02], "flip_y": 0.0},
        "dropout": {"camera": 0.0, "camera_blind": 0.0, "beams": 0.0},
    }  # fmt: skip


@pytest.fixture(scope="session")
def kitti_learned(
    tmp_path_factory: pytest.TempPathFactory, kitti_dir: Path, yolox_path: Path
) -> Any:
    """A learned fusion engine trained (once per session, ~20 s alone) to overfit the labelled KITTI
    frames, validated on them: its `replay.training.train_fusion.TrainResult`. Tests must not
    modify its files."""
    import dataclasses

    from replay.training.fusion_config import parse_train_config
    from replay.training.train_fusion import train

    _require(kitti_dir / "label_2" / "000000.txt")

    def build(root: Path) -> Any:
        raw = kitti_training_config(kitti_dir, yolox_path, 250)
        config = parse_train_config(raw, "test", root)
        config = dataclasses.replace(config, val_sources=config.train_sources)
        return train(config, root / "run")

    return built_once(tmp_path_factory, "kitti-learned", build)
