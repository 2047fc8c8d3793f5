"""A ROS 2 bag written with rosbags from the KITTI object frames (both storage formats),
imported and replayed, gives the KITTI folder replay's detections; its rig is the KITTI rig."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from calibration import Rig, load_kitti_object_calib, save_rig_yaml
from calibration.check import read_kitti_bin
from calibration.kitti import read_kitti_calib_fields
from perception.config import CameraModelConfig, NodeConfig
from perception.msgs.jsonl import read_jsonl
from perception.msgs.types import CameraFrame, DetectionList, GnssFix, LidarSweep, RigMessage
from perception.pipeline import Pipeline
from replay.datasets.kitti_object import KittiObjectFolder, read_image
from replay.drive import DriveReader
from replay.offline import replay_to_file
from replay.rosbag2 import import_rosbag2
from replay.rosbag2.errors import Rosbag2Error
from tests.conftest import png_size
from tests.replay.rosbag2.bags import (
    CAMERA_NS,
    CHATTER_TOPIC,
    INFO_TOPIC,
    LAT,
    LIDAR_TOPIC,
    BagWriter,
    camera_info,
    compressed,
    point_cloud,
    write_kitti_bag,
)

COMPRESSED_TOPIC = f"{CAMERA_NS}/image_raw/compressed"
# The folder replay stamps its unrelated frames this far apart (replay.offline.open_source).
PERIOD_NS = round((NodeConfig().tracking.max_gap_s + 1.0) * 1e9)


@pytest.fixture(scope="module")
def pipeline(yolox_path: Path) -> Pipeline:
    return Pipeline.from_config(CameraModelConfig(path=str(yolox_path), kind="yolox"))


@pytest.fixture(scope="module")
def folder_lists(
    kitti_dir: Path, pipeline: Pipeline, tmp_path_factory: pytest.TempPathFactory
) -> list[DetectionList]:
    out = tmp_path_factory.mktemp("folder") / "folder.jsonl"
    replay_to_file(kitti_dir, out, NodeConfig(), pipeline)
    return list(read_jsonl(out))


@pytest.fixture(scope="module", params=["mcap", "sqlite3"])
def imported(
    request: pytest.FixtureRequest, kitti_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    tmp = tmp_path_factory.mktemp(f"bag-{request.param}")
    bag = write_kitti_bag(kitti_dir, tmp / "kitti", storage=request.param, period_ns=PERIOD_NS)
    drive = tmp / "drive.mcap"
    stats = import_rosbag2(bag.path, drive)
    assert stats.messages == {"rig": 4, "camera/front": 8, "lidar/top": 8, "gnss": 8}
    assert stats.first_stamp_ns == 0 and stats.last_stamp_ns == 7 * PERIOD_NS
    assert stats.warnings == (
        f"skipped {CHATTER_TOPIC} (std_msgs/msg/String): no conversion for this type",
    )
    return drive


def assert_same_lists(expected: list[DetectionList], got: list[DetectionList]) -> None:
    assert len(got) == len(expected)
    for a, b in zip(expected, got, strict=True):
        assert b.header.stamp_ns == a.header.stamp_ns
        assert b.degraded == a.degraded
        assert [d.label for d in b.detections] == [d.label for d in a.detections]
        for d, e in zip(a.detections, b.detections, strict=True):
            np.testing.assert_allclose(e.center, d.center, atol=1e-4)
            np.testing.assert_allclose(e.size, d.size, atol=1e-4)
            assert e.yaw == pytest.approx(d.yaw, abs=1e-4)
            assert e.score == pytest.approx(d.score, abs=1e-5)


def test_imported_bag_replays_to_the_kitti_folder_detections(
    imported: Path, folder_lists: list[DetectionList], pipeline: Pipeline, tmp_path: Path
) -> None:
    out = tmp_path / "drive.jsonl"
    replay_to_file(imported, out, NodeConfig(), pipeline)
    got = list(read_jsonl(out))
    assert sum(len(dl.detections) for dl in got) > 50
    assert_same_lists(folder_lists, got)


def test_imported_rigs_are_the_kitti_rigs(imported: Path, kitti_dir: Path) -> None:
    folder = KittiObjectFolder(kitti_dir)
    records = list(DriveReader(imported).messages())
    rigs = [(r.message.header.stamp_ns, r.message.rig) for r in records
            if isinstance(r.message, RigMessage)]  # fmt: skip
    sweeps = [r.message for r in records if isinstance(r.message, LidarSweep)]
    assert len(sweeps) == len(folder)
    for i, (sweep, frame) in enumerate(zip(sweeps, folder.frames, strict=True)):
        doc = [d for stamp, d in rigs if stamp <= sweep.header.stamp_ns][-1]
        rig = Rig.from_dict(doc)
        width, height = png_size(frame.image_path)
        kitti = load_kitti_object_calib(frame.calib_path, width, height)
        cam, ref = rig.cameras["front"], kitti.cameras["front"]
        np.testing.assert_allclose(cam.k, ref.k, rtol=0, atol=1e-9)
        assert (cam.width, cam.height, cam.distortion) == (ref.width, ref.height, ())
        np.testing.assert_allclose(
            rig.transform("camera/front", "lidar").matrix,
            kitti.transform("camera/front", "lidar").matrix,
            atol=1e-6,
            err_msg=f"frame {i}",
        )
        np.testing.assert_allclose(rig.transform("vehicle", "lidar").matrix, np.eye(4))
        assert rig.gnss_lever_arm_m is not None and kitti.gnss_lever_arm_m is not None
        np.testing.assert_allclose(rig.gnss_lever_arm_m, kitti.gnss_lever_arm_m, atol=1e-6)
    assert DriveReader(imported).rig is not None


def test_imported_sensor_data_is_the_frames(imported: Path, kitti_dir: Path) -> None:
    folder = KittiObjectFolder(kitti_dir)
    records = list(DriveReader(imported).messages())
    frames = [r.message for r in records if isinstance(r.message, CameraFrame)]
    sweeps = [r.message for r in records if isinstance(r.message, LidarSweep)]
    fixes = [r.message for r in records if isinstance(r.message, GnssFix)]
    for i, frame in enumerate(folder.frames):
        assert frames[i].image is not None
        np.testing.assert_array_equal(frames[i].image, read_image(frame.image_path))
        np.testing.assert_array_equal(sweeps[i].points, read_kitti_bin(frame.lidar_path))
        assert sweeps[i].point_time_offsets_ns is None
        assert sweeps[i].header.frame_id == "lidar"
        assert frames[i].header.stamp_ns == sweeps[i].header.stamp_ns == i * PERIOD_NS
    # Receive times become log times.
    logs = {type(r.message).__name__: r.log_time_ns for r in records if r.log_time_ns < PERIOD_NS}
    assert logs["CameraFrame"] == 3_000_000 and logs["LidarSweep"] == 4_000_000
    assert fixes[0].latitude_deg == LAT
    assert fixes[0].velocity_enu_mps == (1.0, 2.0, 0.0)
    assert fixes[0].position_covariance_m2 == (0.25, 0, 0, 0, 0.25, 0, 0, 0, 1.0)


def test_compressed_images_and_a_storage_file_given_directly(
    kitti_dir: Path, tmp_path: Path
) -> None:
    bag = write_kitti_bag(kitti_dir, tmp_path / "bag", compressed_images=True, frames=2)
    drive = tmp_path / "drive.mcap"
    # The storage file itself, not its folder.
    stats = import_rosbag2(tmp_path / "bag" / "bag.mcap", drive)
    assert stats.messages["camera/front"] == 2
    frames = [r.message for r in DriveReader(drive).messages()
              if isinstance(r.message, CameraFrame)]  # fmt: skip
    for frame, kitti in zip(frames, KittiObjectFolder(kitti_dir).frames, strict=False):
        assert frame.encoding == "png"
        assert frame.data == kitti.image_path.read_bytes()
    assert bag.stamps == [0, 100_000_000]


def test_a_rig_file_replaces_tf_static_and_camera_info(kitti_dir: Path, tmp_path: Path) -> None:
    frame = KittiObjectFolder(kitti_dir).frames[0]
    kitti = load_kitti_object_calib(frame.calib_path, *png_size(frame.image_path))
    save_rig_yaml(kitti, tmp_path / "rig.yaml")
    bag = write_kitti_bag(kitti_dir, tmp_path / "bag", frames=1, skip=("/tf_static",))
    topics = tmp_path / "topics.yaml"
    topics.write_text("rig: rig.yaml\ntopics:\n  /kitti/camera_color_left/camera_info: skip\n")
    drive = tmp_path / "drive.mcap"
    import_rosbag2(bag.path, drive, topics=topics)
    rig = DriveReader(drive).rig
    assert rig is not None and rig.to_dict() == kitti.to_dict()


def test_a_binary_rig_file_is_named(kitti_dir: Path, tmp_path: Path) -> None:
    rig = tmp_path / "rigbin.yaml"
    rig.write_bytes(b"\xff\xfe\x00rig")
    bag = write_kitti_bag(kitti_dir, tmp_path / "bag", frames=1)
    topics = tmp_path / "topics.yaml"
    topics.write_text("rig: rigbin.yaml\n")
    with pytest.raises(Rosbag2Error) as e:
        import_rosbag2(bag.path, tmp_path / "drive.mcap", topics=topics)
    assert str(e.value) == f"--topics rig: {rig.resolve()}: not UTF-8 text (byte 0xff at offset 0)"
    assert not (tmp_path / "drive.mcap").exists()


def test_a_pipe_as_a_bag_or_in_its_folder_is_refused_not_waited_on(tmp_path: Path) -> None:
    """rosbags opened a pipe named x.mcap for reading, which waited for a writer for ever."""
    pipe = tmp_path / "x.mcap"
    os.mkfifo(pipe)
    refused = r"x\.mcap: not a regular file \(a device, pipe or socket\)$"
    with pytest.raises(Rosbag2Error, match=refused):
        import_rosbag2(pipe, tmp_path / "out.mcap")
    folder = tmp_path / "bag"
    folder.mkdir()
    (folder / "metadata.yaml").write_text("rosbag2_bagfile_information: {}\n")
    os.mkfifo(folder / "bag_0.mcap")
    with pytest.raises(Rosbag2Error, match=r"bag_0\.mcap: not a regular file"):
        import_rosbag2(folder, tmp_path / "out.mcap")


def _refused(bag: Path, tmp_path: Path) -> str:
    out = tmp_path / "drive.mcap"
    with pytest.raises(Rosbag2Error) as e:
        import_rosbag2(bag, out)
    assert not out.exists()
    return str(e.value)


def test_a_lidar_topic_without_messages_is_named(kitti_dir: Path, tmp_path: Path) -> None:
    """It was "camera front: its frame 'camera_rect' is not connected to the vehicle frame
    'lidar' in tf_static": the rig was built without the lidar's frame."""

    def lidar_topic(w: BagWriter, _i: int, _stamp: int) -> None:
        w.connection(LIDAR_TOPIC, "sensor_msgs/msg/PointCloud2")

    bag = write_kitti_bag(kitti_dir, tmp_path / "bag", frames=1, skip=(LIDAR_TOPIC,),
                          extra=lidar_topic)  # fmt: skip
    assert (
        _refused(bag.path, tmp_path) == f"{bag.path}: the lidar topic {LIDAR_TOPIC} has no messages"
    )


