"""The node's engines and its whole frame on an NVIDIA GPU with torch (issue #19).

Run on a machine with CUDA (writes gpu_engines.json into --out and prints a table):

    python -m benchmarks.gpu_engines --data ../shared/data --out OUT

What it measures, on KITTI frame 000003 (1242x375 camera, one HDL-64 scan):
- each engine alone with CUDA events, warm: the camera encoder (the ONNX detector converted to
  torch with onnx2torch where it is installed), the lidar encoder, the geometric fusion engine
  (the bucket the frame uses) and the learned fusion engine, on the frame's own inputs as the
  pipeline feeds them (captured from one step); at fp32 and at fp16 (autocast), each as the
  GPU's time alone (inputs already on the GPU) and as the engine runs it (host-to-device copies
  and the copy back included); fp16's error against fp32;
- the whole `Pipeline.step` with every engine torch on CUDA (the camera encoder on ONNX Runtime
  on the CPU, as the factory builds it, and on CUDA through onnx2torch), per stage p50/p99, and
  its detections against ONNX Runtime on the CPU.

Off CUDA it refuses with one line: the figures are for a GPU.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engines.engine import Engine
from engines.fusion.buckets import BucketedFusionEngine
from engines.settings import EngineSettings
from engines.torch_backend import TorchEngine, _CapturedGraph
from perception.config import CameraModelConfig, FusionConfig, PipelineConfig, SyncConfig
from perception.msgs.types import SyncedBundle
from perception.pipeline import Pipeline
from perception.sync import Bundler
from replay.datasets.kitti_object import CAMERA_STREAM, KittiObjectFolder

FRAME_ID = "000003"
WARMUP = 20
REPEATS = 200
#: "cuda"; "cpu" only for `--dry-run`, which checks the script itself on a machine without a GPU.
DEVICE = "cuda"


def environment() -> dict[str, Any]:
    """The GPU, driver, CUDA, cuDNN and library versions, and the date."""
    query = "--query-gpu=name,driver_version,memory.total,clocks.max.sm"
    try:
        smi = subprocess.run(
            ["nvidia-smi", query, "--format=csv,noheader"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    except OSError as e:
        smi = f"nvidia-smi: {e}"
    import onnxruntime

    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "gpu": torch.cuda.get_device_name(0) if DEVICE == "cuda" else "none (dry run)",
        "nvidia_smi": smi,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "onnxruntime": onnxruntime.__version__,
        "python": platform.python_version(),
        "cpu_cores": __import__("os").cpu_count(),
    }


def kitti_bundle(data: Path) -> SyncedBundle:
    folder = KittiObjectFolder(data / "kitti_object" / "training")
    sync = Bundler.from_config((CAMERA_STREAM,), SyncConfig(window_ms=50.0, timeout_ms=300.0))
    index = [f.frame_id for f in folder.frames].index(FRAME_ID)
    for msg in folder.frame_messages(index, 0):
        sync.add(msg, receive_ns=0)
    (bundle,) = sync.poll(0)
    return bundle


def percentiles(values_ms: list[float]) -> dict[str, float]:
    a = np.asarray(values_ms, dtype=np.float64)
    return {
        "p50_ms": round(float(np.percentile(a, 50)), 4),
        "p99_ms": round(float(np.percentile(a, 99)), 4),
        "max_ms": round(float(a.max()), 4),
        "n": len(values_ms),
    }


def event_times(fn: Callable[[], Any]) -> list[float]:
    """`fn` timed REPEATS times with CUDA events, after WARMUP runs, ms each."""
    for _ in range(WARMUP):
        fn()
    out = []
    if DEVICE == "cpu":
        for _ in range(REPEATS):
            t0 = time.perf_counter_ns()
            fn()
            out.append((time.perf_counter_ns() - t0) / 1e6)
        return out
    torch.cuda.synchronize()
    for _ in range(REPEATS):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        out.append(start.elapsed_time(end))
    return out


def _tensors(result: Any) -> list[torch.Tensor]:
    return list(result) if isinstance(result, tuple | list) else [result]


def engine_figures(
    module: torch.nn.Module, specs: Engine, feed: dict[str, np.ndarray]
) -> dict[str, Any]:
    """One engine's module on its captured inputs: at fp32 and fp16 (autocast) eagerly, GPU
    alone (inputs already there) and with the copies; at fp32 as the TorchEngine runs it, with
    and without its CUDA graph (copies included); fp16's relative error against fp32."""
    module = module.eval().to(DEVICE)
    arrays = [np.ascontiguousarray(feed[s.name]) for s in specs.inputs]
    on_gpu = [torch.from_numpy(a).to(DEVICE) for a in arrays]
    figures: dict[str, Any] = {}
    outputs: dict[str, list[np.ndarray]] = {}
    for precision in ("fp32", "fp16"):
        autocast = precision == "fp16"

        def gpu_only(autocast: bool = autocast) -> Any:
            with torch.inference_mode(), torch.autocast(DEVICE, torch.float16, enabled=autocast):
                return module(*on_gpu)

        def with_copies(autocast: bool = autocast) -> Any:
            with torch.inference_mode(), torch.autocast(DEVICE, torch.float16, enabled=autocast):
                args = [torch.from_numpy(a).to(DEVICE) for a in arrays]
                return [t.float().cpu().numpy() for t in _tensors(module(*args))]

        try:
            figures[precision] = {
                "gpu": percentiles(event_times(gpu_only)),
                "with_copies": percentiles(event_times(with_copies)),
            }
            outputs[precision] = [np.asarray(t, np.float64) for t in with_copies()]
        except Exception as e:  # a graph that fp16 autocast breaks is a finding, not a crash
            figures[precision] = f"failed: {type(e).__name__}: {e}"
    for graph in (False, True):
        engine = TorchEngine(module, specs.inputs, specs.outputs, device=DEVICE, cuda_graph=graph)
        figures["engine_graph" if graph else "engine_eager"] = percentiles(
            event_times(partial(engine.run, feed))
        )
        if graph:
            figures["graph_captured"] = engine.graph_captured
            got = engine.run(feed)
            figures["graph_vs_eager_max_abs"] = max(
                float(np.max(np.abs(got[o.name].astype(np.float64) - ref), initial=0.0))
                for o, ref in zip(specs.outputs, outputs["fp32"], strict=True)
            )
    errors = []
    for ref, half in zip(outputs["fp32"], outputs.get("fp16", []), strict=True):
        finite = np.isfinite(half)
        norm = float(np.linalg.norm(ref[finite])) or 1.0
        errors.append(
            {
                "shape": list(ref.shape),
                "rel_error": float(np.linalg.norm((half - ref)[finite]) / norm),
                "non_finite": int((~finite).sum()),
            }
        )
    figures["fp16_vs_fp32"] = errors
    return figures


