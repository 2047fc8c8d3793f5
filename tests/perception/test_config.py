from __future__ import annotations

from pathlib import Path

import pytest

from perception.config import NodeConfig, load_config, parse_config
from perception.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def test_defaults_and_overrides() -> None:
    cfg = parse_config({"sync": {"window_ms": 20}, "inputs": {"camera_topics": ["camera/a"]}})
    assert cfg.sync.window_ms == 20.0
    assert cfg.inputs.camera_topics == ("camera/a",)
    assert cfg.outputs == NodeConfig().outputs


def test_engines_section_is_the_engines_settings() -> None:
    from engines.settings import EngineSettings

    # The section as it was (backend, device) still loads, everything else defaulted.
    old = parse_config({"engines": {"backend": "torch", "device": "auto"}}).engines
    assert old == EngineSettings(backend="torch", device="auto")
    # Omitted, the device is the backend's own: the CPU, but CUDA for TensorRT.
    assert parse_config({}).engines.effective_device == "cpu"
    assert parse_config({"engines": {"backend": "tensorrt"}}).engines.effective_device == "cuda"
    doc = {
        "backend": "tensorrt",
        "device": "cuda",
        "precision": "fp16",
        "cache_dir": "~/engines",
        "fallback": "onnxruntime",
        "threads": 2,
    }
    cfg = parse_config({"engines": doc}).engines
    assert cfg == EngineSettings(**doc)  # type: ignore[arg-type]
    assert cfg.engine_cache_dir == Path("~/engines").expanduser()
    assert parse_config({"engines": {"fallback": None}}).engines.fallback is None


def test_liveness_and_clock_keys() -> None:
    doc = {
        "inputs": {"rates_hz": {"gnss": 1, "camera/front": 12.5}, "dead_after_periods": 4},
        "clocks": {"max_delay_ms": 500, "jump_confirm": 5},
        "sync": {"queue_bytes": 1024},
    }
    cfg = parse_config(doc)
    assert cfg.inputs.rates_hz == {"gnss": 1.0, "camera/front": 12.5}
    assert cfg.inputs.dead_after_periods == 4.0 and cfg.inputs.default_rate_hz == 10.0
    assert cfg.clocks.max_delay_ms == 500.0 and cfg.clocks.jump_confirm == 5
    assert cfg.sync.queue_bytes == 1024


def test_per_camera_sync_keys_name_the_cameras() -> None:
    # Keys of cameras not subscribed were accepted and never used (the camera matched at
    # offset 0): now refused (see the table above); those of the configured cameras are taken.
    doc = {
        "inputs": {"camera_topics": ["camera/front", "camera/rear"]},
        "sync": {
            "camera_offsets_ms": {"camera/rear": 62},
            "camera_windows_ms": {"camera/rear": 20},
        },
    }
    cfg = parse_config(doc)
    assert cfg.sync.camera_offsets_ms == {"camera/rear": 62.0}
    assert cfg.sync.camera_windows_ms == {"camera/rear": 20.0}


def test_max_gap_above_the_lidar_period_is_taken() -> None:
    # tracking.max_gap_s 0.001 started the tracker over at every 10 Hz sweep: no track was
    # ever confirmed, exit 0, nothing said (now refused, see the table above). Above the
    # lidar's period, at its own rate, it is taken.
    assert parse_config({"tracking": {"max_gap_s": 0.11}}).tracking.max_gap_s == 0.11
    doc = {"inputs": {"rates_hz": {"lidar/top": 20}}, "tracking": {"max_gap_s": 0.06}}
    assert parse_config(doc).tracking.max_gap_s == 0.06


