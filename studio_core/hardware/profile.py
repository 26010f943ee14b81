"""What this machine has to train with: CPU, RAM, disk, torch build, GPUs (through NVML) and precision.

Every probe degrades instead of raising: no /proc, no torch, no NVIDIA driver or a GPU that refuses one
query still gives a profile, with `nvml_error` saying why the GPU list is empty.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import shutil
import threading
import time
from pathlib import Path
from typing import Any, Literal

import psutil
from pydantic import BaseModel, Field

Precision = Literal["bf16", "fp16", "fp32"]

CACHE_SECONDS = 300.0
_GB = 1024**3
_CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")

# Indirection so tests can move time forward without touching the global time module.
_clock = time.monotonic
_cache: dict[str | None, tuple[float, HardwareProfile]] = {}
_lock = threading.Lock()


class GpuInfo(BaseModel):
    """One NVIDIA GPU as NVML reports it; a field NVML would not answer for this device is None."""

    index: int
    name: str
    memory_total_gb: float | None = None
    memory_free_gb: float | None = None
    compute_capability: str | None = None
    utilization_percent: int | None = None


class HardwareProfile(BaseModel):
    """A snapshot of the machine; `model_dump()` is JSON-able."""

    cpu_model: str
    cpu_cores_logical: int | None
    cpu_cores_physical: int | None
    cpu_flags_bf16: bool
    ram_total_gb: float
    ram_available_gb: float
    disk_free_gb: float | None
    os: str
    python: str
    torch_version: str | None
    torch_cuda_build: str | None
    cuda_available: bool
    gpus: list[GpuInfo] = Field(default_factory=list)
    driver_version: str | None = None
    cuda_driver_version: str | None = None
    nvml_error: str | None = None
    bf16_supported: bool
    fp16_supported: bool


def _gb(n_bytes: float) -> float:
    return round(n_bytes / _GB, 2)


def _read_cpuinfo() -> tuple[str | None, set[str]]:
    """(model name, flags) of the first CPU in /proc/cpuinfo; (None, empty) where there is none."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return None, set()
    model: str | None = None
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model is None:
            model = value.strip()
        elif key == "flags" and not flags:
            flags = set(value.split())
        if model is not None and flags:
            break
    return model, flags


# x86 instructions that multiply u8 by s8 into 32-bit sums without an intermediate 16-bit one (VNNI, AMX).
_CPU_INT8_DOT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


def int8_saturates() -> bool:
    """Whether ONNX Runtime's u8 x s8 int8 matmul can saturate on this CPU: x86 with AVX2/AVX-512 but no VNNI,
    where the kernel adds pairs of products in 16 bits (onnxruntime's quantization docs: use reduce_range there)."""
    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686"):
        return False
    return not any(flag in _read_cpuinfo()[1] for flag in _CPU_INT8_DOT_FLAGS)


def _disk_free_gb(home: Path | None) -> float | None:
    """Free space where `home` is or would be created: its nearest existing ancestor."""
    if home is None:
        return None
    path = Path(home).expanduser().absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return _gb(shutil.disk_usage(path).free)
    except OSError:
        return None


def _torch_facts() -> dict[str, Any]:
    """torch version, its CUDA build, whether a GPU is usable and which half precisions it runs."""
    facts: dict[str, Any] = {"torch_version": None, "torch_cuda_build": None, "cuda_available": False}
    if importlib.util.find_spec("torch") is None:
        return facts
    try:
        import torch

        facts["torch_version"] = torch.__version__
        facts["torch_cuda_build"] = torch.version.cuda
        cuda = torch.version.cuda is not None and torch.cuda.is_available() and torch.cuda.device_count() > 0
        facts["cuda_available"] = cuda
        if cuda:
            facts["cuda_bf16"] = bool(torch.cuda.is_bf16_supported())
    except Exception:  # noqa: BLE001 - a broken torch or driver means "no CUDA", not a crashed profile
        facts["cuda_available"] = False
    return facts