def test_a_standard_type_defined_otherwise_by_the_bag_is_named(tmp_path: Path) -> None:
    """A bag's own PointCloud2 without a header: "unexpected AttributeError" (exit 1)."""
    with BagWriter(tmp_path / "bag") as w:
        w.connection(LIDAR_TOPIC, "sensor_msgs/msg/PointCloud2", msgdef="int32 a",
                     rihs01="RIHS01_" + "0" * 64)  # fmt: skip
        w.write_raw(LIDAR_TOPIC, 1, b"\x00\x01\x00\x00\x05\x00\x00\x00")
    assert _refused(tmp_path / "bag", tmp_path) == (
        f"{tmp_path / 'bag'}: {LIDAR_TOPIC} at receive time 1: sensor_msgs/msg/PointCloud2 as "
        "the bag defines it has no field 'header' (not the ROS 2 message of that name)"
    )


def test_a_standard_type_with_a_field_of_another_type_is_named(tmp_path: Path) -> None:
    """A bag's own PointCloud2 whose point_step is a string: "unexpected ValueError" (exit
    1), as was a CameraInfo whose K has 4 elements."""
    msgtype = "sensor_msgs/msg/PointCloud2"
    msgdef = (
        "std_msgs/Header header\nuint32 height\nuint32 width\nsensor_msgs/PointField[] fields\n"
        "bool is_bigendian\nstring point_step\nuint32 row_step\nuint8[] data\nbool is_dense\n"
    )
    store = get_typestore(Stores.LATEST)
    store.fielddefs.pop(msgtype)
    store.register(get_types_from_msg(msgdef, msgtype))
    cloud = point_cloud(0, "velo_link", np.array([[10.0, 0.0, 0.0, 0.5]], np.float32))
    fields = [store.types["sensor_msgs/msg/PointField"](name=f.name, offset=f.offset,
              datatype=f.datatype, count=1) for f in cloud.fields]  # fmt: skip
    msg = store.types[msgtype](
        header=store.types["std_msgs/msg/Header"](
            stamp=store.types["builtin_interfaces/msg/Time"](sec=0, nanosec=0),
            frame_id="velo_link",
        ),
        height=1, width=1, fields=fields, is_bigendian=False, point_step="sixteen",
        row_step=16, data=cloud.data, is_dense=True,
    )  # fmt: skip
    with BagWriter(tmp_path / "bad") as w:
        w.connection(LIDAR_TOPIC, msgtype, msgdef=msgdef, rihs01="RIHS01_" + "0" * 64)
        w.write_raw(LIDAR_TOPIC, 1, bytes(store.serialize_cdr(msg, msgtype)))
    assert _refused(tmp_path / "bad", tmp_path) == (
        f"{tmp_path / 'bad'}: {LIDAR_TOPIC} at receive time 1: {msgtype} as the bag defines it "
        "is not the ROS 2 message of that name (invalid literal for int() with base 10: "
        "'sixteen')"
    )


