"""Values `perception config show` used to accept and `perception run` then crashed on (an
OverflowError converting to integer nanoseconds, a C long, a ZeroMQ option) or failed every
sweep with: each is refused at load, one line naming the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from perception.config import BudgetConfig, load_config
from perception.errors import ConfigError
from perception.pipeline.timing import ENGINE_STAGES, STAGES
from tests.app.one_line import fails

_IN_MS = "must be a duration from 0 to 1000000000 ms"
_HWM = "must be from 1 to 2147483647 (a ZeroMQ socket option: a C int)"
_INT64 = "must fit a 64-bit integer (-2**63 to 2**63-1)"
_KNOWN_STAGES = ", ".join(sorted({*STAGES, "tracking", *(f"{s}_gpu" for s in ENGINE_STAGES)}))


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "node.yaml"
    path.write_text(text)
    return path


def _refused(tmp_path: Path, text: str) -> str:
    """The message loading `text` gives, after the file's path."""
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: "), message
    return message.removeprefix(f"{path}: ")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # Floats are finite; durations (ms, s) fit in int64 nanoseconds, and are not negative.
        ("sync: {timeout_ms: .inf}", "sync.timeout_ms: must be a finite number, got inf"),
        (
            "sync: {camera_windows_ms: {camera/front: .inf}}",
            "sync.camera_windows_ms.camera/front: must be a finite number, got inf",
        ),
        (
            "tracking: {max_coast_s: 1.0e+300}",
            "tracking.max_coast_s: must be a duration from 0 to 1000000 s, got 1e+300",
        ),
        (
            "watchdog: {stall_timeout_s: 1.0e+7}",
            "watchdog.stall_timeout_s: must be a duration from 0 to 1000000 s, got 10000000.0",
        ),
        (
            "calibration_monitor: {budget_ms_per_sweep: 1.0e+12}",
            f"calibration_monitor.budget_ms_per_sweep: {_IN_MS}, got 1000000000000.0",
        ),
        ("budgets: {stages_ms: {fusion: -1}}", f"budgets.stages_ms.fusion: {_IN_MS}, got -1.0"),
        ("sync: {max_interval_ms: -1}", f"sync.max_interval_ms: {_IN_MS}, got -1.0"),
        (
            "sync: {camera_offsets_ms: {camera/front: -1.0e+10}}",
            "sync.camera_offsets_ms.camera/front: must be a duration from -1000000000 to "
            "1000000000 ms, got -10000000000.0",
        ),
        (
            "sync: {timeout_ms: " + "9" * 400 + "}",
            "sync.timeout_ms: must be a finite number, got an integer of 400 digits",
        ),
        # Sensor periods are integer nanoseconds too.
        (
            "inputs: {rates_hz: {gnss: 1.0e-300}}",
            "inputs.rates_hz.gnss: must be from 1e-06 to 1e+09 Hz (a period from 1 ns to "
            "1000000 s), got 1e-300",
        ),
        (
            "inputs: {dead_after_periods: 1.0e+300}",
            "inputs.dead_after_periods: must be at most 1000000, got 1e+300",
        ),
        # Integers fit int64; ZeroMQ's socket options a C int.
        (
            "inputs: {high_water_mark: 99999999999999999999999999}",
            f"inputs.high_water_mark: {_INT64}, got 99999999999999999999999999",
        ),
        ("inputs: {high_water_mark: 2147483648}", f"inputs.high_water_mark: {_HWM}"),
        (
            "limits: {max_message_bytes: 99999999999999999999}",
            f"limits.max_message_bytes: {_INT64}, got 99999999999999999999",
        ),
        ("outputs: {high_water_mark: -1}", f"outputs.high_water_mark: {_HWM}"),
        ("outputs: {high_water_mark: 0}", f"outputs.high_water_mark: {_HWM}"),
        (
            "realtime: {cpu_affinity: [4294967296]}",
            "realtime.cpu_affinity: CPU numbers must be from 0 to 8191 (Linux's most CPUs)",
        ),
        # Ranges are squared (float32 in the deskew, Python floats in the ground fit).
        (
            "pipeline: {max_range_m: 1.0e+300}",
            "pipeline.max_range_m: must be a finite number > 0 and at most 1000 m, got 1e+300",
        ),
        (
            "pipeline: {ground: {ground_fit_range_m: 1.0e+300}}",
            "pipeline.ground.ground_fit_range_m: must be at most 1000 m, got 1e+300",
        ),
        (
            "pipeline: {ground: {seed: -1}}",
            "pipeline.ground.seed: must be >= 0 (numpy's generators), got -1",
        ),
        (
            "pipeline: {ground: {ransac_iterations: 1000000000000}}",
            "pipeline.ground.ransac_iterations: must be at most 100000, got 1000000000000",
        ),
        # Budgets name stages.
        (
            "budgets: {stages_ms: {bogus: 3}}",
            f"budgets.stages_ms.bogus: not a stage (known: {_KNOWN_STAGES})",
        ),
        # Topics are named, each once; the node does not listen to itself.
        ("inputs: {lidar_topic: ''}", "inputs.lidar_topic: must not be empty"),
        ("outputs: {diagnostics_topic: ''}", "outputs.diagnostics_topic: must not be empty"),
        (
            "inputs: {camera_topics: [camera/front, camera/front]}",
            "inputs.camera_topics[1]: 'camera/front' is already inputs.camera_topics[0]",
        ),
        (
            "outputs: {endpoint: 'ipc://'}",
            "endpoint 'ipc://': an ipc endpoint names a socket file, e.g. ipc://{runtime}/name",
        ),
        # Each camera takes a socket and its monitor: 5,000 ran out of file descriptors at
        # `perception run`'s start ("unexpected ZMQError: Too many open files", exit 1).
        (
            "inputs: {camera_topics: [" + ", ".join(f"camera/c{i}" for i in range(65)) + "]}",
            "inputs.camera_topics: at most 64 cameras, got 65",
        ),
        # A publisher drops the connection of a longer subscription: `run` waited for ever.
        (
            "inputs: {camera_topics: [camera/front, " + "c" * 65537 + "]}",
            "inputs.camera_topics[1]: 65537 bytes long; a topic may be at most 65536",
        ),
        (
            "inputs: {gnss_topic: lidar/top}",
            "inputs.gnss_topic: 'lidar/top' is already inputs.lidar_topic",
        ),
        (
            "outputs: {tracks_topic: detections}",
            "outputs.tracks_topic: 'detections' is already outputs.detections_topic",
        ),
        (
            "inputs: {endpoints: ['ipc://{runtime}/detections']}",
            "inputs.endpoints[0]: 'ipc://{runtime}/detections' is outputs.endpoint "
            "'ipc://{runtime}/detections' (the node would listen to itself)",
        ),
        (
            "inputs: {endpoints: ['tcp://10.0.0.2:5555', 'tcp://localhost:5556']}\n"
            "outputs: {endpoint: 'tcp://*:5556'}",
            "inputs.endpoints[1]: 'tcp://localhost:5556' is outputs.endpoint 'tcp://*:5556' "
            "(the node would listen to itself)",
        ),
        (
            "camera_model: {path: '  '}",
            "camera_model.path: must not be empty (an ONNX file or a registered model name)",
        ),
        # Numbers YAML reads as text: refused, with why.
        (
            "camera_model: {score_threshold: 1e-1}",
            "camera_model.score_threshold: expected a number, got '1e-1' (YAML reads 1e-1 as "
            "text: write 1.0e-1)",
        ),
        (
            "sync: {window_ms: 5E+1}",
            "sync.window_ms: expected a number, got '5E+1' (YAML reads 5E+1 as text: write 5.0E+1)",
        ),
        (
            "sync: {window_ms: '20'}",
            "sync.window_ms: expected a number, got '20' (quoted, it is text: write it without "
            "quotes)",
        ),
        # Quoted, but the loader refuses them unquoted (YAML 1.1 misreads them): the advice
        # is the plain number, not to lose the quotes.
        (
            "sync: {window_ms: '7_00'}",
            "sync.window_ms: expected a number, got '7_00' (YAML reads 7_00 as text: write 700.0)",
        ),
        (
            "sync: {queue_size: '0755'}",
            "sync.queue_size: expected an integer, got '0755' (YAML reads 0755 as text: write 755)",
        ),
        (
            "sync: {queue_size: 1e3}",
            "sync.queue_size: expected an integer, got '1e3' (YAML reads 1e3 as text: write 1000)",
        ),
        ("sync: {window_ms: fast}", "sync.window_ms: expected a number, got 'fast'"),
        # What is held in memory: a typo is a config error at start, not a MemoryError later.
        (
            "calibration_monitor: {monitor: {window_frames: 100000000}}",
            "calibration_monitor.monitor.window_frames: must be at most 1,000, got 100,000,000",
        ),
        (
            "calibration_monitor: {monitor: {bins: 1000}}",
            "calibration_monitor.monitor.bins: must be at most 256, got 1,000",
        ),
        (
            "camera_model: {batch: 100000}",
            "camera_model.batch: must be from 1 to 64 (cameras per engine call)",
        ),
        # `perception run` started, then: 'unexpected OverflowError' (a buffer of 5 x the
        # queue); every message dropped (a warm-up its estimate never reaches); the node ended
        # itself with exit code 70 at once (a stall shorter than a round of its loop).
        (
            "sync: {queue_size: 9223372036854775807}",
            "sync.queue_size: must be from 1 to 1000000",
        ),
        (
            "clocks: {warmup_messages: 257}",
            "clocks.warmup_messages: must be from 2 to 256 (the messages a clock's estimate holds)",
        ),
        (
            "clocks: {jump_confirm: 257}",
            "clocks.jump_confirm: must be from 1 to 256 (the messages a clock's estimate holds)",
        ),
        (
            "watchdog: {stall_timeout_s: 1.0e-6}",
            "watchdog.stall_timeout_s: must be at least 1 s (a frame's processing must fit in "
            "it), got 1e-06",
        ),
    ],
)
def test_refused_at_load_naming_the_key(tmp_path: Path, text: str, message: str) -> None:
    assert _refused(tmp_path, text) == message


