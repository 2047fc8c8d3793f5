"""`perception run`: the on-vehicle node."""

from __future__ import annotations

import argparse
import threading
from pathlib import Path

from app.common import load_node_config, stop_on_signals
from app.models import build_pipeline, choose_camera_model
from calibration import load_rig
from perception.config import NodeConfig
from perception.io.curve import curve_keys_for
from perception.io.runtime import resolve_endpoint
from perception.node import Node
from perception.pipeline import Pipeline

__all__ = ["cmd_run"]


def _pipeline(config: NodeConfig, model: str | None, config_given: bool) -> Pipeline:
    chosen = choose_camera_model(config, model, config_given=config_given, synthetic=False)
    return build_pipeline(chosen)


def cmd_run(args: argparse.Namespace) -> int:
    config = load_node_config(args.config)
    # The runtime folder and the keys are checked (a bad one refused) before the model loads.
    for endpoint in (*config.inputs.endpoints, config.outputs.endpoint):
        resolve_endpoint(endpoint)
    node_curve = curve_keys_for(config.security)
    pipeline = _pipeline(config, args.model, args.config is not None)
    default_rig = None
    if config.rig is not None:
        default_rig = load_rig(Path(config.rig).expanduser())
        for warning in default_rig.warnings:
            print(f"perception run: warning: {warning}", flush=True)
    for line in pipeline.describe_engines():
        print(f"perception run: engine {line}", flush=True)
    for note in pipeline.notes:
        print(f"perception run: warning: {note}", flush=True)
    node = Node(config, pipeline, default_rig, curve=node_curve)
    stop = stop_on_signals()
    done = threading.Event()

    def announce() -> None:
        if node.ready.wait(60.0) and not done.is_set():
            inputs = ", ".join(resolve_endpoint(e) for e in config.inputs.endpoints)
            curve = "" if node_curve is None else "; CURVE on tcp endpoints"
            print(
                f"perception run: ready; inputs {inputs}; detections on "
                f"{resolve_endpoint(config.outputs.endpoint)} "
                f"[{config.outputs.detections_topic}]{curve}",
                flush=True,
            )

    threading.Thread(target=announce, daemon=True).start()
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
    print(
        f"perception run: stopped; {c.published} published, {c.skipped_bundles} skipped, "
        f"{c.decode_errors} undecodable, {c.step_errors} failed{refused}",
        flush=True,
    )
    return 0