def test_a_sweep_in_another_frame_is_refused(tmp_path: Path) -> None:
    """The rig places the lidar by its first sweep's frame: later sweeps in another frame
    were put there without a word."""
    points = np.array([[10.0, 0.0, 0.0, 0.5]], np.float32)
    with BagWriter(tmp_path / "bag") as w:
        w.write(LIDAR_TOPIC, 1, point_cloud(0, "velo_link", points))
        w.write(LIDAR_TOPIC, 2, point_cloud(100_000_000, "/velo_link", points))  # the same
        w.write(LIDAR_TOPIC, 3, point_cloud(200_000_000, "os_sensor", points))
    assert _refused(tmp_path / "bag", tmp_path) == (
        f"{tmp_path / 'bag'}: {LIDAR_TOPIC} at receive time 3: the sweep is in frame "
        "'os_sensor', the lidar topic's first in 'velo_link' (the rig holds one lidar frame)"
    )


def _camera_info_of(
    kitti_dir: Path, index: int, receive_ns: int
) -> Callable[[BagWriter, int, int], None]:
    """`extra` for write_kitti_bag: frame `index`'s CameraInfo (its P2 and image size) received
    `receive_ns` after frame `index`'s stamp, and no other CameraInfo."""
    frame = KittiObjectFolder(kitti_dir).frames[index]
    p2 = read_kitti_calib_fields(frame.calib_path)["P2"].reshape(3, 4)
    size = png_size(frame.image_path)

    def write(w: BagWriter, i: int, stamp: int) -> None:
        if i == index:
            w.write(INFO_TOPIC, stamp + receive_ns, camera_info(stamp, "camera_rect", p2, *size))

    return write


