"""The `perception` command: its parser, and `main`, which runs a subcommand and turns every
error into one line on stderr and an exit code. The commands live in app/commands/ and are
imported only when they run; library code never prints, the commands do."""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from types import FrameType

from app.args import (
    HelpFormatter,
    Parser,
    correction_arg,
    distance_m,
    fraction,
    fusion_kinds,
    int_at_most,
    non_negative_int,
    non_negative_seconds,
    port,
    positive_int,
    positive_seconds,
    rate_hz,
    speed_factor,
)
from app.common import STOP_SIGNALS
from app.streams import print_anything
from app.threads import hold_blas_threads, let_openmp_threads_sleep
from calibration import CalibrationError
from engines.errors import EngineError
from perception.config import NodeConfig
from perception.errors import PerceptionError

__all__ = ["build_parser", "main"]

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class _Terminated(KeyboardInterrupt):
    """SIGTERM (systemd, `timeout`, a CI cancelling a job) or SIGHUP (a closed terminal),
    raised where the command is, like SIGINT: the files being written are removed on the way
    out (a signal ending the process at once left hidden partial files). Commands that stop
    gracefully on them (run, play, record, echo, bench: `app.common.stop_on_signals`) replace
    this handler with their own."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _terminate(signum: int, _frame: FrameType | None) -> None:
    raise _Terminated(signum)


_DEFAULTS = NodeConfig()
SENSORS = _DEFAULTS.inputs.endpoints[0]
OUTPUTS = _DEFAULTS.outputs.endpoint
MODEL_CACHE = "~/.cache/perception-node/models, under $XDG_CACHE_HOME where that is set"
ENGINE_CACHE = "~/.cache/perception-node/engines, under $XDG_CACHE_HOME where that is set"
#: `--foxglove` / `--metrics` without a port: the config's.
FROM_CONFIG = -1
#: The most processes `train` starts (Ray workers, sample preparers): each is a process.
MAX_WORKERS = 256

DESCRIPTION = """\
perception-node: camera + lidar + GNSS fusion perception for vehicles.

