"""`perception train` on hostile input: every mistake in the training config, the checkpoint
to resume or the output folder is one line on stderr naming the file and the key, exit 2,
before any sample is prepared (the run logs its sample counts on stderr once prepared, so one
line also says nothing was). In-process through `main`, on real files."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.cli import main
from tests.app.one_line import fails

torch = pytest.importorskip("torch")

#: A config that trains (one short synthetic drive, no camera): each test breaks one thing.
VALID: dict[str, Any] = {
    "data": {"train": [{"kind": "synthetic", "seeds": [1], "seconds": 0.1}]},
    "camera": {"model": "none"},
}


def _config(tmp_path: Path, **changes: Any) -> Path:
    doc = {**VALID, **changes}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


def _train(capsys: pytest.CaptureFixture[str], config: Path, out: Path, *extra: str) -> str:
    return fails(capsys, "train", str(config), "--out", str(out), "--quiet", *extra)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"train": {"lr": float("inf")}}, "train: train.lr must be a number in (0, 1], got inf"),
        ({"train": {"lr": float("nan")}}, "train: train.lr must be a number in (0, 1], got nan"),
        ({"train": {"weight_decay": -0.1}}, "train: train.weight_decay must be a number in [0, 1]"),
        ({"train": {"threads": 100000}}, "train: train.threads must be an integer from 1 to 256"),
        ({"train": {"batch": 10**9}}, "train: train.batch must be an integer from 1 to 256"),
        ({"train": {"steps": 10**12}}, "train: train.steps must be an integer from 1 to"),
        ({"seed": 99999999999999999999999}, "seed must be an integer from 0 to 4,294,967,295"),
        ({"seed": -1}, "seed must be an integer from 0 to 4,294,967,295, got -1"),
        ({"model": {"max_pillars": 999999999999}}, "model: learned fusion max_pillars must be"),
        ({"model": {"points_per_pillar": 10**9}}, "model: learned fusion points_per_pillar must"),
        ({"model": {"pillar_m": 1e-9}}, "model: learned fusion grid of"),
        ({"model": {"pillar_m": float("inf")}}, "model: learned fusion pillar_m must be a finite"),
        ({"model": {"channels": [0, 8]}}, "model: learned fusion channels must be an integer"),
        ({"augment": {"scale": [1.05, 0.95]}}, "augment: augment.scale must be [low, high] with"),
        ({"augment": {"scale": [0.9]}}, "augment: augment.scale must be a [low, high] pair"),
        ({"augment": {"rotate_deg": float("nan")}}, "augment: augment.rotate_deg must be a"),
        ({"augment": {"flip_y": 2}}, "augment: augment.flip_y must be a probability in [0, 1]"),
        ({"dropout": {"object_keep": [0.4, 0.1]}}, "dropout: dropout.object_keep must be [low,"),
        ({"dropout": {"beams": float("inf")}}, "dropout: dropout.beams must be a probability"),
        ({"camera": {"score_threshold": float("nan")}}, "camera: camera.score_threshold must"),
        ({"camera": {"kind": "yolo9"}}, "camera: camera.kind must be auto or one of"),
        (
            {"gt_sampling": {"counts": {"Car": 10**9}}},
            "gt_sampling: gt_sampling.counts.Car must be an integer",
        ),
        (
            {
                "data": {
                    "train": [{"kind": "synthetic", "seeds": {"start": 0, "count": 99999999999}}]
                }
            },
            "data.train: training source synthetic: seeds: count must be an integer from 1 to "
            "100,000",
        ),
        (
            {"data": {"train": [{"kind": "synthetic", "seeds": [2**40]}]}},
            "data.train: training source synthetic: seeds: each must be an integer from 0 to "
            "4,294,967,295",
        ),
        (
            {"data": {"train": [{"kind": "synthetic", "seeds": [1], "seconds": 1e9}]}},
            "data.train: training source synthetic: seconds must be > 0 and at most 3600",
        ),
        (
            {"data": {"train": VALID["data"]["train"], "val": [{"kind": "synthetic"}]}},
            "data.val: training source synthetic: missing key seeds",
        ),
    ],
)
def test_a_bad_value_is_one_line_naming_the_file_and_key(
    changes: dict[str, Any], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path, **changes)
    err = _train(capsys, config, tmp_path / "run")
    assert f"{config}: {message}" in err, err
    assert not (tmp_path / "run").exists()


def test_steps_above_the_bound_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = _train(capsys, _config(tmp_path), tmp_path / "run", "--steps", str(10**12))
    assert f"--steps {10**12}: train.steps must be an integer from 1 to 10,000,000" in err


def test_a_deeply_nested_config_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "deep.yaml"
    config.write_text("a: " + "[" * 10_000 + "]" * 10_000 + "\n", encoding="utf-8")
    err = _train(capsys, config, tmp_path / "run")
    assert err.endswith(f"{config}: not valid YAML (nests too deep)"), err


def test_a_date_python_refuses_is_one_line_naming_the_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "date.yaml"
    config.write_text("seed: 2001-02-30\n", encoding="utf-8")
    err = _train(capsys, config, tmp_path / "run")
    assert err.endswith(f"{config}: not valid YAML value (day is out of range for month)"), err


def test_resume_without_a_checkpoint_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    err = _train(capsys, _config(tmp_path), out, "--resume")
    assert err.endswith(
        f"nothing to resume: no checkpoint in {out / 'checkpoints'} (train without --resume "
        "to start a run)"
    ), err
    assert not out.exists()


@pytest.mark.parametrize("content", ["garbage", "pickle header", "truncated", "a list"])
def test_resume_from_a_damaged_checkpoint_names_it(
    content: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = tmp_path / "run" / "checkpoints" / "last.pt"
    ckpt.parent.mkdir(parents=True)
    if content == "garbage":
        ckpt.write_bytes(bytes(range(256)) * 4)
    elif content == "pickle header":  # torch warns about it before failing
        ckpt.write_bytes(b"\x80\x04not a pickle")
    elif content == "truncated":
        torch.save({"step": 1, "model": {"w": torch.zeros(10_000)}}, ckpt)
        ckpt.write_bytes(ckpt.read_bytes()[:20_000])
    else:
        torch.save([1, 2], ckpt)
    before = ckpt.read_bytes()
    err = _train(capsys, _config(tmp_path), tmp_path / "run", "--resume")
    assert f"{ckpt}: not a " in err and "training checkpoint" in err, err
    assert ckpt.read_bytes() == before


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
def test_an_output_folder_that_cannot_be_made_is_refused_up_front(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = _train(capsys, _config(tmp_path), Path("/proc/perception-train-test"))
    assert err.endswith("/proc/perception-train-test: cannot create the folder (No such file or "
                        "directory)"), err  # fmt: skip


def test_a_source_that_fails_when_opened_leaves_no_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--out is made to check it, then removed again: the KITTI folder is only looked for when
    the sources are opened."""
    config = _config(tmp_path, data={"train": [{"kind": "kitti", "root": "nowhere"}]})
    out = tmp_path / "a" / "b" / "run"
    err = _train(capsys, config, out)
    assert "training source kitti: KITTI folder" in err and "nowhere does not exist" in err, err
    assert not (tmp_path / "a").exists()