def test_yaml_the_parser_cannot_take_is_one_line(tmp_path: Path) -> None:
    assert _refused(tmp_path, "a: " + "[" * 10_000 + "\n") == "invalid YAML (nests too deep)"
    digits = "sync: {queue_size: " + "9" * 5000 + "}\n"
    assert _refused(tmp_path, digits) == "invalid YAML value (an integer of more than 4300 digits)"
    assert _refused(tmp_path, "rig: 2001-02-30\n") == (
        "invalid YAML value (day is out of range for month)"
    )


def test_the_bounds_themselves_load(tmp_path: Path) -> None:
    text = """
inputs:
  high_water_mark: 2147483647
  rates_hz: {gnss: 1.0e-6}
outputs: {high_water_mark: 2147483647}
sync:
  timeout_ms: 1.0e+9
  camera_offsets_ms: {camera/front: -1.0e+9}
  max_interval_ms: 0
tracking: {max_coast_s: 1.0e+6}
pipeline: {max_range_m: 1000, ground: {ground_fit_range_m: 1000, seed: 0}}
limits: {max_message_bytes: 9223372036854775807}
realtime: {cpu_affinity: [0, 8191]}
"""
    cfg = load_config(_write(tmp_path, text))
    assert cfg.inputs.high_water_mark == cfg.outputs.high_water_mark == 2**31 - 1
    assert cfg.sync.camera_offsets_ms == {"camera/front": -1e9}
    assert cfg.limits.max_message_bytes == 2**63 - 1


def test_stage_budgets_given_replace_only_their_own(tmp_path: Path) -> None:
    """A budget for one stage keeps the other stages' defaults (it dropped them all)."""
    text = "budgets: {stages_ms: {fusion: 30, fusion_gpu: 8, branch_wait: 2, tracking: 7}}\n"
    stages = load_config(_write(tmp_path, text)).budgets.stages_ms
    defaults = BudgetConfig().stages_ms
    assert stages == {
        **defaults,
        "fusion": 30.0,
        "fusion_gpu": 8.0,
        "branch_wait": 2.0,
        "tracking": 7.0,
    }
    # What `config show` prints loads as the same budgets.
    text = f"budgets: {{stages_ms: {stages}}}\n".replace("'", "")
    assert load_config(_write(tmp_path, text)).budgets.stages_ms == stages


def test_the_cli_exits_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, "sync: {timeout_ms: .inf}\n")
    err = fails(capsys, "config", "show", "--config", str(path))
    message = f"{path}: sync.timeout_ms: must be a finite number, got inf"
    assert err == f"perception config show: error: {message}"