def sync_points(module: torch.nn.Module, specs: Engine, feed: dict[str, np.ndarray]) -> Any:
    """Where `module` makes the host wait for the GPU (torch's sync debug mode: file:line of
    each synchronising call, with counts) and why a CUDA graph capture of it fails (None when
    it does not): each such point stalls the launches, and any one rules out a CUDA graph."""
    import warnings

    module = module.eval().to(DEVICE)
    args = [torch.from_numpy(np.ascontiguousarray(feed[s.name])).to(DEVICE) for s in specs.inputs]
    points: dict[str, int] = {}
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught, torch.inference_mode():
            warnings.simplefilter("always")
            module(*args)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    for w in caught:
        key = f"{Path(w.filename).name}:{w.lineno}"
        points[key] = points.get(key, 0) + 1
    capture_error = None
    try:
        _CapturedGraph(module, [feed[s.name] for s in specs.inputs], torch.device(DEVICE))
    except Exception as e:  # what a capture raises is the finding
        capture_error = f"{type(e).__name__}: {str(e)[:300]}"
    return {"sync_points": points, "capture_error": capture_error}


class FeedCapture:
    """The last inputs each engine object was run on (TorchEngine and ONNX Runtime)."""

    def __init__(self) -> None:
        self.feeds: dict[int, tuple[Engine, dict[str, np.ndarray]]] = {}
        self._undo: list[Callable[[], None]] = []

    def watch(self, cls: Any) -> None:
        original = cls.run
        feeds = self.feeds

        def run(engine: Any, inputs: Mapping[str, np.ndarray]) -> Any:
            feeds[id(engine)] = (engine, {k: np.array(v) for k, v in inputs.items()})
            return original(engine, inputs)

        cls.run = run
        self._undo.append(lambda: setattr(cls, "run", original))

    def close(self) -> None:
        for undo in self._undo:
            undo()

    def feed_of(self, engine: Engine) -> dict[str, np.ndarray]:
        return self.feeds[id(engine)][1]