Run the on-vehicle node over ZeroMQ, replay recorded drives through the same pipeline offline,
record and play drives, benchmark latency, evaluate detections and check calibrations.
New here? `perception demo` runs a synthetic drive through the pipeline on the CPU, with no
download, and scores it against ground truth."""

EPILOG = """\
exit codes: 0 done; 1 failed (a source of a many-drive replay, a recording stopped by a write or
receive failure, or an unexpected error);
2 a mistake in the command line or its inputs (one line on stderr names it);
3 `calib check` over a drive or frames flagged calibration drift, 4 they hold no evidence to
judge by; 130 interrupted (SIGINT), 143 terminated (SIGTERM), 129 hung up (SIGHUP): files
being written are left as they were.
-v (before or after the command) logs more and shows tracebacks."""


def _topics_note(*, endpoint_option: bool = True) -> str:
    """Where each topic is published, for a command's description (`endpoint_option`: the
    command has --endpoint)."""
    override = ", --endpoint overrides the endpoints" if endpoint_option else ""
    return (
        f"Each topic is published where it belongs: sensor topics on the node config's inputs "
        f"endpoint ({SENSORS} by default), the node's outputs "
        f"({_DEFAULTS.outputs.detections_topic}, {_DEFAULTS.outputs.tracks_topic}, "
        f"{_DEFAULTS.outputs.diagnostics_topic}) on its outputs endpoint ({OUTPUTS}); --config "
        "takes both, the topic names and the CURVE keys of tcp endpoints (security) from a node "
        f"config{override}. {{runtime}} is the per-user runtime folder "
        "($XDG_RUNTIME_DIR/perception-node, else <tmp>/perception-node-<uid>, mode 0700)."
    )


_TOPICS_NOTE = _topics_note()


def _command(
    sub: argparse._SubParsersAction[Parser],
    name: str,
    handler: str,
    help_text: str,
    description: str,
    *,
    common: Parser,
) -> Parser:
    """A subcommand run by `module:function` of app/commands/."""
    parser: Parser = sub.add_parser(
        name,
        help=help_text,
        description=description,
        formatter_class=HelpFormatter,
        parents=[common],
    )
    # Every command holds BLAS to one thread and lets idle OpenMP threads sleep
    # (app/threads.py) but training, which has the machine to itself and whose torch may
    # multiply through OpenBLAS (aarch64 wheels).
    parser.set_defaults(handler=handler, prog=parser.prog, hold_threads=True)
    return parser


def with_option_defaults(parser: Parser) -> None:
    """Records the command's option defaults on its namespace (`option_defaults`), so that it
    can tell an option given from one left alone (app.common.not_for)."""
    parser.set_defaults(option_defaults={a.dest: a.default for a in parser._actions})


def _group(
    sub: argparse._SubParsersAction[Parser], name: str, help_text: str, description: str
) -> argparse._SubParsersAction[Parser]:
    """A command with subcommands of its own (`calib show`)."""
    parser = sub.add_parser(
        name, help=help_text, description=description, formatter_class=HelpFormatter
    )
    return parser.add_subparsers(
        dest=f"{name}_command", required=True, metavar="COMMAND", parser_class=Parser
    )


def _add_run(sub: argparse._SubParsersAction[Parser], common: Parser) -> None:
    p = _command(
        sub,
        "run",
        "app.commands.run:cmd_run",
        "the on-vehicle node: subscribe to the sensors, fuse, publish detections",
        "The on-vehicle node. Subscribes to the camera, lidar, GNSS and rig topics on the "
        "config's inputs endpoints, pairs each lidar sweep with its camera frames, runs the "
        "camera encoder, lidar encoder and fusion engine, and publishes a DetectionList per "
        "sweep on the detections topic and counters on the diagnostics topic (1 Hz), both on "
        "the outputs endpoint. SIGINT, SIGTERM or SIGHUP stop it cleanly.",
        common=common,
    )
    p.add_argument("--config", metavar="FILE", help="node YAML config (default: built in)")
    p.add_argument(
        "--model",
        metavar="ONNX",
        help="camera detector: an ONNX file or a registered model name (default: the config's "
        "camera_model, yolox_nano_coco_416 built in, fetched into the model cache)",
    )
    p.add_argument(
        "--foxglove",
        metavar="PORT",
        nargs="?",
        type=port,
        const=FROM_CONFIG,
        help="serve the live view over Foxglove WebSocket (open ws://HOST:PORT in the Foxglove "
        f"app) on PORT, without one on the config's view.port ({_DEFAULTS.view.port} built in; "
        "0: any free port); host: view.host",
    )
    p.add_argument(
        "--metrics",
        metavar="PORT",
        nargs="?",
        type=port,
        const=FROM_CONFIG,
        help="serve Prometheus metrics at http://HOST:PORT/metrics, without PORT on the config's "
        f"metrics.port ({_DEFAULTS.metrics.port} built in; 0: any free port); host: metrics.host",
    )


def _add_view(sub: argparse._SubParsersAction[Parser], common: Parser) -> None:
    p = _command(
        sub,
        "view",
        "app.commands.view:cmd_view",
        "show a running node in the Foxglove app (Foxglove WebSocket)",
        "Serve what a running node receives and publishes over Foxglove WebSocket, for the "
        "Foxglove app (open ws://HOST:PORT): the camera images, lidar points and GNSS fixes of "
        "its sensor topics, its detections and tracks as 3D boxes, the rig's frame transforms, "
        "the ego pose (from the GNSS fixes), the per-stage timings and the diagnostics. "
        "`perception run --foxglove` serves the same from inside the node. "
        f"{_topics_note(endpoint_option=False)}",
        common=common,
    )
    p.add_argument("--config", metavar="FILE", help="node YAML config: endpoints, topics, view")
    p.add_argument(
        "--host",
        help=f"address to serve on (default: the config's view.host, {_DEFAULTS.view.host})",
    )
    p.add_argument(
        "--port",
        type=port,
        help=f"port to serve on (default: the config's view.port, {_DEFAULTS.view.port}; 0: any "
        "free port)",
    )


def _add_play(sub: argparse._SubParsersAction[Parser], common: Parser) -> None:
    p = _command(
        sub,
        "play",
        "app.commands.play:cmd_play",
        "publish a drive or a KITTI object folder over ZeroMQ",
        "Publish recorded data over ZeroMQ, as the sensors (and the node) did: "
        "`play DRIVE.mcap` paced by recorded time (a gap of over a minute in it is skipped, with "
        "a warning), or `play kitti-object DIR` at a fixed rate, "
        f"stamped with the host time. A SIGINT, SIGTERM or SIGHUP cutting a pass short exits "
        f"130, 143 or 129 (with --loop, it is how play stops: 0). {_TOPICS_NOTE}",
        common=common,
    )
    p.add_argument("source", help="a drive (.mcap), or `kitti-object` followed by its folder")
    p.add_argument("dir", nargs="?", help="the KITTI object folder (image_2, calib, velodyne)")
    p.add_argument(
        "--endpoint",
        help="publish every topic on this endpoint (bound) instead of per topic",
    )
    p.add_argument("--config", metavar="FILE", help="node YAML config: endpoints and topics")
    p.add_argument(
        "--rate",
        metavar="HZ",
        type=rate_hz,
        default=10.0,
        help="KITTI: frames per second, Hz",
    )
    p.add_argument(
        "--speed",
        metavar="X",
        type=speed_factor,
        default=1.0,
        help="drive: x recorded time (2: twice as fast; 0: as fast as possible)",
    )
    p.add_argument(
        "--start",
        metavar="S",
        type=non_negative_seconds,
        default=0.0,
        help="drive: start this many seconds after its first message, s",
    )
    p.add_argument("--topics", nargs="+", metavar="TOPIC", help="drive: only these topics")
    p.add_argument(
        "--restamp",
        action="store_true",
        help="drive: move the stamps to the host clock as the messages are sent (their spacing "
        "divided by --speed, so that they keep pace with the sends)",
    )
    p.add_argument(
        "--loop",
        action="store_true",
        help="start over at the end, until SIGINT (a drive: a period of its busiest topic "
        "after the end; one with a single message per topic has no period and is refused)",
    )
    p.add_argument(
        "--wait",
        metavar="S",
        type=non_negative_seconds,
        default=1.0,
        help="seconds to let subscribers connect before publishing, s",
    )
    p.add_argument(
        "--hwm",
        metavar="N",
        type=int_at_most(2**31 - 1),
        default=10_000,
        help="send high-water mark, messages",
    )
    with_option_defaults(p)


def _add_record(sub: argparse._SubParsersAction[Parser], common: Parser) -> None:
    p = _command(
        sub,
        "record",
        "app.commands.record:cmd_record",
        "record ZeroMQ topics into an MCAP drive",
        "Record topics into an MCAP drive (Foxglove schemas) until SIGINT, SIGTERM or SIGHUP, "
        "which finishes the file (writing what is queued for at most --stop-timeout seconds). "
        "Receiving never waits for the disk: messages that do not fit the queue are dropped and "
        f"counted. {_TOPICS_NOTE} A new drive is written in place and its data reaches the file "
        "at least twice a second, so a killed recorder leaves a readable drive missing at most "
        "the last second. A full disk stops the recording with one error line and exit code 1; "
        "the drive keeps what was written before.",
        common=common,
    )
    p.add_argument(
        "topics",
        nargs="*",
        help="topics to record (default: the config's sensor topics: lidar, cameras, GNSS, rig)",
    )
    p.add_argument("--out", required=True, metavar="DRIVE", help="the MCAP drive to write")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing --out (kept until the new recording is finished or stopped "
        "by a write failure)",
    )
    p.add_argument(
        "--endpoint",
        action="append",
        help="subscribe every topic at this endpoint instead of per topic (repeatable)",
    )
    p.add_argument("--config", metavar="FILE", help="node YAML config: topics and endpoints")
    p.add_argument(
        "--queue-size",
        metavar="N",
        type=int_at_most(10_000_000),
        default=1000,
        help="messages held between the sockets and the disk",
    )
    p.add_argument(
        "--compression",
        choices=("zstd", "lz4", "none"),
        default="zstd",
        help="MCAP chunk compression",
    )
    p.add_argument(
        "--stop-timeout",
        metavar="S",
        type=positive_seconds,
        default=3.0,
        help="on SIGINT, seconds spent writing what is still queued (the rest is dropped and "
        "counted), s",
    )


def _add_echo(sub: argparse._SubParsersAction[Parser], common: Parser) -> None:
    p = _command(
        sub,
        "echo",
        "app.commands.echo:cmd_echo",
        "print what arrives on a topic",
        "Print one line per message arriving on a topic (detections with their boxes, "
        "diagnostics with the node's counters), or with --json each message's JSON document. "
        f"{_TOPICS_NOTE}",
        common=common,
    )
    p.add_argument("topic", help="the topic, e.g. detections, lidar/top, camera/front")
    p.add_argument("--endpoint", help="subscribe at this endpoint instead of the topic's own")
    p.add_argument("--config", metavar="FILE", help="node YAML config: endpoints and topics")
    p.add_argument(
        "--count",
        metavar="N",
        type=non_negative_int,
        default=0,
        help="stop after N messages (0: never)",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print each message as its JSON document (the JSON Lines format; array bytes left "
        "out) instead of a summary line",
    )


def _add_replay(sub: argparse._SubParsersAction[Parser], common: Parser) -> None:
    p = _command(
        sub,
        "replay",
        "app.commands.replay:cmd_replay",
        "run the pipeline offline on drives or KITTI folders, no sockets",
        "Run recorded sensor data through the node's pipeline in this process, deterministically "
        "and as fast as the machine allows: one DetectionList per lidar sweep, into --out "
        "(JSON Lines or MCAP), which appears or is replaced only when the run completes. "
        "`replay DRIVE.mcap --out FILE` or `replay kitti-object DIR --out FILE`; many sources "
        "with --out-dir, one Ray task each with --ray-address. Camera model without --model: "
        "the config's camera_model with --config; without, the packaged synthetic detector for "
        "a synthetic drive (from `perception demo`), else the default camera_model.",
        common=common,
    )
    p.add_argument(
        "sources",
        nargs="+",
        help="a drive (.mcap), `kitti-object DIR`, or with --out-dir many drives/KITTI folders",
    )
    out = p.add_mutually_exclusive_group()
    out.add_argument("--out", metavar="FILE", help="detections: .jsonl (one per line) or .mcap")
    out.add_argument(
        "--out-dir", metavar="DIR", help="many sources: one <name>.jsonl per source in DIR"
    )
    p.add_argument(
        "--ray-address", help="one Ray task per source: `local`, `auto` or a ray:// address"
    )
    p.add_argument("--config", metavar="FILE", help="node YAML config (sync, model, engines)")
    p.add_argument(
        "--model",
        metavar="ONNX",
        help="camera detector: an ONNX file or a registered model name (overrides the config)",
    )
    p.add_argument(
        "--realtime",
        action="store_true",
        help="drive: paced by recorded time (a gap of over a minute is skipped, with a warning)",
    )
    p.add_argument(
        "--show",
        metavar="DIR",
        help="also draw the run into DIR as `perception show` does: a picture per frame (boxes "
        "on the image and in a bird's-eye view, references or ground truth in green) and "
        "index.html with each frame's scores (one source, with --out)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    with_option_defaults(p)


#: `replay.synth.world.SCENES`, spelled out so that the CLI starts without importing the world.
DEMO_SCENES = ("simple", "rich")


def _add_demo(sub: argparse._SubParsersAction[Parser], common: Parser) -> None:
    p = _command(
        sub,
        "demo",
        "app.commands.demo:cmd_demo",
        "a synthetic drive through the pipeline: latency and quality vs ground truth",
        "The embedded default: generates a synthetic drive (lidar, camera, GNSS and ground "
        "truth), runs it through the pipeline on ONNX Runtime with the project's own detector, "
        "and prints per-stage latency and car recall/precision against the ground truth. "
        "Writes the drive, detections.jsonl and demo.png into --out-dir; a drive of the same "
        "world, seed and length already there is reused.",
        common=common,
    )
    p.add_argument(
        "--drive",
        metavar="DRIVE",
        help="a synthetic drive written by an earlier demo, with its .gt.jsonl beside it "
        "(default: generate one)",
    )
    p.add_argument(
        "--seed",
        metavar="N",
        type=non_negative_int,
        default=0,
        help="the synthetic world's random seed",
    )
    p.add_argument(
        "--scene",
        choices=DEMO_SCENES,
        default="simple",
        help="the synthetic world: simple (a straight road, road users only) or rich (curved "
        "roads, junctions, clutter, vans and trucks, crossing pedestrians, a KITTI-like "
        "HDL-64E, randomised looks)",
    )
    p.add_argument(
        "--seconds",
        metavar="S",
        type=positive_seconds,
        default=10.0,
        help="length of a generated drive, s",
    )
    p.add_argument(
        "--out-dir", metavar="DIR", default="perception-demo", help="folder for the outputs"
    )
    p.add_argument(
        "--fusion",
        metavar="KINDS",
        type=fusion_kinds,
        default=("geometric",),
        help="fusion kinds to run side by side, comma-separated: geometric, learned, ensemble, "
        "or all",
    )
    p.add_argument(
        "--without",
        metavar="SENSOR",
        help="remove a sensor (camera, lidar) or degrade it (lidar-half-beams; camera-dark, "
        "camera-blur, optionally at a level: camera-dark:0.3 multiplies every pixel by 0.3, "
        "camera-blur:4 blurs with a 4 px Gaussian; default 0.15 and 15) in every run",
    )
    p.add_argument(
        "--learned-model",
        metavar="ONNX",
        help="the learned engine (an export of `perception train`; default: the packaged one)",
    )
    p.add_argument(
        "--rig-error",
        metavar="R,P,Y,X,Y,Z",
        type=correction_arg,
        help="generate the drive with its rig's camera moved by this (degrees about and "
        "centimetres along the vehicle axes) while the images keep the true camera: a drifted "
        "calibration for the calibration monitor, whose verdict the demo prints",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    with_option_defaults(p)


def _add_bench(sub: argparse._SubParsersAction[Parser], common: Parser) -> None:
    p = _command(
        sub,
        "bench",
        "app.commands.bench:cmd_bench",
        "latency benchmark: a drive played into a `perception run` child at a fixed rate",
        "Latency benchmark of the node through its sockets: starts `perception run` as a child "
        "process, plays DRIVE into it at --rate sweeps per second for --duration seconds "
        "(looped, restamped to the send time), and reports p50/p90/p99/max per stage and end "
        "to end, drops, CPU and memory, and the device the engines ran on. Writes bench.json, "
        "bench.md and bench.png (and node.yaml, and the node's output in node.log) into --out, "
        "replacing an earlier report only when the run completes. A long run (e.g. --duration "
        "3600) is a soak: it is also reported per --window (drops, latency percentiles, RSS, "
        "errors) with the RSS growth after the first minute and a pass/fail verdict. The camera "
        "model is chosen as `replay` chooses it.",
        common=common,
    )
    p.add_argument(
        "drive",
        nargs="?",
        help="a drive (.mcap) or KITTI object folder (default: the synthetic drive of "
        "`perception demo`, generated into perception-demo/ when absent)",
    )
    p.add_argument("--rate", metavar="HZ", type=rate_hz, default=10.0, help="sweeps per second, Hz")
    p.add_argument(
        "--duration", metavar="S", type=positive_seconds, default=30.0, help="seconds of playing, s"
    )
    p.add_argument(
        "--backend",
        choices=("onnxruntime", "tensorrt", "torch"),
        help="the node's engines.backend (default: the config's; onnxruntime built in)",
    )
    p.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        help="the node's engines.device (default: the config's; cpu built in); cuda where no "
        "GPU is usable is refused, auto is resolved and reported as what ran",
    )
    p.add_argument("--out", metavar="DIR", default="perception-bench", help="folder for the report")
    p.add_argument(
        "--window",
        metavar="S",
        type=positive_seconds,
        default=60.0,
        help="a run of several windows is also reported over time, per window of this many "
        "seconds: drops, latency percentiles, node RSS and CPU, node errors; with the RSS "
        "growth after the first minute and a soak verdict (0 dropped, 0 errors, RSS growth "
        "< 5%%), s",
    )
    p.add_argument(
        "--find-max-rate",
        action="store_true",
        help="search the highest rate with < 5%% of sweeps dropped: runs of up to 10 s from "
        "--rate, stepping up or down, then runs of up to 30 s at the edge (capped by --duration)",
    )
    p.add_argument(
        "--ready-timeout",
        metavar="S",
        type=positive_seconds,
        default=120.0,
        help="how long the node may take to start (its engines loaded and warmed up); a first "
        "TensorRT build takes minutes: build them first (`perception engines build`) or give "
        "more, s",
    )
    p.add_argument(
        "--config", metavar="FILE", help="node YAML config to bench (its endpoints are replaced)"
    )
    p.add_argument(
        "--model",
        metavar="ONNX",
        help="camera detector: an ONNX file or a registered model name (overrides the config)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_import(sub: argparse._SubParsersAction[Parser], common: Parser) -> None:
    p = _command(
        sub,
        "import",
        "app.commands.importing:cmd_import",
        "convert a KITTI folder or drive, a ROS 2 bag or a nuScenes scene into an MCAP drive",
        "Convert a dataset into a drive: a KITTI object folder (each frame its own rig, camera "
        "image and lidar sweep, 100 ms apart), a KITTI raw drive (real timestamps, oxts as "
        "GNSS fixes, the calibration as the rig), a ROS 2 bag (sqlite3 or mcap storage, read "
        "with `rosbags`, no ROS install: PointCloud2, Image, CompressedImage, CameraInfo, "
        "NavSatFix, TwistStamped/Odometry and tf_static, topics mapped by type) or a nuScenes "
        "scene (six cameras, LIDAR_TOP, ego poses as GNSS fixes, calibrated_sensor as the rig, "
        "annotations as ground truth). The drive appears only when complete.",
        common=common,
    )
    p.add_argument(
        "format",
        choices=("kitti-object", "kitti-raw", "rosbag2", "nuscenes"),
        help="the dataset's layout",
    )
    p.add_argument(
        "dir",
        help="a KITTI object folder, a KITTI raw <date>/<date>_drive_NNNN_sync folder, a ROS 2 "
        "bag folder (or its .mcap / .db3 file), or a nuScenes DATAROOT",
    )
    p.add_argument("--out", required=True, metavar="DRIVE", help="the MCAP drive to write")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace --out if it exists (only once the new drive is complete)",
    )
    p.add_argument("--grey", action="store_true", help="kitti-raw: also the grey cameras")
    p.add_argument(
        "--topics",
        metavar="YAML",
        help="rosbag2: topic mapping overriding the one by message type (see docs/rosbag2.md)",
    )
    p.add_argument(
        "--config",
        metavar="FILE",
        help="rosbag2: the node YAML config whose `limits:` the drive is written under (a "
        "camera above 10 MP; default: the built-in limits)",
    )
    p.add_argument("--version", default="v1.0-mini", help="nuscenes: the tables' version folder")
    p.add_argument("--scene", metavar="NAME", help="nuscenes: the scene (scene-0061); required")
    p.add_argument(
        "--origin",
        metavar="LAT,LON,ALT",
        help="nuscenes: geodetic origin of the map frame for the GNSS-like fixes (default: the "
        "scene's location's known origin)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    with_option_defaults(p)


def _add_export(sub: argparse._SubParsersAction[Parser], common: Parser) -> None:
    p = _command(
        sub,
        "export",
        "app.commands.exporting:cmd_export",
        "write a drive's or a run's detections as a ROS 2 bag",
        "Write the detections of a drive (its recorded DetectionLists) or of a replay run "
        "(RUN.jsonl) into a ROS 2 bag, with `rosbags` (no ROS install): vision_msgs/"
        "Detection3DArray by default, or autoware_perception_msgs/DetectedObjects, so results "
        "open in RViz and the ROS tools. The bag appears only when complete.",
        common=common,
    )
    p.add_argument("format", choices=("rosbag2",), help="the output's kind")
    p.add_argument("source", help="a drive (.mcap) with detections, or a replay run (.jsonl)")
    p.add_argument("--out", required=True, metavar="BAG", help="the bag folder to write")
    p.add_argument(
        "--storage", choices=("mcap", "sqlite3"), default="mcap", help="the bag's storage format"
    )
    p.add_argument(
        "--msgs",
        choices=("vision_msgs", "autoware"),
        default="vision_msgs",
        help="vision_msgs/Detection3DArray or autoware_perception_msgs/DetectedObjects",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_calib(sub: argparse._SubParsersAction[Parser], common: Parser) -> None:
    rig_help = "a rig YAML, a KITTI object calib file, a KITTI raw calib folder or PJLab folder"
    calib = _group(
        sub,
        "calib",
        "inspect and check a calibration",
        "Inspect a rig (frames, cameras, lever arm, time offsets) and check lidar-camera "
        "alignment on a recorded scan and image.",
    )
    show = _command(
        calib,
        "show",
        "app.commands.calib:cmd_calib_show",
        "the frame tree and parameters of a rig",
        "Print a rig's frame tree, camera models, GNSS lever arm and time offsets.",
        common=common,
    )
    show.add_argument("rig", help=rig_help)
    check = _command(
        calib,
        "check",
        "app.commands.calib:cmd_calib_check",
        "lidar-camera alignment: one scan and image, or a whole drive or KITTI folder",
        "One scan and image (--lidar, --image, --out): draw the lidar points on the image by "
        "depth and score the alignment (mutual information of lidar intensity and image grey "
        "level, nats). A drive or a KITTI object folder (--drive, --frames): the calibration "
        "monitor over all its frames (the node's, calibration.monitor) says whether each "
        "camera's extrinsic is aligned or drifted and estimates the correction; exit 0 when "
        "aligned, 3 when drift is flagged, 4 when the frames hold no evidence to judge by. "
        "--refine writes the corrected rig; --out a picture of the correction.",
        common=common,
    )
    check.add_argument(
        "rig",
        nargs="?",
        help=f"{rig_help} (with --drive: checked instead of the drive's own)",
    )
    check.add_argument("--lidar", metavar="SCAN", help="a KITTI .bin or a PCD file")
    check.add_argument("--image", help="the camera image (PNG, JPEG)")
    check.add_argument("--camera", help="camera name in the rig (default: front, else the first)")
    check.add_argument(
        "--out",
        metavar="IMAGE",
        help="overlay image to write (with --drive/--frames: the last frame used, its points "
        "drawn with the extrinsic checked above and corrected below; one per camera)",
    )
    check.add_argument("--drive", metavar="DRIVE", help="a recorded drive (.mcap) to check over")
    check.add_argument("--frames", metavar="DIR", help="a KITTI object folder to check over")
    check.add_argument(
        "--refine",
        metavar="RIG.yaml",
        help="with --drive: write the rig with the estimated corrections applied",
    )
    check.add_argument(
        "--perturb",
        metavar="R,P,Y,X,Y,Z",
        type=correction_arg,
        help="check as if each camera were moved by this (degrees about and centimetres along "
        "the vehicle axes): what such a drift looks like to the check",
    )
    check.add_argument(
        "--overwrite", action="store_true", help="replace an existing --out or --refine"
    )
    check.add_argument("--config", metavar="FILE", help="node config (YAML) for --drive/--frames")
    check.add_argument(
        "--model", metavar="MODEL", help="camera model for --drive/--frames (ONNX or name)"
    )
    check.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_engines(sub: argparse._SubParsersAction[Parser], common: Parser) -> None:
    engines = _group(
        sub,
        "engines",
        "build and list compiled (TensorRT) engines",
        "TensorRT engines built ahead of time and cached (key: ONNX sha256, TensorRT version, "
        "GPU, precision, shapes; stale engines are rebuilt). Needs TensorRT 10 and an NVIDIA GPU.",
    )
    build = _command(
        engines,
        "build",
        "app.commands.engines:cmd_engines_build",
        "build and cache TensorRT engines ahead of time",
        "Build TensorRT engines for models (registered names or ONNX files) into the cache.",
        common=common,
    )
    build.add_argument("models", nargs="+", help="registered model names or ONNX files")
    build.add_argument(
        "--precision", choices=("fp32", "fp16", "int8"), default="fp16", help="engine precision"
    )
    build.add_argument(
        "--calibration-images", metavar="DIR", help="int8: a folder of recorded camera images"
    )
    build.add_argument("--cache-dir", metavar="DIR", help=f"engine cache (default {ENGINE_CACHE})")
    build.add_argument("--model-cache", metavar="DIR", help=f"model cache (default {MODEL_CACHE})")
    build.add_argument("--quiet", action="store_true", help="no progress bar")
    listing = _command(
        engines,
        "list",
        "app.commands.engines:cmd_engines_list",
        "the cached engines",
        "List the cached engines: model, precision, TensorRT version, GPU, size, file.",
        common=common,
    )
    listing.add_argument(
        "--cache-dir", metavar="DIR", help=f"engine cache (default {ENGINE_CACHE})"
    )


def _add_models(sub: argparse._SubParsersAction[Parser], common: Parser) -> None:
    models = _group(
        sub,
        "models",
        "the model registry: list, fetch",
        "The pretrained models the node knows by name (pinned URL and sha256), their cache, "
        "and the models packaged with perception-node.",
    )
    listing = _command(
        models,
        "list",
        "app.commands.models:cmd_models_list",
        "registered and packaged models, and whether each is cached",
        "List the registered models (name, file, size, sha256 prefix, whether the cache holds "
        "a verified copy, where) and the packaged ones.",
        common=common,
    )
    listing.add_argument("--cache-dir", metavar="DIR", help=f"model cache (default {MODEL_CACHE})")
    fetch = _command(
        models,
        "fetch",
        "app.commands.models:cmd_models_fetch",
        "download and verify models into the cache",
        "Download registered models into the model cache, each verified by its sha256 before "
        "it is kept; --source-dir copies from a local folder instead (offline machines).",
        common=common,
    )
    fetch.add_argument("names", nargs="+", help="registered model names (see `models list`)")
    fetch.add_argument("--cache-dir", metavar="DIR", help=f"model cache (default {MODEL_CACHE})")
    fetch.add_argument(
        "--source-dir", metavar="DIR", help="copy from this folder instead of the network"
    )
    fetch.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_train(sub: argparse._SubParsersAction[Parser], common: Parser) -> None:
    p = _command(
        sub,
        "train",
        "app.commands.train:cmd_train",
        "train the learned fusion engine from a training config",
        "Train the learned camera + lidar fusion engine (painted pillars, CenterPoint-style "
        "head) on the sources of a training config (YAML: synthetic drives, MCAP drives with "
        "ground truth, KITTI object folders; classes, grid, augmentations, modality dropout; "
        "see replay/training/fusion_config.py and configs/train_learned_fusion.yaml). Writes "
        "checkpoints (--resume continues), metrics.jsonl, curves.png and the exported "
        "learned_fusion.onnx into --out. With train.threads: 1, a config gives the same "
        "model bytes every run; with more threads, the same model within float rounding (runs "
        "can differ in the losses' 7th digit). Needs torch.",
        common=common,
    )
    p.add_argument("config", help="training config (YAML)")
    p.add_argument(
        "--out", metavar="DIR", default="perception-train", help="folder for the run's files"
    )
    p.add_argument("--resume", action="store_true", help="continue from --out's last checkpoint")
    p.add_argument(
        "--steps", metavar="N", type=positive_int, help="optimiser steps (overrides the config)"
    )
    p.add_argument(
        "--ray-address",
        metavar="ADDR",
        help="train data-parallel on Ray Train: local (a Ray instance on this machine), auto, "
        "or ray://head:10001 (needs ray[train]; --out must be seen by every worker)",
    )
    p.add_argument(
        "--workers",
        metavar="N",
        type=int_at_most(MAX_WORKERS),
        default=2,
        help="Ray Train workers, one CPU each (with --ray-address)",
    )
    p.add_argument(
        "--prepare-workers",
        metavar="N",
        type=int_at_most(MAX_WORKERS),
        default=1,
        help="processes preparing the samples (rendering, ray casting, painting) before the "
        "steps; the same samples either way",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(hold_threads=False)
    with_option_defaults(p)


def _add_keys(sub: argparse._SubParsersAction[Parser], common: Parser) -> None:
    keys = _group(
        sub,
        "keys",
        "CURVE key pairs for tcp endpoints",
        "ZeroMQ CURVE key pairs: with `security.curve: true` in the node config, tcp endpoints "
        "are encrypted and a process that binds one admits only the clients whose public keys "
        "are in its `security.allowed_clients` folder.",
    )
    generate = _command(
        keys,
        "generate",
        "app.commands.keys:cmd_keys_generate",
        "write a new key pair: NAME.key (public) and NAME.key_secret (mode 0600)",
        "Write a new CURVE key pair into --out: NAME.key, the public key (copy it into the "
        "allowed_clients folder of the processes this one connects to, or name it as their "
        "security.server_key), and NAME.key_secret, this process's security.secret_key (mode "
        "0600; the folder is created with mode 0700). An existing pair is replaced only with "
        "--overwrite.",
        common=common,
    )
    generate.add_argument(
        "--out",
        metavar="DIR",
        help="folder for the key files (default: ~/.config/perception-node/keys)",
    )
    generate.add_argument("--name", default="node", help="the key pair's file name (NAME.key)")
    generate.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing pair (clients holding the old public key are then refused)",
    )


def _add_config(sub: argparse._SubParsersAction[Parser], common: Parser) -> None:
    config = _group(
        sub,
        "config",
        "the node configuration: show, reference",
        "The node's YAML configuration: the effective settings of a config file, and the "
        "reference of every key.",
    )
    show = _command(
        config,
        "show",
        "app.commands.config:cmd_config_show",
        "the effective node configuration (YAML)",
        "Print the node configuration as `perception run` would use it: the file's settings, "
        "validated, with every key it leaves out at its default.",
        common=common,
    )
    show.add_argument("--config", metavar="FILE", help="node YAML config (defaults built in)")
    _command(
        config,
        "reference",
        "app.commands.config:cmd_config_reference",
        "every config key: type, default, unit, description (Markdown)",
        "Print the reference of every node config key (type, default, unit, description) as "
        "Markdown, generated from the code that reads the config (docs/config.md is its output).",
        common=common,
    )


def _add_eval(sub: argparse._SubParsersAction[Parser], common: Parser) -> None:
    p = _command(
        sub,
        "eval",
        "app.commands.evaluate:cmd_eval",
        "compare detections with reference boxes, or tracks with ground truth",
        "Match the detections of a KITTI object replay (JSON Lines) with reference boxes "
        "(PointPillars predictions or KITTI labels) in bird's-eye view: matched and missed "
        "counts, centre and yaw errors. With --tracks: score the tracker's TrackLists of a "
        "replay's MCAP output against the ground truth of the synthetic drive replayed "
        "(--drive), the demo's protocol (objects within 40 m at least half unoccluded and in "
        "the image, a match within 1 m for cars, 0.5 m for pedestrians and cyclists): MOTA, "
        "MOTP, IDF1, ID switches, fragmentations, velocity and heading errors per class.",
        common=common,
    )
    p.add_argument(
        "detections", nargs="?", help="JSON Lines from `perception replay` (not with --tracks)"
    )
    p.add_argument("--kitti", metavar="DIR", help="the KITTI folder replayed (with DETECTIONS)")
    p.add_argument(
        "--reference", metavar="DIR", help="folder of reference boxes per frame (with DETECTIONS)"
    )
    p.add_argument(
        "--tracks",
        metavar="MCAP",
        help="score tracks instead: the MCAP output of `perception replay DRIVE --out OUT.mcap`",
    )
    p.add_argument(
        "--drive",
        metavar="DRIVE",
        help="with --tracks: the synthetic drive replayed, with its ground truth (DRIVE.gt.jsonl "
        "beside it, else its ground-truth channel)",
    )
    p.add_argument(
        "--max-distance",
        metavar="M",
        type=distance_m,
        default=1.5,
        help="BEV centre match distance, m",
    )
    p.add_argument(
        "--min-iou", metavar="IOU", type=fraction, help="also require this BEV IoU, 0-1 (e.g. 0.5)"
    )
    p.add_argument(
        "--max-range",
        metavar="M",
        type=distance_m,
        default=40.0,
        help="references within this range, m",
    )
    p.add_argument(
        "--min-score",
        metavar="SCORE",
        type=fraction,
        default=0.5,
        help="reference score at least, 0-1",
    )
    with_option_defaults(p)


def _add_show(sub: argparse._SubParsersAction[Parser], common: Parser) -> None:
    p = _command(
        sub,
        "show",
        "app.commands.show:cmd_show",
        "draw a run frame by frame: pictures and an index page of scores",
        "Draw the detections of a replay (JSON Lines) on the frames they came from: per frame "
        "a PNG with the 3D boxes on the camera image beside a bird's-eye view of the lidar "
        "points, the references or ground truth in green, and index.html listing every frame "
        "with its scores (matched, missed, false positives, recall, precision). A KITTI object "
        "folder's frames are scored as `perception eval` scores them (its defaults) against "
        "--reference or the folder's label_2; a synthetic drive's against its ground truth, "
        "as `perception demo` scores it.",
        common=common,
    )
    p.add_argument("run", help="JSON Lines from `perception replay ... --out FILE.jsonl`")
    p.add_argument("--kitti", metavar="DIR", help="the KITTI object folder replayed")
    p.add_argument("--drive", metavar="DRIVE", help="the drive replayed (.mcap)")
    p.add_argument(
        "--reference",
        metavar="DIR",
        help="with --kitti: per-frame reference files (KITTI labels or PointPillars boxes; "
        "default: the folder's label_2)",
    )
    p.add_argument(
        "--out", metavar="DIR", default="perception-show", help="folder for the pictures"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def build_parser() -> Parser:
    """The parser of every command, with help text and defaults on every option."""
    parser = Parser(
        prog="perception", description=DESCRIPTION, epilog=EPILOG, formatter_class=HelpFormatter
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO, show tracebacks")
    # Also accepted after the command; SUPPRESS keeps a top-level -v from being reset.
    common = Parser(add_help=False)
    common.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=argparse.SUPPRESS,
        help="log at INFO, show tracebacks",
    )
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=Parser
    )
    for add in (
        _add_demo, _add_run, _add_view, _add_replay, _add_play, _add_record, _add_echo, _add_bench,
        _add_import, _add_export, _add_eval, _add_show, _add_train, _add_calib, _add_engines,
        _add_models, _add_keys, _add_config,
    ):  # fmt: skip
        add(sub, common)
    return parser


def _handler(spec: str) -> Callable[[argparse.Namespace], int]:
    """The command function named `module:function` (imported only now)."""
    module, _, name = spec.partition(":")
    func: Callable[[argparse.Namespace], int] = getattr(importlib.import_module(module), name)
    return func


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def _command_parser(parser: argparse.ArgumentParser, prog: str) -> argparse.ArgumentParser:
    """The parser of the command named `prog` (`perception calib show`) under `parser`
    (`parser` itself when none is)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found = _command_parser(sub, prog)
                if found.prog == prog:
                    return found
    return parser


