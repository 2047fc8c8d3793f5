"""Replays of many sources, locally and on Ray (a local Ray instance, one CPU per task).

Both sources are the KITTI object frames: the folder itself and a drive imported from it; each
replay must equal the stored regression reference."""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from perception.msgs.jsonl import read_jsonl
from replay import distributed
from replay.datasets.importers import import_kitti_object
from replay.distributed import (
    RAY_CONNECT_TIMEOUT_S,
    ReplayResult,
    check_ray_address,
    replay_many,
)
from replay.errors import ReplayError
from replay.regression import (
    Tolerances,
    compare_detections,
    format_differences,
    load_reference,
)
from tests.app.one_line import fails

REFERENCE = Path(__file__).parent / "references" / "kitti_object_yolox.jsonl"


@pytest.fixture(scope="module")
def sources(kitti_dir: Path, yolox_path: Path, tmp_path_factory: pytest.TempPathFactory):
    if not yolox_path.is_file():
        pytest.skip(f"real data not found: {yolox_path}")
    drive = tmp_path_factory.mktemp("drives") / "kitti_drive.mcap"
    import_kitti_object(kitti_dir, drive)
    return [kitti_dir, drive]


def _check(results: list[ReplayResult], sources: list[Path]) -> None:
    reference = load_reference(REFERENCE)
    # A KITTI object folder is replayed with its frames seconds apart (unrelated scenes: the
    # tracker starts over at each), the drive imported from it at its recorded 0.1 s: the
    # detections must agree, not the stamps.
    tolerances = Tolerances(ignored=Tolerances().ignored | {"header.stamp_ns"})
    assert [r.source for r in results] == sources
    for result in results:
        assert result.ok, result.error
        assert (result.sweeps, result.detections) == (8, sum(len(r.detections) for r in reference))
        diffs = compare_detections(list(read_jsonl(result.out_path)), reference, tolerances)
        assert not diffs, f"{result.source}: {format_differences(diffs)}"


def test_replay_many_locally(sources: list[Path], yolox_path: Path, tmp_path: Path) -> None:
    seen: list[tuple[int, int, str]] = []
    results = replay_many(
        sources,
        tmp_path / "out",
        model_path=yolox_path,
        progress=lambda done, total, r: seen.append((done, total, r.source.name)),
    )
    _check(results, sources)
    assert [r.out_path.name for r in results] == ["training.jsonl", "kitti_drive.jsonl"]
    assert seen == [(1, 2, "training"), (2, 2, "kitti_drive.mcap")]


def test_failures_are_per_source(sources: list[Path], yolox_path: Path, tmp_path: Path) -> None:
    missing = tmp_path / "missing.mcap"
    results = replay_many([missing, sources[1]], tmp_path / "out", model_path=yolox_path)
    assert not results[0].ok and "missing.mcap" in (results[0].error or "")
    assert not results[0].out_path.exists()
    assert results[1].ok and results[1].sweeps == 8


def test_duplicate_output_names(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"both write"):
        replay_many([tmp_path / "a" / "x.mcap", tmp_path / "b" / "x.mcap"], tmp_path / "out")


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    if importlib.util.find_spec("ray") is None:
        pytest.skip("ray is not installed (pip install -e '.[dev]' installs it)")
    import ray

    ray.init(
        num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING
    )
    try:
        yield
    finally:
        ray.shutdown()


@pytest.mark.slow
def test_replay_many_on_ray(
    local_ray: None, sources: list[Path], yolox_path: Path, tmp_path: Path
) -> None:
    seen: list[tuple[int, int]] = []
    results = replay_many(
        sources,
        tmp_path / "out",
        model_path=yolox_path,
        ray_address="local",
        progress=lambda done, total, _r: seen.append((done, total)),
    )
    _check(results, sources)
    assert seen == [(1, 2), (2, 2)]
    import ray

    assert ray.is_initialized()  # an instance started by the caller is left running


def _closed_port() -> int:
    """A port nothing listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("scheme", ["", "ray://"])
def test_an_unreachable_ray_address_is_one_error_at_once(scheme: str) -> None:
    """Ray retries an address nobody answers for minutes (a GCS address hung the command):
    refused before Ray is asked, naming it."""
    address = f"{scheme}127.0.0.1:{_closed_port()}"
    start = time.monotonic()
    with pytest.raises(ReplayError, match=rf"--ray-address {address}: cannot reach 127\.0\.0\.1"):
        check_ray_address(address)
    assert time.monotonic() - start < RAY_CONNECT_TIMEOUT_S


@pytest.mark.parametrize("address", ["head", "head:", ":6379", "head:port", "ray://head:99999"])
def test_a_malformed_ray_address_is_refused(address: str) -> None:
    with pytest.raises(ReplayError, match="expected local, auto, HOST:PORT or ray://HOST:PORT"):
        check_ray_address(address)


@contextlib.contextmanager
def _server(answer: bytes | None) -> Iterator[int]:
    """A TCP server on 127.0.0.1 (its port) that sends `answer` to each connection (None:
    nothing, the connection left open), as a gRPC server (Ray's GCS or client server), a web
    server or a silent one would."""
    stop = threading.Event()
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.settimeout(0.1)

        def serve() -> None:
            held = []
            while not stop.is_set():
                try:
                    connection, _ = server.accept()
                except TimeoutError:
                    continue
                held.append(connection)
                if answer is not None:
                    connection.sendall(answer)
            for connection in held:
                connection.close()

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        try:
            yield int(server.getsockname()[1])
        finally:
            stop.set()
            thread.join()


#: The first frame a gRPC server sends: SETTINGS (type 4) on stream 0.
_GRPC_SETTINGS = bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])


def test_local_auto_and_a_listening_address_pass() -> None:
    with _server(_GRPC_SETTINGS) as port:
        for address in ("local", "auto", f"127.0.0.1:{port}", f"ray://127.0.0.1:{port}"):
            check_ray_address(address)


@pytest.mark.parametrize("scheme", ["", "ray://"])
def test_an_address_where_no_ray_cluster_answers_is_refused_at_once(
    scheme: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The dashboard's port (HTTP) given as the cluster's address, or any other server there:
    the connection succeeded, and Ray then retried it for minutes."""
    with _server(b"HTTP/1.1 400 Bad Request\r\n\r\n") as port:
        address = f"{scheme}127.0.0.1:{port}"
        with pytest.raises(
            ReplayError,
            match=rf"--ray-address {address}: what listens on 127\.0\.0\.1:{port} is not a Ray "
            r"cluster \(it answered 'HTTP/1\.1', not gRPC\); give the head's address",
        ):
            check_ray_address(address)
    monkeypatch.setattr(distributed, "RAY_CONNECT_TIMEOUT_S", 0.3)
    with _server(None) as port, pytest.raises(ReplayError, match=r"no answer within 0\.3 s"):
        check_ray_address(f"{scheme}127.0.0.1:{port}")


def test_the_cli_refuses_an_unreachable_ray_address(
    capsys: pytest.CaptureFixture[str], kitti_dir: Path, yolox_path: Path, tmp_path: Path
) -> None:
    address = f"127.0.0.1:{_closed_port()}"
    err = fails(capsys, "replay", str(kitti_dir), "--out-dir", str(tmp_path / "out"),
                "--model", str(yolox_path), "--ray-address", address)  # fmt: skip
    assert f"--ray-address {address}: cannot reach" in err
    assert not (tmp_path / "out").exists()