def test_a_config_among_the_run_files_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A config named as the export's model config, in --out: the run's end replaced it with
    the model's description, and the config was lost."""
    run = tmp_path / "run"
    run.mkdir()
    config = run / "learned_fusion.yaml"
    config.write_text(yaml.safe_dump(VALID), encoding="utf-8")
    before = config.read_bytes()
    # Also through a link, and through another spelling of the folder.
    link = tmp_path / "cfg.yaml"
    link.symlink_to(config)
    for given, out in ((config, run), (link, run / ".." / "run")):
        err = _train(capsys, given, out)
        assert err == (
            f"perception train: error: {given}: the training config is "
            f"{out / 'learned_fusion.yaml'}, which the run writes: it would be replaced; move it "
            "or choose another --out"
        )
    assert config.read_bytes() == before
    assert sorted(p.name for p in run.iterdir()) == ["learned_fusion.yaml"]


def test_an_empty_out_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--out ""` (an unset variable) named the current folder, which got the run's files."""
    monkeypatch.chdir(tmp_path)
    config = _config(tmp_path, train={"steps": 1, "threads": 1})
    err = fails(capsys, "train", str(config), "--out", "", "--quiet")
    assert err == (
        "perception train: error: --out is empty (an unset shell variable?): give it a value"
    )
    assert [p.name for p in tmp_path.iterdir()] == ["cfg.yaml"]


def _tiny(tmp_path: Path, steps: int = 2) -> Path:
    return _config(tmp_path, train={"steps": steps, "threads": 1, "checkpoint_every": 1})


def test_resuming_a_finished_run_keeps_its_loss_and_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Resumed at its end (to finish an export a Ctrl-C stopped), a run takes no step: it
    reported loss nan, wrote nan as the final loss over the real one, and logged its final
    validation twice. Resumed with other --steps, the refusal named no setting ("another
    config"), so the file looked wrong rather than the option."""
    config, out = _tiny(tmp_path), tmp_path / "run"
    assert main(["train", str(config), "--out", str(out), "--quiet"]) == 0
    first = capsys.readouterr().out
    meta = yaml.safe_load((out / "learned_fusion.yaml").read_text(encoding="utf-8"))
    loss = meta["trained"]["final_loss"]
    log = (out / "metrics.jsonl").read_text(encoding="utf-8")
    assert main(["train", str(config), "--out", str(out), "--quiet", "--resume"]) == 0
    again = capsys.readouterr().out
    assert f"loss {loss:.3f}" in first.splitlines()[0] and f"loss {loss:.3f}" in again, again
    # It said "trained 2 steps ... (this run)" of the resumed run, which took none.
    assert re.fullmatch(r"trained 2 steps in \d+ s \(steps \d+\.\d s\), loss .*",
                        first.splitlines()[0]), first  # fmt: skip
    assert again.splitlines()[0].startswith(
        "resumed at step 2 of 2: the run had finished, no step trained (exported in "
    ), again
    meta = yaml.safe_load((out / "learned_fusion.yaml").read_text(encoding="utf-8"))
    assert meta["trained"]["final_loss"] == loss
    assert (out / "metrics.jsonl").read_text(encoding="utf-8") == log
    err = _train(capsys, config, out, "--resume", "--steps", "5")
    assert err.endswith(
        f"{out / 'checkpoints' / 'last.pt'}: the checkpoint was trained with another config "
        "(train.steps: 2 in the checkpoint, 5 now); resume with the config it was started "
        "with, or start a new output folder"
    ), err


def test_a_second_run_into_the_same_folder_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two runs into one folder trained side by side, appending to one metrics log and
    replacing each other's checkpoint, until one failed on the other's temporary file
    (`last.pt.tmp: No such file or directory`)."""
    config, out = _tiny(tmp_path, steps=100_000), tmp_path / "run"
    first = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "train", str(config), "--out", str(out), "--quiet"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not (out / "checkpoints" / "last.pt").exists():
            assert first.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        err = _train(capsys, config, out, "--resume")
        assert err == (
            f"perception train: error: {out}: another training run is writing into this "
            "folder; wait for it to end or choose another --out"
        )
        assert first.poll() is None
    finally:
        first.send_signal(signal.SIGINT)
        assert first.wait(timeout=60) == 130


def test_a_folder_where_a_run_file_goes_is_refused_up_front(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A folder named curves.png (or learned_fusion.onnx) in --out failed the run at its end,
    after every step."""
    out = tmp_path / "run"
    (out / "curves.png").mkdir(parents=True)
    err = _train(capsys, _tiny(tmp_path), out)
    assert err == (
        f"perception train: error: {out / 'curves.png'}: is a folder, where the training run "
        "writes a file; move it away"
    )
    assert [p.name for p in out.iterdir()] == ["curves.png"]


def _one_step(tmp_path: Path, **changes: Any) -> Path:
    """A config of one step: where old code trained instead of refusing, it did so briefly."""
    return _config(tmp_path, train={"steps": 1, "threads": 1}, **changes)


def test_an_out_holding_a_runs_files_is_refused_without_resume(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Only a checkpoint was looked for: a folder holding a model, a metrics log or curves
    (kept from an earlier run, or the user's) had them replaced without a word."""
    from engines.fusion.learned_config import LearnedFusionConfig
    from replay.training.train_fusion import run_files

    config = _one_step(tmp_path)
    for i, path in enumerate(run_files(tmp_path / "run", LearnedFusionConfig())):
        out = tmp_path / f"run{i}"
        held = out / path.relative_to(tmp_path / "run")
        held.parent.mkdir(parents=True)
        held.write_text("PRECIOUS", encoding="utf-8")
        name = held.relative_to(out)
        advice = (
            "--resume continues its run, or choose another --out"
            if name == Path("checkpoints", "last.pt")
            else "a run would replace them; move them away, or choose another --out"
        )
        err = _train(capsys, config, out)
        assert err == (
            f"perception train: error: {out}: holds a training run's files already ({name}); "
            f"{advice}"
        )
        assert held.read_text(encoding="utf-8") == "PRECIOUS"
        assert [p for p in out.rglob("*") if p.is_file()] == [held]


@pytest.mark.parametrize("classes", [["car"], ["Car", "Banana"]])
def test_a_head_class_no_source_labels_is_refused(
    classes: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A head class the sources never label trained a model that could never detect it."""
    config = _one_step(tmp_path, model={"classes": classes})
    err = _train(capsys, config, tmp_path / "run")
    assert err.endswith(
        f"{config}: model.classes: {classes[-1]!r} is not a class the training sources label "
        "(known: Car, Pedestrian, Cyclist)"
    ), err
    assert not (tmp_path / "run").exists()


def test_workers_without_a_ray_address_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--workers alone was ignored: the run trained in one process."""
    err = _train(capsys, _one_step(tmp_path), tmp_path / "run", "--workers", "3")
    assert err == (
        "perception train: error: --workers does nothing for a run without --ray-address "
        "(it sets the Ray Train workers)"
    )
    assert not (tmp_path / "run").exists()


def test_the_summary_says_what_this_run_trained_and_how_long_it_took() -> None:
    """A run resumed partway said it trained all the steps; one on Ray Train gave the
    workers' step time (0 s) for a run of 22 s."""
    from app.commands.train import _summary
    from replay.training.train_fusion import TrainResult

    def result(resumed_at: int) -> TrainResult:
        return TrainResult(4, 0.4, 1.0, {}, Path("m.onnx"), Path("last.pt"), resumed_at)

    assert _summary(result(0), 22.0) == "trained 4 steps in 22 s (steps 0.4 s), loss 1.000"
    assert _summary(result(1), 22.0) == (
        "resumed at step 1 of 4: trained 3 steps in 22 s (steps 0.4 s), loss 1.000"
    )
    assert _summary(result(4), 9.0) == (
        "resumed at step 4 of 4: the run had finished, no step trained (exported in 9 s), "
        "loss 1.000"
    )