def _empty_argument(parser: argparse.ArgumentParser, args: argparse.Namespace) -> str | None:
    """What names an argument given empty in `args`, parsed by `parser` (None: there is none).
    No option's value and no positional argument may be empty, and one usually is an unset
    shell variable (`--out "$DIR"`, `replay "$DRIVE"`): `Path("")` is the current folder,
    where `show`, `bench`, `demo` and `keys` would have written their files, and which
    `replay` and `play` called "a folder, not a drive". Read from what argparse assigned
    rather than from the tokens, so that an empty positional after a flag (`bench --quiet
    ""`) is not taken for the flag's value; every option type refuses "" itself."""
    command = _command_parser(parser, args.prog)
    for action in command._actions:
        value = getattr(args, action.dest, None)
        values = value if isinstance(value, list) else [value]
        if "" not in values:
            continue
        unset = "(an unset shell variable?)"
        if action.option_strings:
            flag = max(action.option_strings, key=len)
            if len(values) == 1:
                return f"{flag} is empty {unset}: give it a value"
            return f"a value of {flag} is empty {unset}: give it one or leave it out"
        name = action.metavar if isinstance(action.metavar, str) else action.dest
        if len(values) == 1:
            return f"the {name} argument is empty {unset}: give it a value"
        return f"one of the {name} arguments is empty {unset}: give it a value or leave it out"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run `perception` with `argv` (default: sys.argv); the exit code (see EPILOG)."""
    print_anything()
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    empty = _empty_argument(parser, args)
    if empty is not None:
        print(f"{args.prog}: error: {empty}", file=sys.stderr)
        return EXIT_USAGE
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    prog = args.prog
    # Before any command's work: the node, replay and the benches multiply small matrices on
    # cores their own branches already hold, and torch's pool must not spin on them
    # (app/threads.py).
    if args.hold_threads:
        if hold_blas_threads():
            logging.getLogger(__name__).info("BLAS libraries held to one thread each")
        if let_openmp_threads_sleep():
            logging.getLogger(__name__).info("idle OpenMP threads sleep (OMP_WAIT_POLICY)")
    if threading.current_thread() is threading.main_thread():  # (tests call main elsewhere)
        signal.signal(signal.SIGTERM, _terminate)
        signal.signal(signal.SIGHUP, _terminate)
    try:
        return int(_handler(args.handler)(args))
    except (PerceptionError, CalibrationError, EngineError) as e:
        if args.verbose:
            logging.exception("%s failed", prog)
        print(f"{prog}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except _Terminated as e:
        print(f"{prog}: {STOP_SIGNALS[e.signum]}", file=sys.stderr)
        return 128 + e.signum
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return 0
    except OSError as e:
        # A file the command could not read or write that no check above named.
        if args.verbose:
            raise
        where = f"{e.filename}: " if e.filename else ""
        print(f"{prog}: error: {where}{e.strerror or _one_line(e)}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as e:
        # A bug: one line rather than a traceback, and how to get the traceback.
        if args.verbose:
            raise
        print(
            f"{prog}: error: unexpected {type(e).__name__}: {_one_line(e)} (a bug: please "
            "report it; -v shows the traceback)",
            file=sys.stderr,
        )
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