def test_shipped_config_loads() -> None:
    cfg = load_config(REPO / "configs" / "kitti.yaml")
    assert cfg.inputs.lidar_topic == "lidar/top"


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"sync": {"windw_ms": 1}}, r"x\.yaml: sync\.windw_ms: unknown key"),
        ({"sync": {"window_ms": "a"}}, r"x\.yaml: sync\.window_ms: expected a number"),
        ({"sync": {"window_ms": -1}}, r"x\.yaml: sync\.window_ms: must be > 0"),
        ({"inputs": {"endpoints": "tcp://x"}}, r"inputs\.endpoints: expected a list"),
        (
            {"outputs": {"endpoint": "tcp://*:99999"}},
            r"endpoint 'tcp://\*:99999': port '99999' is not a TCP port",
        ),
        ({"inputs": {"endpoints": ["udp://x:1"]}}, r"endpoint 'udp://x:1': scheme"),
        (
            {"inputs": {"endpoints": ["ipc://{runtme}/sensors"]}},
            r"endpoint 'ipc://\{runtme\}/sensors': \{runtme\} is no placeholder \(the only one "
            r"is \{runtime\}\)",
        ),
        (
            {"inputs": {"endpoints": ["tcp://127.0.0.1:0"]}},
            r"endpoint 'tcp://127\.0\.0\.1:0': port 0 picks a free port where an endpoint is "
            r"bound; connecting needs the port the other side bound",
        ),
        ({"camera_model": {"score_threshold": 2}}, r"camera_model\.score_threshold: must be"),
        ({"limits": {"max_points": 1.5}}, r"x\.yaml: limits\.max_points: expected an integer"),
        ({"limits": {"max_frames": 0}}, r"limits\.max_frames: must be a positive integer, got 0"),
        ({"limits": {"max_sweep_duration_ns": 10**11}}, r"limits\.max_sweep_duration_ns: must be"),
        ({"limits": {"max_pointz": 1}}, r"limits\.max_pointz: unknown key"),
        ({"max_points": 1000}, r"x\.yaml: max_points: this key is now limits\.max_points"),
        (
            {"inputs": {"max_message_bytes": 1}},
            r"inputs\.max_message_bytes: this key is now limits",
        ),
        ({"sync": {"policy": "exact"}}, r"sync\.policy: must be 'collector' or 'approximate_time'"),
        ({"sync": {"camera_windows_ms": {"camera/front": 0}}}, r"sync\.camera_windows_ms"),
        (
            {"sync": {"camera_offsets_ms": {"camera/rear": 60}}},
            r"x\.yaml: sync\.camera_offsets_ms\.camera/rear: not a camera topic of "
            r"inputs\.camera_topics \(known: camera/front\)",
        ),
        (
            {"sync": {"camera_windows_ms": {"lidar/top": 20}}},
            r"sync\.camera_windows_ms\.lidar/top: not a camera topic of inputs\.camera_topics",
        ),
        ({"sync": {"gnss_window_ms": 0}}, r"x\.yaml: sync\.gnss_window_ms: must be > 0 \(0: a fix"),
        (
            {"tracking": {"max_gap_s": 0.1}},
            r"x\.yaml: tracking\.max_gap_s: 0\.1 s is not more than the lidar's period \(0\.1 s at "
            r"10 Hz, inputs\.rates_hz or default_rate_hz\): the tracker would start over at every",
        ),
        (
            {"inputs": {"rates_hz": {"lidar/top": 5}}, "tracking": {"max_gap_s": 0.15}},
            r"tracking\.max_gap_s: 0\.15 s is not more than the lidar's period \(0\.2 s at 5 Hz",
        ),
        (
            {"engines": {"backend": "openvino"}},
            r"x\.yaml: engines\.backend: must be one of onnxruntime, tensorrt, torch, got 'openv",
        ),
        ({"engines": {"device": "tpu"}}, r"engines\.device: must be one of auto, cpu, cuda"),
        (
            {"engines": {"backend": "tensorrt", "device": "cpu"}},
            r"engines\.device: TensorRT runs on CUDA only",
        ),
        ({"engines": {"precision": "fp8"}}, r"engines\.precision: must be one of fp32, fp16"),
        ({"engines": {"fallback": "cpu"}}, r"engines\.fallback: must be null or one of onnx"),
        ({"engines": {"threads": -1}}, r"engines\.threads: must be from 0 to 256"),
        ({"engines": {"threads": 100_000}}, r"engines\.threads: must be from 0 to 256"),
        ({"camera_model": {"num_threads": 257}}, r"camera_model\.num_threads: must be from 0"),
        ({"engines": {"threads": 1.5}}, r"engines\.threads: expected an integer"),
        ({"engines": {"cache_dir": ""}}, r"engines\.cache_dir: must not be empty"),
        ({"engines": {"backnd": "torch"}}, r"engines\.backnd: unknown key"),
        ({"camera_model": {"batch": 0}}, r"camera_model\.batch: must be from 1 to 64"),
        ({"budgets": {"apply_clock_offset": "yes"}}, r"apply_clock_offset: expected true or"),
        ({"realtime": {"nice": 30}}, r"realtime\.nice: must be in \[-20, 19\]"),
        ({"realtime": {"fifo_priority": 0}}, r"realtime\.fifo_priority: must be in \[1, 99\]"),
        ({"realtime": {"cpu_affinity": [-1]}}, r"realtime\.cpu_affinity: CPU numbers"),
        ({"pipeline": {"max_range_m": 0}}, r"x\.yaml: pipeline\.max_range_m: must be a finite"),
        (
            {"pipeline": {"ground": {"ransac_iterations": 0}}},
            r"x\.yaml: pipeline\.ground\.ransac_iterations: must be >= 1, got 0",
        ),
        (
            {"pipeline": {"lidar_objects": {"max_score": 2.0}}},
            r"pipeline\.lidar_objects\.max_score: must be in \(0, 1\], got 2\.0",
        ),
        ({"pipeline": {"lidar_objects": {"min_pts": 3}}}, r"pipeline\.lidar_objects\.min_pts: unk"),
        (
            {"pipeline": {"lidar_objects": {"min_top_m": 3.0}}},
            r"x\.yaml: pipeline\.lidar_objects\.min_top_m: must be below max_height_m \(3: no "
            r"higher return is an obstacle\), got 3\.0",
        ),
        (
            {"pipeline": {"lidar_objects": {"min_height_m": 0.5, "max_base_m": 0.4}}},
            r"pipeline\.lidar_objects\.max_base_m: must be at least min_height_m \(0\.5: no "
            r"lower return is an obstacle\), got 0\.4",
        ),
        (
            {"inputs": {"rates_hz": {"camera/rear": 10}}},
            r"x\.yaml: inputs\.rates_hz\.camera/rear: not a sensor topic \(known: lidar/top, ca",
        ),
        ({"inputs": {"rates_hz": {"gnss": 0}}}, r"inputs\.rates_hz\.gnss: must be a finite rate"),
        ({"inputs": {"rates_hz": {"gnss": "fast"}}}, r"inputs\.rates_hz\.gnss: expected a number"),
        ({"inputs": {"default_rate_hz": -1}}, r"inputs\.default_rate_hz: must be > 0"),
        ({"inputs": {"dead_after_periods": 0.5}}, r"inputs\.dead_after_periods: must be >= 1"),
        ({"sync": {"queue_bytes": 0}}, r"sync\.queue_bytes: must be > 0"),
        (
            {"clocks": {"max_delay_ms": 10, "jump_threshold_ms": 50}},
            r"clocks\.max_delay_ms: must be >= clocks\.jump_threshold_ms",
        ),
        ({"clocks": {"jump_confirm": 0}}, r"clocks\.jump_confirm: must be from 1 to 256"),
        ({"clocks": {"max_offset_ms": float("nan")}}, r"clocks\.max_offset_ms: must be > 0"),
        ({"clocks": {"warmup_messages": 1}}, r"clocks\.warmup_messages: must be from 2 to 256"),
        ({"clocks": {"max_drift_ppm": 0}}, r"clocks\.max_drift_ppm: must be >= 1"),
        ({"clocks": {"max_drift_ppm": 0.5}}, r"clocks\.max_drift_ppm: expected an integer"),
        ({"clocks": {"jump_confirm_sec": 1}}, r"clocks\.jump_confirm_sec: unknown key"),
    ],
)
def test_errors_name_the_key(doc: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(doc, "x.yaml")


def test_bad_yaml_file(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("inputs: [unclosed")
    with pytest.raises(ConfigError, match=r"c\.yaml: invalid YAML") as info:
        load_config(p)
    assert "\n" not in str(info.value)  # the parser's message spans several lines
    with pytest.raises(ConfigError, match=r"missing\.yaml: cannot read config"):
        load_config(tmp_path / "missing.yaml")


def test_binary_config_file_is_named(tmp_path: Path) -> None:
    p = tmp_path / "node.yaml"
    p.write_bytes(b"inputs:\n\xd9\x01\x00")
    with pytest.raises(ConfigError) as info:
        load_config(p)
    assert str(info.value) == f"{p}: not UTF-8 text (byte 0xd9 at offset 8)"


def test_rig_path_resolves_against_the_config_folder(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("rig: rigs/car.yaml\n")
    assert load_config(p).rig == str(tmp_path / "rigs" / "car.yaml")
    assert parse_config({}).rig is None


def test_every_path_resolves_to_an_absolute_one_from_the_config_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`config show` of sub/c.yaml printed sub/m.onnx, which read back from sub/ named
    sub/sub/m.onnx; the learned model's file was read from the folder the node ran in."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    p = Path("sub") / "c.yaml"
    p.write_text(
        "rig: car.yaml\ncamera_model: {path: m.onnx}\n"
        "pipeline: {fusion: {kind: learned, model: l.onnx}}\n"
        "security: {curve: true, secret_key: k/node.key_secret}\n"
    )
    cfg = load_config(p)
    sub = tmp_path / "sub"
    assert cfg.rig == str(sub / "car.yaml")
    assert cfg.camera_model.path == str(sub / "m.onnx")
    assert cfg.pipeline.fusion.model == str(sub / "l.onnx")
    assert cfg.security.secret_key == str(sub / "k" / "node.key_secret")
    # Names, not files: left as they are.
    p.write_text("pipeline: {fusion: {kind: learned}}\n")
    assert load_config(p).pipeline.fusion.model == "learned_fusion"
    assert load_config(p).camera_model.path == "yolox_nano_coco_416"


def test_pipeline_tunables_reach_the_pipeline(yolox_path: Path) -> None:
    from app.models import build_pipeline

    doc = {
        "camera_model": {"path": str(yolox_path), "kind": "yolox"},
        "outputs": {"detections_topic": "objects"},
        "pipeline": {
            "max_range_m": 60.0,
            "ground": {"ransac_iterations": 32, "ground_prior_z_m": -1.9},
            "lidar_objects": {"min_points": 20, "max_score": 0.2},
        },
    }
    pipeline = build_pipeline(parse_config(doc))
    assert pipeline.config.max_range_m == 60.0
    assert pipeline.config.ground.ransac_iterations == 32
    assert pipeline.config.ground.ground_prior_z_m == -1.9
    assert pipeline.lidar_objects.config.min_points == 20
    assert pipeline.lidar_objects.config.max_score == 0.2
    assert pipeline.detections_stream == "objects"


def test_the_reference_documents_every_key_and_is_current() -> None:
    from perception.config_reference import config_keys, config_reference

    documented = {key.path for _, _, keys in config_keys() for key in keys}
    assert {
        "pipeline.ground.ransac_iterations",
        "engines.fallback",
        "sync.timeout_ms",
    } <= documented
    assert (REPO / "docs" / "config.md").read_text() == config_reference(), (
        "docs/config.md is stale: perception config reference > docs/config.md"
    )
