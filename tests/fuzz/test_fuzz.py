"""The fuzz harness in the normal suite: a few thousand fuzzed messages through the node core's
whole path (decode -> synchroniser -> pipeline step -> encode) with every invariant of
tests.fuzz.harness checked, from the seeded generator the long run uses
(`python -m tests.fuzz --cases 1000000`) and from hypothesis (which shrinks a failure to a
short case). Failures are crashes, hangs, miscounts, slow cases and unpublishable outputs;
exceptions the core guards (a synchroniser or pipeline error, counted by the core) are
findings for the layers below, listed, not failed on."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.models import build_pipeline
from perception.config import NodeConfig
from perception.msgs import wire
from perception.msgs.types import LidarSweep
from perception.pipeline import Pipeline
from tests.fuzz.cases import Case
from tests.fuzz.corpus import Corpus, build_corpus
from tests.fuzz.harness import NOTED, FuzzHarness, default_config
from tests.fuzz.sources import HypothesisSource, RandomSource
from tests.fuzz.wire_mutations import START_NS

pytestmark = [
    pytest.mark.slow,
    # Hostile values overflow numpy arithmetic (a rig rotation of 1e300): warnings expected.
    pytest.mark.filterwarnings("ignore::RuntimeWarning"),
]

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def config() -> NodeConfig:
    return default_config()


@pytest.fixture(scope="module")
def corpus(config: NodeConfig, kitti_dir: Path) -> Corpus:
    return build_corpus(config, kitti_dir)


@pytest.fixture(scope="module")
def pipeline(config: NodeConfig) -> Pipeline:
    return build_pipeline(config)


def _failures(harness: FuzzHarness) -> str:
    return "\n".join(
        f"{f.kind} x{f.count} at case {f.case}: {f.where}: {f.detail} ({f.label})"
        for f in harness.failures()
    )


def test_fuzzed_messages_through_the_whole_path(
    pipeline: Pipeline, corpus: Corpus, config: NodeConfig
) -> None:
    # Four cores of 1000 messages (the fourth with ApproximateTime), a step every ~100.
    harness = FuzzHarness(
        pipeline, corpus, config, seed=13, step_every=100, episode_cases=1000, rss_every=0
    )
    cases = 4000
    harness.run(RandomSource(13), cases)
    harness.end_episode()
    t = harness.tally
    assert not harness.failures(), _failures(harness)
    assert t.cases == cases and t.accounted() == cases
    # The generator reaches every outcome, and the pipeline runs on what comes through.
    assert 0.2 * cases < t.decode_errors < 0.6 * cases
    assert set(t.accepted) == {"CameraFrame", "LidarSweep", "GnssFix", "RigMessage"}
    assert {"duplicate_messages", "late_messages", "not_inputs", "bad_rigs"} <= set(t.refused)
    # Since the decode bounds refuse more, fewer bundles complete (seed 13: 14 published).
    assert t.steps >= 25 and t.published >= 10 and t.detections > 0
    assert t.bundles == t.skipped_bundles + t.published + t.step_errors + t.unprocessed
    assert t.episodes == 5 and t.diagnostics >= 4


@pytest.fixture(scope="module")
def strict_harness(pipeline: Pipeline, corpus: Corpus, config: NodeConfig) -> FuzzHarness:
    return FuzzHarness(pipeline, corpus, config, step_every=8, rss_every=0, strict=True)


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_hypothesis_fuzzed_vehicles(strict_harness: FuzzHarness, data: st.DataObject) -> None:
    # Each example is a vehicle from its start on a fresh core: a failure (FindingError)
    # replays and shrinks.
    harness = strict_harness
    harness.reset()
    source = HypothesisSource(data)
    for _ in range(data.draw(st.integers(1, 12))):
        harness.run_case(source)
    harness.end_episode()


def test_an_uncounted_message_is_found(
    pipeline: Pipeline, corpus: Corpus, config: NodeConfig
) -> None:
    # A sweep filed into the core behind the harness's back: the episode's accounting of
    # accepted sweeps no longer adds up.
    harness = FuzzHarness(pipeline, corpus, config, step_every=10**6, rss_every=0)
    harness.run(RandomSource(1), 20)
    sweep = corpus.scenes[0].sweep
    # Stamped as it is received: a plausible sweep, which the synchroniser takes.
    now_ns = harness.generator.last_receive_ns
    harness.core.on_frames(sweep.frames(now_ns - 10**6, 1), now_ns)
    harness.end_episode()
    assert "sweeps accounted" in [f.where for f in harness.failures()]


def test_a_failed_step_is_reported_with_its_exception(
    pipeline: Pipeline, corpus: Corpus, config: NodeConfig
) -> None:
    # A sweep in a frame the rig does not hold cannot be moved to the vehicle frame: the
    # pipeline drops the whole sweep (counted by the core).
    harness = FuzzHarness(pipeline, corpus, config, step_every=1, rss_every=0, approximate_every=0)
    scene = next(s for s in corpus.scenes if s.source == "synthetic")
    stamp = START_NS
    _, sweep = wire.decode(scene.sweep.frames(stamp, 1))
    assert isinstance(sweep, LidarSweep)
    astray = dataclasses.replace(
        sweep, header=dataclasses.replace(sweep.header, frame_id="lidar/nowhere")
    )
    for frames in (scene.rig.frames(stamp, 1), list(wire.encode(astray))):
        harness.run_frames(Case(frames, stamp + 10**8, "test"))
    harness.end_episode()
    assert not harness.failures(), _failures(harness)
    (finding,) = harness.findings.values()
    assert finding.kind == "step_error" and finding.kind in NOTED
    assert finding.where.startswith("CalibrationError at calibration/rig.py")
    assert "lidar/nowhere" in finding.detail
    assert harness.tally.step_errors == 1


def test_the_long_run_command(tmp_path: Path) -> None:
    out = tmp_path / "report"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = subprocess.run(
        [sys.executable, "-m", "tests.fuzz", "--cases", "400", "--out", str(out), "--quiet"],
        check=False,
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=170,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    doc = json.loads((out / "fuzz.json").read_text())
    assert doc["cases"] == 400 and doc["crashes"] == 0 and doc["hangs"] == 0
    assert doc["every_message_counted"] is True
    assert "| every message counted | yes" in (out / "fuzz.md").read_text()
    assert "every message counted" in run.stdout