@pytest.mark.parametrize("compressed", [False, True], ids=["image", "compressed"])
def test_an_image_of_a_size_its_camera_is_not_calibrated_for_is_refused(
    kitti_dir: Path, tmp_path: Path, compressed: bool
) -> None:
    """KITTI frame 000000 is 1224x370, the next two 1242x375; with frame 000000's CameraInfo
    alone, the camera's images change size mid-bag with no calibration of the new size. They
    were imported, for the node to leave every one out as unfit."""
    bag = write_kitti_bag(
        kitti_dir, tmp_path / "bag", frames=3, skip=(INFO_TOPIC,), compressed_images=compressed,
        extra=_camera_info_of(kitti_dir, 0, 2_000_000),
    )  # fmt: skip
    topic = f"{CAMERA_NS}/image_raw" + ("/compressed" if compressed else "")
    assert _refused(bag.path, tmp_path) == (
        f"{bag.path}: {topic} at receive time 103000000: image 2 of the topic (stamp 100000000 "
        "ns) is 1242x375, but camera front is calibrated for 1224x370 only (its CameraInfo on "
        f"{INFO_TOPIC}): intrinsics hold for one image size, and a camera reconfigured "
        "mid-drive needs a calibration of its new size"
    )


def test_an_image_received_before_the_camera_info_of_its_size_is_counted(
    kitti_dir: Path, tmp_path: Path
) -> None:
    """A camera driver may publish an image before its CameraInfo: the first image of a new
    size then comes while the rig in force is of the old one. It is imported (its calibration
    is in the bag) and counted: the node leaves it out."""
    infos = [_camera_info_of(kitti_dir, 0, 2_000_000), _camera_info_of(kitti_dir, 1, 3_500_000)]

    def extra(w: BagWriter, i: int, stamp: int) -> None:
        for write in infos:
            write(w, i, stamp)

    bag = write_kitti_bag(kitti_dir, tmp_path / "bag", frames=3, skip=(INFO_TOPIC,), extra=extra)
    stats = import_rosbag2(bag.path, tmp_path / "drive.mcap")
    assert stats.messages["camera/front"] == 3
    assert (
        f"{CAMERA_NS}/image_raw: 1 image(s) received before the CameraInfo of their size; the "
        "node leaves them out as unfit (the rig in force then is of another size)"
    ) in stats.warnings


