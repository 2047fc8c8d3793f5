"""The machine `perception bench` ran on: CPU, memory, and where present the GPUs
(`nvidia-smi`), the TensorRT and torch versions and the Jetson power mode (`nvpmodel`)."""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import math
import os
import platform
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import psutil  # type: ignore[import-untyped]

from app.threads import OPENMP_WAIT_VARIABLE, blas_thread_setting

__all__ = ["NVIDIA_SMI_FIELDS", "GpuInfo", "MachineInfo", "machine_info", "parse_nvidia_smi"]

#: The `nvidia-smi --query-gpu` fields `parse_nvidia_smi` reads, in order.
NVIDIA_SMI_FIELDS = (
    "name",
    "driver_version",
    "memory.total",
    "memory.used",
    "clocks.sm",
    "clocks.max.sm",
    "clocks.mem",
    "clocks.max.mem",
)


@dataclass(frozen=True)
class GpuInfo:
    """One GPU as `nvidia-smi` reports it (clocks MHz, memory MiB); None: not reported."""

    name: str
    driver_version: str | None = None
    memory_total_mib: float | None = None
    memory_used_mib: float | None = None
    sm_clock_mhz: float | None = None
    sm_clock_max_mhz: float | None = None
    memory_clock_mhz: float | None = None
    memory_clock_max_mhz: float | None = None


@dataclass(frozen=True)
class MachineInfo:
    """The machine the bench ran on; None/empty: not present there."""

    cpu_model: str
    cpu_cores: int
    cpu_physical_cores: int | None
    memory_total_mb: float
    platform: str
    python: str
    onnxruntime_version: str | None = None
    gpus: tuple[GpuInfo, ...] = ()
    tensorrt_version: str | None = None
    jetson_power_mode: str | None = None
    torch_version: str | None = None
    #: The thread count the node's BLAS libraries run with, as the environment it inherits
    #: sets it (`app.threads`: "1" unless the user chose), e.g. "1" or "OMP_NUM_THREADS=4".
    blas_threads: str | None = None
    #: What torch's idle OpenMP threads do in the node, as the environment it inherits sets
    #: `OMP_WAIT_POLICY` (`app.threads`: "PASSIVE", sleep, unless the user chose); None: unset.
    openmp_wait_policy: str | None = None


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None  # "[N/A]", "[Not Supported]"
    return value if math.isfinite(value) else None


def _text(cell: str) -> str | None:
    return None if not cell or cell.startswith("[") else cell


def parse_nvidia_smi(csv_text: str) -> tuple[GpuInfo, ...]:
    """GPUs from `nvidia-smi --query-gpu=<NVIDIA_SMI_FIELDS> --format=csv,noheader,nounits`."""
    gpus = []
    for line in csv_text.strip().splitlines():
        cells = [c.strip() for c in line.split(",")]
        if len(cells) != len(NVIDIA_SMI_FIELDS) or not cells[0]:
            continue
        gpus.append(
            GpuInfo(
                name=cells[0],
                driver_version=_text(cells[1]),
                memory_total_mib=_number(cells[2]),
                memory_used_mib=_number(cells[3]),
                sm_clock_mhz=_number(cells[4]),
                sm_clock_max_mhz=_number(cells[5]),
                memory_clock_mhz=_number(cells[6]),
                memory_clock_max_mhz=_number(cells[7]),
            )
        )
    return tuple(gpus)


def _tool_output(*command: str) -> str | None:
    """stdout of a command when the tool exists and succeeds, else None."""
    if shutil.which(command[0]) is None:
        return None
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def _cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    for key in ("model name", "Hardware", "Processor"):
        for line in text.splitlines():
            name, _, value = line.partition(":")
            if name.strip() == key and value.strip():
                return value.strip()
    return platform.processor() or platform.machine()


def _module_version(name: str) -> str | None:
    if importlib.util.find_spec(name) is None:
        return None
    try:
        return str(importlib.import_module(name).__version__)
    except Exception:  # a broken install must not stop the bench
        return None


def _distribution_version(name: str) -> str | None:
    """An installed package's version without importing it (torch takes seconds to import)."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _jetson_power_mode() -> str | None:
    out = _tool_output("nvpmodel", "-q")
    if not out or not out.strip():
        return None
    first = out.strip().splitlines()[0]
    return first.partition(":")[2].strip() or first.strip()


def _blas_threads() -> str | None:
    """The BLAS thread count the node inherits, as `blas_thread_setting` finds it."""
    setting = blas_thread_setting()
    if setting is None:
        return None
    name, value = setting
    return value if name == "OPENBLAS_NUM_THREADS" else f"{name}={value}"


def machine_info() -> MachineInfo:
    """CPU model and cores, memory, and where present the GPUs (nvidia-smi), the TensorRT and
    torch versions and the Jetson power mode (nvpmodel)."""
    smi = _tool_output(
        "nvidia-smi",
        f"--query-gpu={','.join(NVIDIA_SMI_FIELDS)}",
        "--format=csv,noheader,nounits",
    )
    return MachineInfo(
        cpu_model=_cpu_model(),
        cpu_cores=os.cpu_count() or 1,
        cpu_physical_cores=psutil.cpu_count(logical=False),
        memory_total_mb=psutil.virtual_memory().total / 1e6,
        platform=platform.platform(),
        python=platform.python_version(),
        onnxruntime_version=_module_version("onnxruntime"),
        gpus=parse_nvidia_smi(smi) if smi else (),
        tensorrt_version=_module_version("tensorrt"),
        jetson_power_mode=_jetson_power_mode(),
        torch_version=_distribution_version("torch"),
        blas_threads=_blas_threads(),
        openmp_wait_policy=os.environ.get(OPENMP_WAIT_VARIABLE) or None,
    )