def torch_camera_engine(onnx_path: Path, like: Engine) -> TorchEngine | None:
    """The ONNX camera encoder converted to torch on CUDA (onnx2torch), with `like`'s specs;
    None where onnx2torch is not installed."""
    try:
        import onnx
        from onnx2torch import convert  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return None
    module = convert(onnx.load(str(onnx_path)))
    return TorchEngine(module, like.inputs, like.outputs, device=DEVICE, name="camera_encoder")


def step_figures(pipeline: Pipeline, bundle: SyncedBundle) -> dict[str, Any]:
    """The whole step, warm: per stage p50/p99 (the node's timings) and the step's wall time."""
    for _ in range(WARMUP):
        pipeline.step(bundle, 0)
    stages: dict[str, list[float]] = {}
    walls = []
    for _ in range(REPEATS):
        t0 = time.perf_counter_ns()
        result = pipeline.step(bundle, 0)
        walls.append((time.perf_counter_ns() - t0) / 1e6)
        for name, ns in result.timings_ns.items():
            stages.setdefault(name, []).append(ns / 1e6)
    return {
        "step_wall": percentiles(walls),
        "stages": {name: percentiles(v) for name, v in stages.items()},
        "engines": list(pipeline.describe_engines()),
    }


def same_detections(a: Any, b: Any) -> dict[str, Any]:
    la = sorted((d.label, d.center) for d in a.detections)
    lb = sorted((d.label, d.center) for d in b.detections)
    labels = [x[0] for x in la] == [x[0] for x in lb]
    shift = (
        max(
            (float(np.max(np.abs(np.subtract(x[1], y[1])))) for x, y in zip(la, lb, strict=True)),
            default=0.0,
        )
        if labels
        else None
    )
    return {"count": [len(la), len(lb)], "same_labels": labels, "max_center_shift_m": shift}