def _nvml_error_text(exc: BaseException) -> str:
    """A short reason NVML did not answer, in words a user can act on."""
    import pynvml

    known = {
        "NVMLError_LibraryNotFound": "NVML library not found (no NVIDIA driver installed)",
        "NVMLError_DriverNotLoaded": "NVIDIA driver is not loaded",
        "NVMLError_NoPermission": "no permission to query NVML",
    }
    for cls_name, text in known.items():
        cls = getattr(pynvml, cls_name, None)
        if cls is not None and isinstance(exc, cls):
            return text
    return f"NVML failed: {type(exc).__name__}: {exc}"


def _text(value: str | bytes) -> str:
    # Older nvidia-ml-py releases return bytes.
    return value.decode() if isinstance(value, bytes) else str(value)


def _optional(query: Any, *args: Any) -> Any:
    """One NVML query that may be unsupported on this device (MIG, vGPU): None instead of an error."""
    import pynvml

    try:
        return query(*args)
    except pynvml.NVMLError:  # NVMLError_NotSupported and friends; the rest of the GPU still counts
        return None


def _gpu_info(pynvml: Any, index: int) -> GpuInfo:
    handle = pynvml.nvmlDeviceGetHandleByIndex(index)
    memory = _optional(pynvml.nvmlDeviceGetMemoryInfo, handle)
    capability = _optional(pynvml.nvmlDeviceGetCudaComputeCapability, handle)
    utilization = _optional(pynvml.nvmlDeviceGetUtilizationRates, handle)
    return GpuInfo(
        index=index,
        name=_text(pynvml.nvmlDeviceGetName(handle)),
        memory_total_gb=_gb(memory.total) if memory is not None else None,
        memory_free_gb=_gb(memory.free) if memory is not None else None,
        compute_capability=f"{capability[0]}.{capability[1]}" if capability else None,
        utilization_percent=int(utilization.gpu) if utilization is not None else None,
    )


def _cuda_version_text(version: int | None) -> str | None:
    # NVML encodes CUDA 12.4 as 12040.
    return f"{version // 1000}.{version % 1000 // 10}" if version else None


def _nvml_facts() -> dict[str, Any]:
    """GPUs, driver and CUDA driver versions from NVML, or `nvml_error` saying why there are none."""
    if importlib.util.find_spec("pynvml") is None:
        return {"nvml_error": "nvidia-ml-py is not installed (pip install nvidia-ml-py)"}
    import pynvml

    try:
        pynvml.nvmlInit()
    except Exception as exc:  # noqa: BLE001 - every init failure means "no GPU info", with the reason
        return {"nvml_error": _nvml_error_text(exc)}
    try:
        return {
            "driver_version": _optional(lambda: _text(pynvml.nvmlSystemGetDriverVersion())),
            "cuda_driver_version": _cuda_version_text(_optional(pynvml.nvmlSystemGetCudaDriverVersion)),
            "gpus": [_gpu_info(pynvml, i) for i in range(pynvml.nvmlDeviceGetCount())],
        }
    except Exception as exc:  # noqa: BLE001 - a GPU that fell off the bus mid-query
        return {"nvml_error": _nvml_error_text(exc)}
    finally:
        _optional(pynvml.nvmlShutdown)


def _read_profile(home: Path | None) -> HardwareProfile:
    cpu_model, flags = _read_cpuinfo()
    cpu_bf16 = any(flag in flags for flag in _CPU_BF16_FLAGS)
    memory = psutil.virtual_memory()
    torch_facts = _torch_facts()
    cuda = torch_facts["cuda_available"]
    return HardwareProfile(
        cpu_model=cpu_model or platform.processor() or platform.machine() or "unknown",
        cpu_cores_logical=psutil.cpu_count(logical=True) or os.cpu_count(),
        cpu_cores_physical=psutil.cpu_count(logical=False),
        cpu_flags_bf16=cpu_bf16,
        ram_total_gb=_gb(memory.total),
        ram_available_gb=_gb(memory.available),
        disk_free_gb=_disk_free_gb(home),
        os=platform.platform(),
        python=platform.python_version(),
        torch_version=torch_facts["torch_version"],
        torch_cuda_build=torch_facts["torch_cuda_build"],
        cuda_available=cuda,
        bf16_supported=torch_facts.get("cuda_bf16", False) if cuda else cpu_bf16,
        fp16_supported=cuda,
        **_nvml_facts(),
    )


