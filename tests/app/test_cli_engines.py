"""`perception run` with engines that cannot run here: one line naming the setting, exit 2."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from app.cli import main
from engines import tensorrt_backend
from engines.factory import list_engines
from tests.app.one_line import fails
from tests.engines.fake_tensorrt import install


def test_run_without_tensorrt_says_so_in_one_line(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    yolox_path: Path,
) -> None:
    monkeypatch.setattr(tensorrt_backend, "_trt", None)
    monkeypatch.setattr(tensorrt_backend, "_IMPORT_PROBLEM", "import tensorrt failed: simulated")
    config = tmp_path / "node.yaml"
    config.write_text(
        f"camera_model: {{path: {yolox_path}}}\nengines: {{backend: tensorrt, device: cuda}}\n"
    )
    code = main(["run", "--config", str(config)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err == (
        "perception run: error: engines.backend tensorrt: TensorRT 10 is not installed (import "
        "tensorrt failed: simulated); set engines.fallback: onnxruntime to run ONNX Runtime on "
        "the CPU instead"
    )


def test_run_with_a_bad_engines_key_names_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config = tmp_path / "node.yaml"
    config.write_text("engines: {backend: tensorrt, precision: fp8}\n")
    assert main(["run", "--config", str(config)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"perception run: error: {config}: engines.precision: must be one of")


@pytest.fixture
def fake_tensorrt(monkeypatch: pytest.MonkeyPatch) -> None:
    """TensorRT's boundary faked (tests/engines/fake_tensorrt.py): our build, cache and CLI run."""
    install(monkeypatch)


def test_engines_build_takes_any_onnx_file_name(
    capsys: pytest.CaptureFixture[str], fake_tensorrt: None, tmp_path: Path, yolox_path: Path
) -> None:
    """The cache names entries after the file, letters, digits and `_.+-` only: a file named
    `front camera.onnx` could not be built ("engine cache: model name 'front camera' must
    be ...")."""
    model = tmp_path / "front camera.onnx"
    shutil.copyfile(yolox_path, model)
    cache = tmp_path / "engines"
    assert main(["engines", "build", str(model), "--cache-dir", str(cache), "--quiet"]) == 0
    assert "front camera: built fp16 engine" in capsys.readouterr().out
    [entry] = list_engines(cache)
    assert entry.name == "front_camera"


def test_engines_build_int8_names_the_option_it_needs(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, yolox_path: Path, kitti_dir: Path
) -> None:
    """The library's message named "an existing calibration cache", which the command has no
    option for; --calibration-images without int8 was ignored without a word."""
    build = ["engines", "build", "--cache-dir", str(tmp_path / "engines")]
    images = ["--calibration-images", str(kitti_dir / "image_2")]
    assert fails(capsys, *build, str(yolox_path), "--precision", "int8") == (
        "perception engines build: error: --precision int8 needs --calibration-images DIR "
        "(recorded camera images to calibrate with)"
    )
    assert fails(capsys, *build, str(yolox_path), *images) == (
        "perception engines build: error: --calibration-images is for --precision int8 only"
    )
    assert fails(capsys, *build, "lidar_encoder", "--precision", "int8", *images).startswith(
        "perception engines build: error: lidar_encoder: --calibration-images calibrates a "
        "camera detector, and this model is not one ("
    )
    assert not (tmp_path / "engines").exists()


def test_engines_build_refuses_an_unreadable_calibration_image(
    capsys: pytest.CaptureFixture[str],
    fake_tensorrt: None,
    tmp_path: Path,
    yolox_path: Path,
    kitti_dir: Path,
) -> None:
    """TensorRT takes an error raised while it asks for a batch for the end of the data: an
    engine calibrated on the images before the bad one was built and cached without a word."""
    images = tmp_path / "images"
    images.mkdir()
    for path in sorted((kitti_dir / "image_2").glob("*.png"))[:2]:
        shutil.copyfile(path, images / path.name)
    (images / "zz_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    cache = tmp_path / "engines"
    err = fails(
        capsys, "engines", "build", str(yolox_path), "--precision", "int8",
        "--calibration-images", str(images), "--cache-dir", str(cache), "--quiet",
    )  # fmt: skip
    assert err == (
        f"perception engines build: error: {images / 'zz_broken.png'}: image is not a readable "
        "image"
    )
    assert list_engines(cache) == []