def _pair(stats: Mapping[str, float]) -> str:
    return f"{stats['p50_ms']:.3f}/{stats['p99_ms']:.3f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="the shared data folder")
    parser.add_argument("--out", type=Path, required=True, help="folder for gpu_engines.json")
    parser.add_argument("--dry-run", action="store_true", help="on the CPU, 3 repeats")
    parser.add_argument(
        "--sync-points", action="store_true", help="only where each engine syncs, no timing"
    )
    args = parser.parse_args(argv)
    global DEVICE, WARMUP, REPEATS
    if args.dry_run:
        DEVICE, WARMUP, REPEATS = "cpu", 1, 3
    elif not torch.cuda.is_available():
        print(
            "gpu_engines: torch sees no CUDA device; these figures are for a GPU", file=sys.stderr
        )
        return 2
    yolox = args.data / "camera_detector" / "yolox_nano_coco_416.onnx"
    kitti = args.data / "kitti_object" / "training"
    for needed in (yolox, kitti):
        if not needed.exists():
            print(
                f"gpu_engines: {needed}: not found (--data is the shared data folder)",
                file=sys.stderr,
            )
            return 2
    args.out.mkdir(parents=True, exist_ok=True)
    model = CameraModelConfig(path=str(yolox), kind="yolox")
    bundle = kitti_bundle(args.data)
    report: dict[str, Any] = {"environment": environment(), "frame": FRAME_ID}
    print(json.dumps(report["environment"]), flush=True)

    # The reference: ONNX Runtime on the CPU, as the embedded default runs.
    geometric = PipelineConfig()
    cpu = Pipeline.from_config(model, config=geometric)
    reference = cpu.step(bundle, 0)

    cuda = EngineSettings(backend="torch", device=DEVICE)
    ensemble = replace(geometric, fusion=FusionConfig(kind="ensemble"))
    capture = FeedCapture()
    from engines.onnxruntime_backend import OnnxRuntimeEngine

    capture.watch(TorchEngine)
    capture.watch(OnnxRuntimeEngine)
    gpu = Pipeline.from_config(model, engines=cuda, config=ensemble)
    gpu.step(bundle, 0)
    capture.close()

    engines: dict[str, Any] = {}
    for stage, built in gpu.engines():
        # The bucketed fusion engine: the bucket this frame ran.
        engine = built._last if isinstance(built, BucketedFusionEngine) else built
        if isinstance(engine, TorchEngine):
            module = engine.module
        else:
            converted = torch_camera_engine(yolox, engine)
            if converted is None:
                engines[stage] = "onnx2torch is not installed: not measured on CUDA"
                continue
            module = converted.module
        feed = capture.feed_of(engine)
        if args.sync_points:
            engines[stage] = sync_points(module, engine, feed)
            print(stage, json.dumps(engines[stage]), flush=True)
            continue
        engines[stage] = {
            "model": engine.describe().model,
            "inputs": {s.name: list(feed[s.name].shape) for s in engine.inputs},
            **engine_figures(module, engine, feed),
        }
        print(stage, json.dumps(engines[stage]), flush=True)
    report["engines"] = engines
    if args.sync_points:
        (args.out / "sync_points.json").write_text(json.dumps(report, indent=1))
        return 0

    steps: dict[str, Any] = {}
    for graphs in (False, True):
        TorchEngine.CUDA_GRAPHS = graphs
        tag = "graphs" if graphs else "eager"
        gpu_geometric = Pipeline.from_config(model, engines=cuda, config=geometric)
        gpu_geometric.warm_up()
        steps[f"torch_cuda_{tag}_camera_on_ort_cpu"] = step_figures(gpu_geometric, bundle)
        steps[f"torch_cuda_{tag}_camera_on_ort_cpu"]["vs_cpu"] = same_detections(
            reference, gpu_geometric.step(bundle, 0)
        )
        camera = torch_camera_engine(yolox, gpu_geometric.detector.engine)
        if camera is not None:
            gpu_geometric.detector.engine = camera
            steps[f"torch_cuda_{tag}_all_engines"] = step_figures(gpu_geometric, bundle)
            steps[f"torch_cuda_{tag}_all_engines"]["vs_cpu"] = same_detections(
                reference, gpu_geometric.step(bundle, 0)
            )
        print(json.dumps({k: v["step_wall"] for k, v in steps.items()}), flush=True)
    TorchEngine.CUDA_GRAPHS = True
    steps["onnxruntime_cpu"] = step_figures(cpu, bundle)
    report["steps"] = steps
    (args.out / "gpu_engines.json").write_text(json.dumps(report, indent=1))

    print("\nengine, ms p50/p99:  fp32 gpu      fp32 +copies  engine eager  engine graph  fp16 gpu")
    for stage, fig in engines.items():
        if isinstance(fig, str):
            print(f"{stage:20s}  {fig}")
            continue
        half = fig["fp16"]
        errs = fig["fp16_vs_fp32"]
        fp16 = (
            half
            if isinstance(half, str)
            else (
                f"{_pair(half['gpu'])} rel err {max(e['rel_error'] for e in errs):.1e}"
                f" ({sum(e['non_finite'] for e in errs)} non-finite)"
            )
        )
        print(
            f"{stage:20s}  {_pair(fig['fp32']['gpu'])}  {_pair(fig['fp32']['with_copies'])}"
            f"  {_pair(fig['engine_eager'])}  {_pair(fig['engine_graph'])}  {fp16}"
            f"  [graph {fig['graph_captured']}, max diff {fig['graph_vs_eager_max_abs']:.1e}]"
        )
    for name, fig in steps.items():
        print(
            f"\nstep {name}: wall p50/p99 {_pair(fig['step_wall'])} ms; "
            f"against the CPU: {fig.get('vs_cpu')}"
        )
        for stage, st in fig["stages"].items():
            print(f"  {stage:20s} p50 {st['p50_ms']:8.3f}  p99 {st['p99_ms']:8.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