def test_an_image_of_another_size_than_the_rig_file_camera_is_refused(
    kitti_dir: Path, tmp_path: Path
) -> None:
    frame = KittiObjectFolder(kitti_dir).frames[0]  # 1224x370; the next frame is 1242x375
    save_rig_yaml(load_kitti_object_calib(frame.calib_path, *png_size(frame.image_path)),
                  tmp_path / "rig.yaml")  # fmt: skip
    bag = write_kitti_bag(kitti_dir, tmp_path / "bag", frames=2, skip=("/tf_static",))
    topics = tmp_path / "topics.yaml"
    topics.write_text("rig: rig.yaml\ntopics:\n  /kitti/camera_color_left/camera_info: skip\n")
    out = tmp_path / "drive.mcap"
    with pytest.raises(Rosbag2Error) as e:
        import_rosbag2(bag.path, out, topics=topics)
    assert not out.exists()
    assert str(e.value) == (
        f"{bag.path}: {CAMERA_NS}/image_raw at receive time 103000000: image 2 of the topic "
        "(stamp 100000000 ns) is 1242x375, but camera front is calibrated for 1224x370 only "
        f"(the --topics rig file {(tmp_path / 'rig.yaml').resolve()}): intrinsics hold for one "
        "image size, and a camera reconfigured mid-drive needs a calibration of its new size"
    )


def _compressed_images(
    kitti_dir: Path, damage: Callable[[int, bytes], bytes]
) -> Callable[[BagWriter, int, int], None]:
    """`extra` for write_kitti_bag: frame i's PNG as a CompressedImage, as `damage(i, png)`
    leaves it."""
    frames = KittiObjectFolder(kitti_dir).frames

    def write(w: BagWriter, i: int, stamp: int) -> None:
        data = damage(i, frames[i].image_path.read_bytes())
        w.write(COMPRESSED_TOPIC, stamp + 3_000_000, compressed(stamp, "camera_rect", data))

    return write