def hardware_profile(home: Path | None = None, refresh: bool = False) -> HardwareProfile:
    """The machine's profile, with disk space measured at `home`; re-read after 5 minutes or on refresh."""
    key = str(Path(home).expanduser().absolute()) if home is not None else None
    with _lock:
        cached = _cache.get(key)
        if cached is not None and not refresh and _clock() - cached[0] < CACHE_SECONDS:
            return cached[1]
    # Read outside the lock: NVML and torch can take seconds, and a duplicate read is harmless.
    profile = _read_profile(Path(key) if key is not None else None)
    with _lock:
        _cache[key] = (_clock(), profile)
    return profile


def best_precision(profile: HardwareProfile) -> Precision:
    """bf16 where it runs natively (CUDA, or a CPU with AVX-512 BF16/AMX), fp16 on other GPUs, else fp32."""
    if profile.cuda_available:
        if profile.bf16_supported:
            return "bf16"
        return "fp16" if profile.fp16_supported else "fp32"
    # Without the CPU flags bf16 is emulated and slower than fp32; with them it measured 1.5x faster.
    return "bf16" if profile.bf16_supported and profile.cpu_flags_bf16 else "fp32"


def _yes_no(flag: bool) -> str:
    return "yes" if flag else "no"


def _gpu_row(gpu: GpuInfo) -> tuple[str, str]:
    parts = [gpu.name]
    if gpu.memory_total_gb is not None:
        parts.append(f"{gpu.memory_free_gb:.1f} of {gpu.memory_total_gb:.1f} GB free")
    if gpu.compute_capability:
        parts.append(f"compute {gpu.compute_capability}")
    if gpu.utilization_percent is not None:
        parts.append(f"{gpu.utilization_percent}% busy")
    return f"GPU {gpu.index}", " · ".join(parts)


def _torch_row(profile: HardwareProfile) -> str:
    if profile.torch_version is None:
        return "not installed"
    if profile.torch_cuda_build:
        return f"{profile.torch_version} (CUDA {profile.torch_cuda_build} build)"
    # The common surprise: NVML sees a GPU but pip installed the CPU wheel, so training runs on the CPU.
    hint = "; install a CUDA build to use the GPU" if profile.gpus else ""
    return f"{profile.torch_version} (CPU-only build{hint})"


def _gpu_rows(profile: HardwareProfile) -> list[tuple[str, str]]:
    rows = [_gpu_row(gpu) for gpu in profile.gpus]
    if profile.driver_version:
        cuda = f" (CUDA {profile.cuda_driver_version})" if profile.cuda_driver_version else ""
        rows.append(("NVIDIA driver", f"{profile.driver_version}{cuda}"))
    if not profile.gpus:
        rows.append(("GPUs", f"none: {profile.nvml_error}" if profile.nvml_error else "none"))
    return rows


def format_profile(profile: HardwareProfile) -> list[tuple[str, str]]:
    """(label, value) rows describing the profile, for a CLI table or a web page alike."""
    cores = f"{profile.cpu_cores_logical or '?'} logical / {profile.cpu_cores_physical or '?'} physical"
    rows = [
        ("CPU", f"{profile.cpu_model} ({cores})"),
        ("CPU bf16 (AVX-512 BF16 / AMX)", _yes_no(profile.cpu_flags_bf16)),
        ("RAM", f"{profile.ram_available_gb:.1f} of {profile.ram_total_gb:.1f} GB available"),
    ]
    if profile.disk_free_gb is not None:
        rows.append(("Disk free (studio home)", f"{profile.disk_free_gb:.1f} GB"))
    rows += [
        ("OS", profile.os),
        ("Python", profile.python),
        ("PyTorch", _torch_row(profile)),
        ("CUDA usable", _yes_no(profile.cuda_available)),
        *_gpu_rows(profile),
        ("bf16 / fp16", f"{_yes_no(profile.bf16_supported)} / {_yes_no(profile.fp16_supported)}"),
        ("Best precision", best_precision(profile)),
    ]
    return rows
