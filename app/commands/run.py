"""`perception run`: the on-vehicle node."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import threading
from collections.abc import Callable
from pathlib import Path

from app.common import check_reachable, load_node_config, stop_on_signals
from app.models import build_pipeline, choose_camera_model
from calibration import load_rig
from perception.config import NodeConfig
from perception.errors import PerceptionError
from perception.io.curve import CurveKeys, curve_keys_for
from perception.io.runtime import check_ipc_free, resolve_endpoint
from perception.node import Node
from perception.node.metrics import NodeMetrics
from perception.node.view import FoxgloveView, ViewTopics
from perception.pipeline import Pipeline

__all__ = ["announce_when_ready", "cmd_run"]


def _pipeline(config: NodeConfig, model: str | None, config_given: bool) -> Pipeline:
    chosen = choose_camera_model(config, model, config_given=config_given, synthetic=False)
    return build_pipeline(chosen)


def _with_flags(config: NodeConfig, args: argparse.Namespace) -> NodeConfig:
    """`--foxglove [PORT]` and `--metrics [PORT]` turn the view and the metrics on (a negative
    port: the config's)."""
    view, metrics = config.view, config.metrics
    if args.foxglove is not None:
        port = view.port if args.foxglove < 0 else args.foxglove
        view = dataclasses.replace(view, foxglove=True, port=port)
    if args.metrics is not None:
        port = metrics.port if args.metrics < 0 else args.metrics
        metrics = dataclasses.replace(metrics, enabled=True, port=port)
    return dataclasses.replace(config, view=view, metrics=metrics)


#: Hosts that bind every interface: a port taken on one of them is taken on all.
_ANY_HOST = ("", "0.0.0.0", "::")


def _check_ports(config: NodeConfig) -> None:
    """Refuses the live view and the metrics on one port: the second to bind was refused as
    "Address already in use", which sent the user looking for another process holding it."""
    view, metrics = config.view, config.metrics
    if not (view.foxglove and metrics.enabled) or view.port != metrics.port or view.port == 0:
        return
    if view.host == metrics.host or view.host in _ANY_HOST or metrics.host in _ANY_HOST:
        raise PerceptionError(
            f"the live view ({view.host}) and the metrics ({metrics.host}) would both serve on "
            f"port {view.port}: give them different ports (--foxglove PORT and --metrics PORT, "
            "or view.port and metrics.port)"
        )


def _check_reachable(endpoint: str) -> str:
    """`endpoint` resolved (its runtime folder checked), refused if no other process can reach
    it."""
    resolved = resolve_endpoint(endpoint)
    check_reachable([endpoint])
    return resolved


def announce_when_ready(
    ready: threading.Event, done: threading.Event, line: Callable[[], str]
) -> None:
    """Prints `line()` once `ready` is set, unless `done` (the node has stopped) is set first.
    No deadline: the node is ready after its warm-up has made every engine bucket, which
    takes minutes where TensorRT builds its engines on first use, and a node ready after 60 s
    never said so (the bench, waiting for that line, gave up on a node that was serving)."""
    while not done.is_set():
        if ready.wait(0.1):
            if not done.is_set():
                print(line(), flush=True)
            return


def cmd_run(args: argparse.Namespace) -> int:
    config = _with_flags(load_node_config(args.config), args)
    _check_ports(config)
    # The runtime folder and the keys are checked (a bad one refused) before the model loads,
    # and so is an output endpoint another node holds.
    for endpoint in config.inputs.endpoints:
        _check_reachable(endpoint)
    check_ipc_free(_check_reachable(config.outputs.endpoint))
    node_curve = curve_keys_for(config.security)
    with contextlib.ExitStack() as served:
        # Bound before the model loads too: a port in use is one line, at once.
        view = None
        if config.view.foxglove:
            view = FoxgloveView(config.view, ViewTopics.from_config(config), name="perception run")
            view.start()
            served.callback(view.close)
            print(f"perception run: live view on {view.url} (Foxglove WebSocket)", flush=True)
        metrics = None
        if config.metrics.enabled:
            metrics = NodeMetrics(config.metrics, None if view is None else view.stats)
            metrics.start()
            served.callback(metrics.close)
            print(f"perception run: metrics on {metrics.url}", flush=True)
        return _serve(config, args, node_curve, view, metrics)


def _serve(
    config: NodeConfig,
    args: argparse.Namespace,
    node_curve: CurveKeys | None,
    view: FoxgloveView | None,
    metrics: NodeMetrics | None,
) -> int:
    pipeline = _pipeline(config, args.model, args.config is not None)
    default_rig = None
    if config.rig is not None:
        default_rig = load_rig(Path(config.rig).expanduser())
        for warning in default_rig.warnings:
            print(f"perception run: warning: {warning}", flush=True)
    for line in pipeline.describe_engines():
        print(f"perception run: engine {line}", flush=True)
    # The pipeline's notes (fallbacks, closed thresholds) are logged where they are made.
    node = Node(config, pipeline, default_rig, curve=node_curve, view=view, metrics=metrics)
    stop = stop_on_signals()
    done = threading.Event()

    def ready_line() -> str:
        inputs = ", ".join(resolve_endpoint(e) for e in config.inputs.endpoints)
        curve = "" if node_curve is None else "; CURVE on tcp endpoints"
        return (
            f"perception run: ready; inputs {inputs}; detections on "
            f"{node.output_endpoint or resolve_endpoint(config.outputs.endpoint)} "
            f"[{config.outputs.detections_topic}]{curve}"
        )

    threading.Thread(
        target=announce_when_ready, args=(node.ready, done, ready_line), daemon=True
    ).start()
    try:
        node.run(stop)
    finally:
        done.set()
    c = node.counters
    refused = (
        ""
        if node_curve is None
        else f", {c.rejected_publishers + c.rejected_subscribers} handshakes refused"
    )
    shown = "" if view is None else f", {view.stats.dropped} view frames dropped"
    print(
        f"perception run: stopped; {c.published} published, {c.skipped_bundles} skipped, "
        f"{c.decode_errors} undecodable, {c.step_errors} failed{refused}{shown}",
        flush=True,
    )
    return 0