def _jpeg_cut_short(png: bytes) -> bytes:
    bgr = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert bgr is not None
    ok, jpeg = cv2.imencode(".jpg", bgr)
    assert ok
    return jpeg.tobytes()[: len(jpeg) // 2]


def test_a_damaged_compressed_image_is_skipped_and_counted(kitti_dir: Path, tmp_path: Path) -> None:
    """A camera driver's damaged frame (a JPEG cut short, its header whole) was imported
    without a word, and left out by the node when replayed."""
    extra = _compressed_images(kitti_dir, lambda i, png: _jpeg_cut_short(png) if i == 1 else png)
    bag = write_kitti_bag(kitti_dir, tmp_path / "bag", frames=3, skip=(f"{CAMERA_NS}/image_raw",),
                          extra=extra)  # fmt: skip
    drive = tmp_path / "drive.mcap"
    stats = import_rosbag2(bag.path, drive)
    assert stats.messages["camera/front"] == 2
    assert (
        f"{COMPRESSED_TOPIC}: 1 of 3 image(s) damaged, skipped (the first: message 2 of the "
        "topic, received at 103000000 ns: JPEG image is cut short (no end-of-image marker after "
        "its image data))"
    ) in stats.warnings
    frames = [r.message for r in DriveReader(drive).messages()
              if isinstance(r.message, CameraFrame)]  # fmt: skip
    assert [(f.header.seq, f.header.stamp_ns) for f in frames] == [(0, 0), (1, 200_000_000)]


@pytest.mark.parametrize(
    ("damage", "fault"),
    [
        (lambda png: b"\xff\xd8\xff" + b"\0" * 100, "JPEG image gives no size in its header"),
        (lambda png: png[: len(png) // 2], "PNG image is cut short (no IEND chunk)"),
    ],
    ids=["jpeg-garbage", "png-half"],
)
def test_a_camera_whose_every_image_is_damaged_is_refused(
    kitti_dir: Path, tmp_path: Path, damage: Callable[[bytes], bytes], fault: str
) -> None:
    """Every image of the camera damaged: the drive was written with them, "camera/front 4",
    and the node left each out when replayed."""
    extra = _compressed_images(kitti_dir, lambda _i, png: damage(png))
    bag = write_kitti_bag(kitti_dir, tmp_path / "bag", frames=2, skip=(f"{CAMERA_NS}/image_raw",),
                          extra=extra)  # fmt: skip
    assert _refused(bag.path, tmp_path) == (
        f"{bag.path}: {COMPRESSED_TOPIC}: every one of its 2 image(s) is damaged (the first: "
        f"message 1 of the topic, received at 3000000 ns: {fault})"
    )


def test_sweeps_repeating_the_stamp_before_are_skipped_and_counted(
    kitti_dir: Path, tmp_path: Path
) -> None:
    """A driver stamping each sweep twice (t, t, t + 0.2 s, t + 0.2 s): the drive held 4 sweeps
    of 2 stamps, and the replay lost 2 without a word."""
    points = read_kitti_bin(KittiObjectFolder(kitti_dir).frames[0].lidar_path)

    def twice(w: BagWriter, i: int, stamp: int) -> None:
        w.write(LIDAR_TOPIC, stamp + 4_000_000, point_cloud((i // 2) * 200_000_000,
                                                            "velo_link", points))  # fmt: skip

    bag = write_kitti_bag(kitti_dir, tmp_path / "bag", frames=4, skip=(LIDAR_TOPIC,), extra=twice)
    drive = tmp_path / "drive.mcap"
    stats = import_rosbag2(bag.path, drive)
    assert stats.messages["lidar/top"] == 2
    assert (
        f"{LIDAR_TOPIC}: 2 message(s) repeating the stamp of the one before on the topic, "
        "skipped (the first: message 2 of the topic, received at 104000000 ns, stamp 0 ns)"
    ) in stats.warnings
    sweeps = [r.message for r in DriveReader(drive).messages()
              if isinstance(r.message, LidarSweep)]  # fmt: skip
    assert [(s.header.seq, s.header.stamp_ns) for s in sweeps] == [(0, 0), (1, 200_000_000)]
