"""The fuzz run's report: fuzz.json (every figure and finding), fuzz.md (the summary table) and
one reproducer file per finding (`findings/NN-kind.msgpack`: the message's frames, its label,
the seed and the case index, and for a finding of a pipeline step the bundle, pickled;
`python -m tests.fuzz --replay FILE` feeds the message to a fresh core, or the bundle to the
pipeline). The generator is deterministic: `--seed S --cases N+1` runs up to case N again."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgpack
import numpy as np

from tests.fuzz.harness import NOTED, Finding, FuzzHarness

__all__ = ["format_markdown", "read_reproducer", "report_document", "rss_figures", "write_report"]

# What a finding that is not a failure is.
_NOTES = {
    "sync_error": " (guarded by the core: counted as sync_errors)",
    "step_error": " (guarded by the core: counted as step_errors)",
    "stalled_output": " (the node's behaviour: no output until sweeps pass a stamp)",
}
assert set(_NOTES) == NOTED


def rss_figures(samples: list[tuple[int, int]]) -> dict[str, Any]:
    """RSS in MB: the first, max and last sample; the medians of the second and the last
    quarter of the run (the first quarter is warm-up: every kind of input met, the allocator's
    pools grown to the largest messages) and the growth between them; the least-squares trend
    over the second half, in MB per 100,000 cases. Single samples swing by tens of MB with the
    size of the messages in flight: medians and a trend tell a leak from that."""
    if not samples:
        return {"samples": 0}
    cases = np.array([c for c, _ in samples], dtype=np.float64)
    mb = np.array([r / 1e6 for _, r in samples], dtype=np.float64)
    n = len(mb)
    second = float(np.median(mb[n // 4 : max(n // 4 + 1, n // 2)]))
    last = float(np.median(mb[3 * n // 4 :]))
    half = slice(n // 2, n)
    trend = float(np.polyfit(cases[half], mb[half], 1)[0]) * 1e5 if n - n // 2 >= 2 else 0.0
    return {
        "samples": n,
        "first_mb": round(float(mb[0]), 1),
        "max_mb": round(float(mb.max()), 1),
        "last_mb": round(float(mb[-1]), 1),
        "second_quarter_median_mb": round(second, 1),
        "last_quarter_median_mb": round(last, 1),
        "growth_after_warm_up_pct": round(100.0 * (last - second) / second, 2),
        "trend_second_half_mb_per_100k_cases": round(trend, 2),
        "series": [(int(c), round(float(v), 1)) for c, v in zip(cases, mb, strict=True)],
    }


def report_document(
    harness: FuzzHarness,
    *,
    engine: str,
    seed: int,
    wall_s: float,
    hangs: int = 0,
    log_records: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """Every figure of a run and its findings (without their frames)."""
    t = harness.tally
    findings = list(harness.findings.values())
    failures = [f for f in findings if f.kind not in NOTED]
    crashes = sum(f.count for f in failures if f.kind == "crash")
    miscounted = sum(f.count for f in failures if f.kind == "miscount")
    return {
        "version": 1,
        "engine": engine,
        "seed": seed,
        "cases": t.cases,
        "wall_s": round(wall_s, 1),
        "cases_per_s": round(t.cases / wall_s, 1) if wall_s > 0 else None,
        "crashes": crashes,
        "hangs": hangs,
        "failures": sum(f.count for f in failures),
        "every_message_counted": t.accounted() == t.cases and miscounted == 0,
        "accounting": {
            "received": t.cases,
            "decode_errors": t.decode_errors,
            "refused": dict(sorted(t.refused.items())),
            "sync_errors": t.sync_errors,
            "accepted": dict(sorted(t.accepted.items())),
            "accounted": t.accounted(),
        },
        "worker": {
            "bundles": t.bundles,
            "steps": t.steps,
            "published": t.published,
            "skipped_bundles": t.skipped_bundles,
            "step_errors": t.step_errors,
            "not_handed_over": t.unprocessed,
            "stalled_steps": t.stalled_steps,
            "pipeline_steps_of_the_harness": t.shadow_steps,
            "detections": t.detections,
            "degraded_outputs": t.degraded_outputs,
            "diagnostics_encoded": t.diagnostics,
            "step_mean_ms": round(1e3 * t.step_s / (t.steps + t.shadow_steps), 1)
            if t.steps + t.shadow_steps
            else None,
            "step_max_ms": round(1e3 * t.max_step_s, 1),
            "slowest_step": t.slowest_step,
        },
        "receive": {
            "mean_us": round(1e6 * t.receive_s / t.cases, 1) if t.cases else None,
            "max_ms": round(1e3 * t.max_receive_s, 1),
            "slowest": t.slowest_receive,
        },
        "episodes": t.episodes,
        "rss": rss_figures(t.rss),
        "log_records": dict(log_records or {}),
        "settings": {
            "step_every": harness.step_every,
            "episode_cases": harness.episode_cases,
            "approximate_every": harness.approximate_every,
            "receive_limit_s": harness.receive_limit_s,
            "step_limit_s": harness.step_limit_s,
            "max_points": harness.config.limits.max_points,
        },
        "findings": [f.summary() for f in findings],
    }


def format_markdown(doc: Mapping[str, Any]) -> str:
    """fuzz.md: the summary table, then the findings."""
    a, w, rss = doc["accounting"], doc["worker"], doc["rss"]
    refused = ", ".join(f"{k} {v}" for k, v in a["refused"].items()) or "none"
    accepted = ", ".join(f"{k} {v}" for k, v in a["accepted"].items()) or "none"
    rows = [
        ("engine", f"{doc['engine']}, seed {doc['seed']}"),
        ("cases", f"{doc['cases']:,} in {doc['wall_s']:.0f} s ({doc['cases_per_s']} cases/s)"),
        ("crashes / hangs / failures", f"{doc['crashes']} / {doc['hangs']} / {doc['failures']}"),
        (
            "every message counted",
            f"{'yes' if doc['every_message_counted'] else 'NO'}: {a['accounted']:,} of "
            f"{a['received']:,} (undecodable {a['decode_errors']:,}; refused: {refused}; "
            f"synchroniser errors {a['sync_errors']}; accepted: {accepted})",
        ),
        (
            "worker",
            f"{w['bundles']:,} bundles: {w['steps']:,} steps, {w['published']:,} published, "
            f"{w['skipped_bundles']:,} skipped, {w['step_errors']} step errors, "
            f"{w['not_handed_over']} not handed over; {w['stalled_steps']:,} steps with the "
            f"output stalled; {w['pipeline_steps_of_the_harness']:,} bundles the core skipped as "
            f"stale stepped by the harness; {w['detections']:,} detections; "
            f"step mean {w['step_mean_ms']} ms, max {w['step_max_ms']} ms",
        ),
        (
            "receive side",
            f"mean {doc['receive']['mean_us']} µs per message, max {doc['receive']['max_ms']} ms",
        ),
        (
            "episodes",
            f"{doc['episodes']} cores of {doc['settings']['episode_cases']:,} messages at most"
            + (
                f" (ApproximateTime every {doc['settings']['approximate_every']}th)"
                if doc["settings"]["approximate_every"]
                else ""
            ),
        ),
    ]
    if rss.get("samples"):
        rows.append(
            (
                "RSS",
                f"{rss['first_mb']} MB first, {rss['max_mb']} MB max, {rss['last_mb']} MB last; "
                f"median {rss['second_quarter_median_mb']} MB in the second quarter of the run, "
                f"{rss['last_quarter_median_mb']} MB in the last "
                f"({rss['growth_after_warm_up_pct']:+}%); trend over the second half "
                f"{rss['trend_second_half_mb_per_100k_cases']:+} MB per 100k cases",
            )
        )
    lines = ["| figure | value |", "| --- | --- |"]
    lines += [f"| {k} | {v.replace('|', '/')} |" for k, v in rows]
    findings = doc["findings"]
    lines += ["", f"Findings: {len(findings)} distinct" + (":" if findings else ".")]
    for f in findings:
        kind = f["kind"] + _NOTES.get(f["kind"], "")
        lines.append(
            f"- {kind}, {f['count']}x, first at case {f['case']}: {f['where']}: "
            f"{f['detail'][:300]} (case: {f['label'][:300]})"
        )
    return "\n".join(lines) + "\n"


def write_report(out_dir: Path, doc: Mapping[str, Any], findings: list[Finding]) -> Path:
    """fuzz.json, fuzz.md and the reproducers into `out_dir` (created); the Markdown's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "fuzz.json").write_text(json.dumps(doc, indent=1, allow_nan=False) + "\n")
    md = out_dir / "fuzz.md"
    md.write_text(format_markdown(doc))
    folder = out_dir / "findings"
    for i, f in enumerate(findings):
        if f.frames is None:
            continue
        folder.mkdir(exist_ok=True)
        doc_f = {**f.summary(), "seed": doc["seed"], "frames": f.frames, "bundle": f.bundle}
        (folder / f"{i:02d}-{f.kind}.msgpack").write_bytes(msgpack.packb(doc_f, use_bin_type=True))
    return md


def read_reproducer(path: Path) -> dict[str, Any]:
    """A reproducer file: the finding's summary, the seed, `frames` (list of bytes: the
    message of the case) and `bundle` (None, or the pickled SyncedBundle a step was about)."""
    doc: dict[str, Any] = msgpack.unpackb(path.read_bytes(), raw=False)
    return doc
