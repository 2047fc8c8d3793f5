"""The `perception` command. The only module that ties perception, engines, calibration and
replay together; library code never prints, this does."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np

from calibration import CalibrationError
from engines.errors import EngineError
from perception.config import NodeConfig, load_config
from perception.errors import PerceptionError, WireError
from perception.msgs import wire
from perception.pipeline import Pipeline

__all__ = ["main"]

EXIT_USAGE = 2
DEFAULT_SENSORS = NodeConfig().inputs.endpoints[0]
DEFAULT_DETECTIONS = NodeConfig().outputs.endpoint


def _load_node_config(path: str | None) -> NodeConfig:
    return load_config(Path(path)) if path else NodeConfig()


def _pipeline(config: NodeConfig, model: str | None) -> Pipeline:
    model_path = Path(model).expanduser() if model else None
    return Pipeline.from_config(config.camera_model, model_path, config.engines)


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()

    def handler(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return stop


def cmd_run(args: argparse.Namespace) -> int:
    from perception.node import Node

    config = _load_node_config(args.config)
    pipeline = _pipeline(config, args.model)
    default_rig = None
    if config.rig is not None:
        from calibration import load_rig

        default_rig = load_rig(Path(config.rig).expanduser())
        for warning in default_rig.warnings:
            print(f"perception run: warning: {warning}", flush=True)
    node = Node(config, pipeline, default_rig)
    stop = _stop_on_signals()
    done = threading.Event()

    def announce() -> None:
        if node.ready.wait(60.0) and not done.is_set():
            inputs = ", ".join(config.inputs.endpoints)
            print(
                f"perception run: ready; inputs {inputs}; detections on "
                f"{config.outputs.endpoint} [{config.outputs.detections_topic}]",
                flush=True,
            )

    threading.Thread(target=announce, daemon=True).start()
    try:
        node.run(stop)
    finally:
        done.set()
    c = node.counters
    print(
        f"perception run: stopped; {c.published} published, {c.skipped_bundles} skipped, "
        f"{c.decode_errors} undecodable, {c.step_errors} failed",
        flush=True,
    )
    return 0


def _source(sources: Sequence[str], command: str) -> tuple[str, Path]:
    """("kitti-object", DIR) or ("drive", DRIVE.mcap) from `SOURCE [DIR]`."""
    if sources[0] == "kitti-object":
        if len(sources) != 2:
            raise PerceptionError(f"{command} kitti-object: expected exactly one KITTI folder")
        return "kitti-object", Path(sources[1])
    if len(sources) != 1:
        raise PerceptionError(f"{command}: expected one drive, got {len(sources)} arguments")
    return "drive", Path(sources[0])


def cmd_play(args: argparse.Namespace) -> int:
    from perception.io.transport import Publisher
    from replay.datasets.kitti_object import KittiObjectFolder
    from replay.drive import DriveReader
    from replay.mcap_player import play_drive
    from replay.player import play_kitti_object

    kind, path = _source([args.source, *([args.dir] if args.dir else [])], "play")
    folder = KittiObjectFolder(path) if kind == "kitti-object" else None
    reader = DriveReader(path) if kind == "drive" else None
    stop = _stop_on_signals()
    with Publisher(args.endpoint, bind=True, hwm=args.hwm) as publisher:
        if args.wait > 0:
            # PUB/SUB drops what is sent before a subscriber's subscription arrives.
            stop.wait(args.wait)
        if folder is not None:
            sent = play_kitti_object(
                folder, publisher, rate_hz=args.rate, loop=args.loop, stop=stop
            )
            what = "frames"
        else:
            assert reader is not None
            sent = play_drive(
                reader,
                publisher,
                speed=args.speed,
                loop=args.loop,
                start_s=args.start,
                topics=args.topics,
                stop=stop,
                restamp=args.restamp,
            )
            what = "messages"
        # Let ZeroMQ flush the last frames before the socket closes.
        time.sleep(0.2)
    print(f"perception play: {sent} {what} published on {args.endpoint}", flush=True)
    return 0


def cmd_record(args: argparse.Namespace) -> int:
    from replay.recorder import Recorder

    config = _load_node_config(args.config)
    inputs = config.inputs
    topics = args.topics or [
        inputs.lidar_topic,
        *inputs.camera_topics,
        inputs.gnss_topic,
        inputs.rig_topic,
    ]
    endpoints = args.endpoint or list(inputs.endpoints)
    stop = _stop_on_signals()
    recorder = Recorder(
        endpoints,
        topics,
        Path(args.out),
        queue_size=args.queue_size,
        compression=None if args.compression == "none" else args.compression,
    )
    print(f"perception record: recording {', '.join(topics)} to {args.out}", flush=True)
    stats = recorder.run(stop)
    print(
        f"perception record: {stats.received} received, {stats.written} written, "
        f"{stats.dropped} dropped (queue full), {stats.undecodable} undecodable, "
        f"{stats.bytes / 1e6:.1f} MB",
        flush=True,
    )
    return 0


def cmd_echo(args: argparse.Namespace) -> int:
    from perception.io.transport import Subscriber
    from perception.msgs.types import CameraFrame, DetectionList, GnssFix, LidarSweep, RigMessage

    stop = _stop_on_signals()
    count = 0
    with Subscriber([args.endpoint], [args.topic]) as sub:
        while not stop.is_set() and (args.count <= 0 or count < args.count):
            frames = sub.recv(timeout_ms=100)
            if frames is None:
                continue
            count += 1
            if len(frames) == 2 and bytes(frames[1].buffer[:1]) == b"{":
                print(f"{args.topic}: {bytes(frames[1].buffer).decode()}", flush=True)
                continue
            try:
                topic, msg = wire.decode(frames)
            except WireError as e:
                print(f"{args.topic}: undecodable: {e}", flush=True)
                continue
            h = getattr(msg, "header", None)
            head = f"{topic} seq={h.seq} stamp_ns={h.stamp_ns}" if h else topic
            if isinstance(msg, DetectionList):
                ms = {k: round(v / 1e6, 2) for k, v in msg.timings_ns.items()}
                print(f"{head} latency_ms={msg.latency_ns / 1e6:.1f} timings_ms={ms}")
                for d in msg.detections:
                    x, y, z = d.center
                    print(
                        f"  {d.label:<12} {d.score:.2f} center=({x:.2f}, {y:.2f}, {z:.2f}) "
                        f"yaw={d.yaw:+.2f}"
                    )
            elif isinstance(msg, LidarSweep):
                print(f"{head} points={msg.points.shape[0]}")
            elif isinstance(msg, CameraFrame):
                shape = msg.image.shape if msg.image is not None else msg.encoding
                print(f"{head} image={shape}")
            elif isinstance(msg, GnssFix):
                print(f"{head} lat={msg.latitude_deg:.7f} lon={msg.longitude_deg:.7f}")
            elif isinstance(msg, RigMessage):
                print(f"{head} rig cameras={sorted(msg.rig.get('cameras', {}))}")
            sys.stdout.flush()
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from replay.offline import replay_to_file

    config = _load_node_config(args.config)
    if args.out_dir is not None or args.ray_address is not None:
        return _replay_many(args, config)
    if args.out is None:
        raise PerceptionError("replay: give --out FILE (one source) or --out-dir DIR (many)")
    _kind, path = _source(args.sources, "replay")
    out = Path(args.out)
    if out.suffix not in (".jsonl", ".mcap"):
        raise PerceptionError(f"{out}: --out must end in .jsonl or .mcap")
    pipeline = _pipeline(config, args.model)
    with tqdm(unit="sweep", disable=args.quiet) as bar:

        def progress(done: int, total: int | None) -> None:
            if total is not None and bar.total != total:
                bar.total = total
            bar.update(done - bar.n)

        summary = replay_to_file(
            path,
            out,
            config,
            pipeline,
            speed=1.0 if args.realtime else 0.0,
            progress=progress,
        )
    c = summary.counters
    print(
        f"perception replay: {summary.sweeps} DetectionLists written to {out}; "
        f"{c.get('received', 0)} messages, {c.get('decode_errors', 0)} undecodable, "
        f"{c.get('bad_rigs', 0)} bad rigs, {c.get('step_errors', 0)} failed sweeps"
    )
    return 0


def _replay_many(args: argparse.Namespace, config: NodeConfig) -> int:
    from tqdm import tqdm

    from replay.distributed import replay_many

    if args.out_dir is None:
        raise PerceptionError("replay: --ray-address needs --out-dir")
    sources = [Path(s) for s in args.sources if s != "kitti-object"]
    with tqdm(total=len(sources), unit="drive", disable=args.quiet) as bar:
        results = replay_many(
            sources,
            Path(args.out_dir),
            config=config,
            model_path=Path(args.model) if args.model else None,
            ray_address=args.ray_address,
            progress=lambda _done, _total, _result: bar.update(1),
        )
    failed = 0
    for r in results:
        if r.error:
            failed += 1
            print(f"{r.source}: failed: {r.error}", file=sys.stderr)
        else:
            print(f"{r.source}: {r.sweeps} DetectionLists -> {r.out_path} ({r.wall_s:.1f} s)")
    return 1 if failed else 0


def cmd_import(args: argparse.Namespace) -> int:
    from replay.datasets.importers import import_kitti_object, import_kitti_raw

    out = Path(args.out)
    if args.format == "kitti-object":
        stats = import_kitti_object(Path(args.dir), out)
    else:
        stats = import_kitti_raw(Path(args.dir), out, grey=args.grey)
    for warning in stats.warnings:
        print(f"warning: {warning}")
    counts = ", ".join(f"{t} {n}" for t, n in sorted(stats.messages.items()))
    print(f"perception import: {out}: {counts} ({stats.bytes / 1e6:.1f} MB, {stats.wall_s:.1f} s)")
    if stats.camera_offsets_ms:
        offsets = ", ".join(f"{k}: {v:.1f}" for k, v in sorted(stats.camera_offsets_ms.items()))
        print(f"cameras follow their sweep stamp by (ms) {offsets}: set sync.camera_offsets_ms")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from replay.synth.demo import format_demo_report, run_demo

    report = run_demo(
        Path(args.drive) if args.drive else None,
        seed=args.seed,
        seconds=args.seconds,
        out_dir=Path(args.out_dir),
    )
    print(format_demo_report(report))
    return 0


def _bench_drive(drive: str | None, limit: int) -> tuple[str, list[Any], Any, bool]:
    """(description, sweeps (app.bench.Sweep), rig, synthetic) of `perception bench
    [DRIVE]`: an MCAP drive, a KITTI object folder (or its parent holding `training/`), or by
    default the synthetic drive of `perception demo` (generated into perception-demo/ unless it
    is there already)."""
    from app.bench import group_sweeps
    from replay.datasets.kitti_object import KittiObjectFolder
    from replay.drive import DriveReader
    from replay.synth.world import generate_drive, ground_truth_path

    if drive is None:
        path = Path("perception-demo") / "synth_seed0.mcap"
        if not (path.exists() and ground_truth_path(path).exists()):
            print(f"perception bench: generating the synthetic drive {path}", flush=True)
            path.parent.mkdir(parents=True, exist_ok=True)
            generate_drive(path, seed=0, seconds=10.0)
    else:
        path = Path(drive)
    if path.is_dir():
        if not (path / "image_2").is_dir() and (path / "training" / "image_2").is_dir():
            path = path / "training"
        folder = KittiObjectFolder(path)
        records = ((m.header.stream, m) for m in folder.messages())
        return f"KITTI object {path}", group_sweeps(records, limit), None, False
    if not path.exists():
        raise PerceptionError(f"{path}: no such drive (.mcap) or KITTI object folder")
    reader = DriveReader(path)
    sweeps = group_sweeps(((r.topic, r.message) for r in reader.messages()), limit)
    synthetic = ground_truth_path(path).exists()
    return f"{'synthetic drive' if synthetic else 'drive'} {path}", sweeps, reader.rig, synthetic


def _bench_config(args: argparse.Namespace, sweeps: list[Any], synthetic: bool) -> NodeConfig:
    """The node config to bench: --config as is, else the defaults with the drive's topics and
    camera offsets (and for the synthetic drive the demo's detector); --model overrides."""
    from dataclasses import replace

    from app.bench import config_for_sweeps
    from perception.config import CameraModelConfig

    if args.config:
        config = load_config(Path(args.config))
    else:
        config = config_for_sweeps(sweeps, NodeConfig())
        if synthetic:
            from replay.synth.demo import SYNTH_DETECTOR_PATH

            # As `perception demo` runs it: the detector trained on synthetic renders.
            model = CameraModelConfig(str(SYNTH_DETECTOR_PATH), kind="yolox", score_threshold=0.15)
            config = replace(config, camera_model=model)
    if args.model:
        model_path = str(Path(args.model).expanduser().resolve())
        config = replace(config, camera_model=replace(config.camera_model, path=model_path))
    return config


def cmd_bench(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from app.bench import (
        BenchInterruptedError,
        BenchSettings,
        check_settings,
        format_markdown,
        run_bench,
        sweeps_needed,
        write_report,
    )

    settings = BenchSettings(
        rate_hz=args.rate,
        duration_s=args.duration,
        backend=args.backend,
        device=args.device,
        find_max_rate=args.find_max_rate,
    )
    check_settings(settings)
    source, sweeps, rig, synthetic = _bench_drive(args.drive, sweeps_needed(settings))
    config = _bench_config(args, sweeps, synthetic)
    out = Path(args.out)
    stop = _stop_on_signals()
    with tqdm(total=0, unit="sweep", disable=args.quiet) as bar:
        shown = [""]

        def progress(done: int, total: int, label: str) -> None:
            if label != shown[0]:
                shown[0] = label
                bar.reset(total=total)
                bar.set_description(label)
            bar.update(done - bar.n)

        try:
            result = run_bench(
                sweeps, config, settings, out, source=source, rig=rig, stop=stop, progress=progress
            )
        except BenchInterruptedError:
            bar.close()
            print("perception bench: interrupted; the node is stopped", file=sys.stderr)
            return 130
    json_path, md_path, png_path = write_report(result, out)
    print(format_markdown(result))
    print(f"perception bench: written {json_path}, {md_path}, {png_path}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from replay.datasets.kitti_eval import evaluate_kitti_run

    _, report = evaluate_kitti_run(
        Path(args.detections),
        Path(args.kitti),
        Path(args.reference),
        max_center_distance_m=args.max_distance,
        min_bev_iou=args.min_iou,
        max_range_m=args.max_range,
        min_reference_score=args.min_score,
    )
    print(report)
    return 0


def cmd_calib_show(args: argparse.Namespace) -> int:
    from calibration import describe_rig, load_rig

    print(describe_rig(load_rig(Path(args.rig))))
    return 0


def cmd_calib_check(args: argparse.Namespace) -> int:
    import cv2

    from calibration import calibration_check, load_rig, read_scan

    image_path = Path(args.image)
    loaded = cv2.imread(str(image_path), cv2.IMREAD_COLOR)
    if loaded is None:
        raise CalibrationError(f"{image_path}: not a readable image")
    image = np.asarray(loaded, dtype=np.uint8)
    rig = load_rig(Path(args.rig), image_size=(image.shape[1], image.shape[0]))
    for warning in rig.warnings:
        print(f"warning: {warning}")
    camera = args.camera or ("front" if "front" in rig.cameras else next(iter(rig.cameras)))
    result = calibration_check(rig, camera, read_scan(Path(args.lidar)), image)
    out = Path(args.out)
    if not cv2.imwrite(str(out), result.overlay):
        raise CalibrationError(f"{out}: cannot write the overlay")
    print(
        f"camera {camera}: {result.n_points_in_image} lidar points in the image; "
        f"alignment score {result.score:.4f} (mutual information, nats; larger is better)"
    )
    print(f"overlay written to {out}")
    return 0


def _calibration_batches(model: str, images_dir: Path, cache: Path | None) -> Callable[[], Any]:
    """INT8 calibration inputs: the recorded images of `images_dir`, preprocessed as the camera
    encoder does for `model`."""
    from engines.camera.detector import CameraDetector
    from engines.factory import EngineFactory
    from replay.datasets.kitti_object import read_image

    images = sorted(p for p in images_dir.iterdir() if p.suffix.lower() in (".png", ".jpg"))
    if not images:
        raise PerceptionError(f"{images_dir}: no .png/.jpg images for INT8 calibration")
    # Preprocessing only: the network itself is never run here (ONNX Runtime on the CPU).
    detector = CameraDetector(EngineFactory(model_cache_dir=cache).camera_encoder(model))

    def batches() -> Iterator[dict[str, Any]]:
        for path in images:
            tensor, _ = detector.preprocess(read_image(path))
            yield {detector.input_name: tensor}

    return batches


def cmd_engines_build(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from engines.factory import build_engines

    model_cache = Path(args.model_cache).expanduser() if args.model_cache else None
    engine_cache = Path(args.cache_dir).expanduser() if args.cache_dir else None
    groups: list[list[str]] = (
        [[m] for m in args.models] if args.precision == "int8" else [list(args.models)]
    )
    with tqdm(total=2 * len(args.models), unit="step", disable=args.quiet) as bar:

        def progress(_done: int, _total: int, message: str) -> None:
            bar.set_description(message)
            bar.update(1)

        for group in groups:
            batches = None
            if args.precision == "int8" and args.calibration_images:
                batches = _calibration_batches(group[0], Path(args.calibration_images), model_cache)
            for result in build_engines(
                group,
                args.precision,
                engine_cache,
                model_cache_dir=model_cache,
                calibration_batches=batches,
                progress=progress,
            ):
                tqdm.write(
                    f"{result.model}: {result.status} {result.precision} engine "
                    f"{result.engine_path} ({result.seconds:.1f} s)"
                )
    return 0


def cmd_engines_list(args: argparse.Namespace) -> int:
    from engines.factory import list_engines

    entries = list_engines(Path(args.cache_dir).expanduser() if args.cache_dir else None)
    if not entries:
        print("no cached engines")
        return 0
    print(f"{'model':<28}{'precision':<10}{'TensorRT':<10}{'GPU':<28}{'MB':>8}  file")
    for e in entries:
        k = e.key
        print(
            f"{k.model_name:<28}{k.precision:<10}{k.tensorrt_version:<10}"
            f"{k.gpu_name + ' sm' + str(k.compute_capability):<28}"
            f"{e.size_bytes / 1e6:>8.1f}  {e.engine_path}"
        )
    return 0


def cmd_models_fetch(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from engines.registry import fetch_model, get_model_info

    cache = Path(args.cache_dir).expanduser() if args.cache_dir else None
    source = Path(args.source_dir) if args.source_dir else None
    for name in args.names:
        info = get_model_info(name)
        with tqdm(
            total=info.size_bytes, unit="B", unit_scale=True, desc=name, disable=args.quiet
        ) as bar:

            def progress(done: int, _total: int | None) -> None:
                bar.update(done - bar.n)

            path = fetch_model(name, cache, progress=progress, source_dir=source)
        print(f"{name}: {path} (sha256 verified)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="perception", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="the on-vehicle node: subscribe, fuse, publish detections")
    run.add_argument("--config", help="node YAML config (defaults built in)")
    run.add_argument("--model", help="camera detector ONNX file (overrides the config)")
    run.set_defaults(func=cmd_run)

    play = sub.add_parser(
        "play",
        help="publish recorded data over ZeroMQ: `play DRIVE.mcap` or `play kitti-object DIR`",
    )
    play.add_argument("source", help="a drive (.mcap), or `kitti-object` followed by its folder")
    play.add_argument("dir", nargs="?", help="the KITTI object folder (image_2, calib, ...)")
    play.add_argument("--endpoint", default=DEFAULT_SENSORS)
    play.add_argument("--rate", type=float, default=10.0, help="KITTI: frames per second (Hz)")
    play.add_argument("--speed", type=float, default=1.0, help="drive: x recorded time (0: max)")
    play.add_argument("--start", type=float, default=0.0, help="drive: seconds into the drive")
    play.add_argument("--topics", nargs="+", help="drive: only these topics")
    play.add_argument("--restamp", action="store_true", help="drive: stamps shifted to now")
    play.add_argument("--loop", action="store_true")
    play.add_argument("--wait", type=float, default=1.0, help="seconds to let subscribers join")
    play.add_argument("--hwm", type=int, default=10_000)
    play.set_defaults(func=cmd_play)

    record = sub.add_parser("record", help="record ZeroMQ topics into an MCAP drive")
    record.add_argument("topics", nargs="*", help="topics (default: the config's inputs)")
    record.add_argument("--out", required=True, help="the MCAP drive to write")
    record.add_argument("--endpoint", action="append", help="where to subscribe (repeatable)")
    record.add_argument("--config", help="node YAML config (default topics and endpoints)")
    record.add_argument("--queue-size", type=int, default=1000, help="messages held for disk")
    record.add_argument("--compression", choices=("zstd", "lz4", "none"), default="zstd")
    record.set_defaults(func=cmd_record)

    echo = sub.add_parser("echo", help="print what arrives on a topic")
    echo.add_argument("topic")
    echo.add_argument("--endpoint", default=DEFAULT_DETECTIONS)
    echo.add_argument("--count", type=int, default=0, help="stop after N messages (0: never)")
    echo.set_defaults(func=cmd_echo)

    replay = sub.add_parser(
        "replay",
        help="the pipeline offline, no sockets: `replay DRIVE.mcap` or `replay kitti-object DIR`",
    )
    replay.add_argument(
        "sources",
        nargs="+",
        help="a drive (.mcap), `kitti-object DIR`, or with --out-dir many drives/KITTI folders",
    )
    replay.add_argument("--out", help="detections: .jsonl (one per line) or .mcap")
    replay.add_argument("--out-dir", help="many sources: one .jsonl per source in this folder")
    replay.add_argument(
        "--ray-address", help="run one Ray task per source (`local`, `auto` or a ray:// address)"
    )
    replay.add_argument("--config", help="node YAML config (sync and model settings)")
    replay.add_argument("--model", help="camera detector ONNX file (overrides the config)")
    replay.add_argument("--realtime", action="store_true", help="drive: paced by recorded time")
    replay.add_argument("--quiet", action="store_true", help="no progress bar")
    replay.set_defaults(func=cmd_replay)

    demo = sub.add_parser(
        "demo", help="a synthetic drive through the pipeline: latency and quality vs ground truth"
    )
    demo.add_argument("--drive", help="an existing synthetic drive (default: generate one)")
    demo.add_argument("--seed", type=int, default=0, help="the synthetic world's seed")
    demo.add_argument("--seconds", type=float, default=10.0, help="length of a generated drive")
    demo.add_argument("--out-dir", default="perception-demo", help="drive, detections, picture")
    demo.set_defaults(func=cmd_demo)

    bench = sub.add_parser(
        "bench",
        help="latency benchmark: a drive played into a `perception run` child at a fixed rate",
    )
    bench.add_argument(
        "drive",
        nargs="?",
        help="a drive (.mcap) or KITTI object folder (default: the synthetic drive of `demo`)",
    )
    bench.add_argument("--rate", type=float, default=10.0, help="sweeps per second (Hz)")
    bench.add_argument("--duration", type=float, default=30.0, help="seconds of playing")
    bench.add_argument(
        "--backend",
        choices=("onnxruntime", "tensorrt", "torch"),
        help="the node's engines.backend (default: the config's; onnxruntime without --config)",
    )
    bench.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        help="the node's engines.device (default: the config's; cpu without --config)",
    )
    bench.add_argument("--out", default="perception-bench", help="bench.json, .md, .png here")
    bench.add_argument(
        "--find-max-rate",
        action="store_true",
        help="search the highest rate with < 5%% of sweeps dropped (short runs from --rate)",
    )
    bench.add_argument("--config", help="node YAML config to bench (its endpoints are replaced)")
    bench.add_argument("--model", help="camera detector ONNX file (overrides the config)")
    bench.add_argument("--quiet", action="store_true", help="no progress bar")
    bench.set_defaults(func=cmd_bench)

    imp = sub.add_parser("import", help="convert a dataset into an MCAP drive")
    imp.add_argument("format", choices=("kitti-object", "kitti-raw"))
    imp.add_argument("dir", help="a KITTI object folder, or a KITTI raw <date>_drive_NNNN_sync")
    imp.add_argument("--out", required=True, help="the MCAP drive to write")
    imp.add_argument("--grey", action="store_true", help="kitti-raw: also the grey cameras")
    imp.set_defaults(func=cmd_import)

    calib = sub.add_parser("calib", help="inspect and check a calibration")
    calib_sub = calib.add_subparsers(dest="calib_command", required=True)
    show = calib_sub.add_parser("show", help="the frame tree and parameters of a rig")
    show.add_argument("rig", help="a rig YAML, KITTI object/raw calib, or PJLab calibration")
    show.set_defaults(func=cmd_calib_show)
    check = calib_sub.add_parser("check", help="lidar drawn on the image + an alignment score")
    check.add_argument("rig", help="a rig YAML, KITTI object/raw calib, or PJLab calibration")
    check.add_argument("--lidar", required=True, help="a KITTI .bin scan or a PCD file")
    check.add_argument("--image", required=True, help="the camera image")
    check.add_argument("--camera", help="camera name in the rig (default: front or the first)")
    check.add_argument("--out", required=True, help="overlay PNG to write")
    check.set_defaults(func=cmd_calib_check)

    engines = sub.add_parser("engines", help="build and list compiled (TensorRT) engines")
    engines_sub = engines.add_subparsers(dest="engines_command", required=True)
    build = engines_sub.add_parser("build", help="build and cache TensorRT engines ahead of time")
    build.add_argument("models", nargs="+", help="registered model names or ONNX files")
    build.add_argument("--precision", choices=("fp32", "fp16", "int8"), default="fp16")
    build.add_argument("--calibration-images", help="INT8: a folder of recorded camera images")
    build.add_argument(
        "--cache-dir", help="engine cache (default ~/.cache/perception-node/engines)"
    )
    build.add_argument(
        "--model-cache", help="model cache (default ~/.cache/perception-node/models)"
    )
    build.add_argument("--quiet", action="store_true", help="no progress bar")
    build.set_defaults(func=cmd_engines_build)
    elist = engines_sub.add_parser("list", help="the cached engines")
    elist.add_argument(
        "--cache-dir", help="engine cache (default ~/.cache/perception-node/engines)"
    )
    elist.set_defaults(func=cmd_engines_list)

    models = sub.add_parser("models", help="the model registry")
    models_sub = models.add_subparsers(dest="models_command", required=True)
    fetch = models_sub.add_parser("fetch", help="download and verify models into the cache")
    fetch.add_argument("names", nargs="+", help="registered model names")
    fetch.add_argument("--cache-dir", help="model cache (default ~/.cache/perception-node/models)")
    fetch.add_argument("--source-dir", help="copy from this local folder instead of the network")
    fetch.add_argument("--quiet", action="store_true", help="no progress bar")
    fetch.set_defaults(func=cmd_models_fetch)

    ev = sub.add_parser("eval", help="compare detections with reference boxes")
    ev.add_argument("detections", help="JSON Lines from `perception replay`")
    ev.add_argument("--kitti", required=True, help="the KITTI object folder that was replayed")
    ev.add_argument("--reference", required=True, help="folder of reference boxes per frame")
    ev.add_argument("--max-distance", type=float, default=1.5, help="BEV match distance, m")
    ev.add_argument("--min-iou", type=float, help="also require this BEV IoU (e.g. 0.5)")
    ev.add_argument("--max-range", type=float, default=40.0, help="references within, m")
    ev.add_argument("--min-score", type=float, default=0.5, help="reference score at least")
    ev.set_defaults(func=cmd_eval)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args))
    except (PerceptionError, CalibrationError, EngineError) as e:
        print(f"perception {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
