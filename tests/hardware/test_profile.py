"""studio_core.hardware: the profile degrades without a GPU, caches, and picks the right precision."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import pynvml
import pytest

from studio_core.hardware import GpuInfo, HardwareProfile, best_precision, format_profile, hardware_profile
from studio_core.hardware import profile as profile_mod


@pytest.fixture(autouse=True)
def empty_cache() -> Iterator[None]:
    profile_mod._cache.clear()
    yield
    profile_mod._cache.clear()


def _fail_init(exc: BaseException) -> Callable[[], None]:
    def init() -> None:
        raise exc

    return init


def _profile(**update: object) -> HardwareProfile:
    base = HardwareProfile(
        cpu_model="Test CPU",
        cpu_cores_logical=8,
        cpu_cores_physical=4,
        cpu_flags_bf16=False,
        ram_total_gb=32.0,
        ram_available_gb=16.0,
        disk_free_gb=None,
        os="Linux",
        python="3.11.7",
        torch_version="2.13.0",
        torch_cuda_build=None,
        cuda_available=False,
        bf16_supported=False,
        fp16_supported=False,
    )
    return base.model_copy(update=update)


def test_profile_without_nvml_has_no_gpus_and_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    error = pynvml.NVMLError(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)
    monkeypatch.setattr(pynvml, "nvmlInit", _fail_init(error))
    profile = hardware_profile(refresh=True)
    assert profile.gpus == []
    assert profile.nvml_error is not None and "NVML library not found" in profile.nvml_error
    assert profile.driver_version is None
    json.dumps(profile.model_dump())


def test_any_nvml_init_failure_is_handled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pynvml, "nvmlInit", _fail_init(RuntimeError("driver exploded")))
    profile = hardware_profile(refresh=True)
    assert profile.gpus == []
    assert "driver exploded" in (profile.nvml_error or "")


def test_real_profile_is_sane(tmp_path: Path) -> None:
    profile = hardware_profile(tmp_path)
    assert profile.cpu_model
    assert profile.ram_total_gb > 0 and 0 <= profile.ram_available_gb <= profile.ram_total_gb
    assert profile.disk_free_gb is not None and profile.disk_free_gb >= 0
    assert profile.torch_version
    if not profile.cuda_available:
        assert profile.fp16_supported is False
        assert profile.bf16_supported == profile.cpu_flags_bf16
    if not profile.gpus:
        assert profile.nvml_error
    json.dumps(profile.model_dump())


def test_disk_free_uses_nearest_existing_parent(tmp_path: Path) -> None:
    assert hardware_profile(tmp_path / "not" / "yet" / "made").disk_free_gb is not None
    assert hardware_profile().disk_free_gb is None


def test_fake_nvml_gpu_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def unsupported(handle: object) -> None:
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)

    fakes = {
        "nvmlInit": lambda: calls.append("init"),
        "nvmlShutdown": lambda: calls.append("shutdown"),
        "nvmlSystemGetDriverVersion": lambda: b"570.86.15",
        "nvmlSystemGetCudaDriverVersion": lambda: 12080,
        "nvmlDeviceGetCount": lambda: 1,
        "nvmlDeviceGetHandleByIndex": lambda i: f"handle{i}",
        "nvmlDeviceGetName": lambda h: "NVIDIA H200",
        "nvmlDeviceGetMemoryInfo": lambda h: SimpleNamespace(total=140 * 1024**3, free=100 * 1024**3),
        "nvmlDeviceGetCudaComputeCapability": lambda h: (9, 0),
        "nvmlDeviceGetUtilizationRates": unsupported,
    }
    for name, fake in fakes.items():
        monkeypatch.setattr(pynvml, name, fake)
    profile = hardware_profile(refresh=True)
    assert profile.nvml_error is None
    assert profile.driver_version == "570.86.15"
    assert profile.cuda_driver_version == "12.8"
    assert profile.gpus == [
        GpuInfo(
            index=0,
            name="NVIDIA H200",
            memory_total_gb=140.0,
            memory_free_gb=100.0,
            compute_capability="9.0",
            utilization_percent=None,
        )
    ]
    assert calls == ["init", "shutdown"]
    labels = dict(format_profile(profile))
    assert "NVIDIA H200" in labels["GPU 0"] and "compute 9.0" in labels["GPU 0"]


def test_cache_returns_same_object_within_five_minutes(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(profile_mod, "_clock", lambda: now[0])
    first = hardware_profile()
    now[0] += 299
    assert hardware_profile() is first
    now[0] += 2
    assert hardware_profile() is not first


def test_refresh_rereads(monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[Path | None] = []
    real = profile_mod._read_profile

    def counting(home: Path | None) -> HardwareProfile:
        reads.append(home)
        return real(home)

    monkeypatch.setattr(profile_mod, "_read_profile", counting)
    first = hardware_profile()
    assert hardware_profile() is first
    again = hardware_profile(refresh=True)
    assert again is not first
    assert len(reads) == 2
    assert hardware_profile() is again


def test_cache_is_per_home(tmp_path: Path) -> None:
    assert hardware_profile(tmp_path) is not hardware_profile()
    assert hardware_profile(tmp_path) is hardware_profile(tmp_path)


@pytest.mark.parametrize(
    ("update", "expected"),
    [
        ({"cuda_available": True, "bf16_supported": True, "fp16_supported": True}, "bf16"),
        ({"cuda_available": True, "bf16_supported": False, "fp16_supported": True}, "fp16"),
        ({"cpu_flags_bf16": True, "bf16_supported": True}, "bf16"),
        ({"cpu_flags_bf16": False, "bf16_supported": False}, "fp32"),
        # bf16 claimed without the CPU flags would be emulated (slow): stay on fp32.
        ({"cpu_flags_bf16": False, "bf16_supported": True}, "fp32"),
    ],
)
def test_best_precision(update: dict[str, object], expected: str) -> None:
    assert best_precision(_profile(**update)) == expected


def test_format_profile_rows_are_string_pairs() -> None:
    rows = format_profile(_profile(nvml_error="NVML library not found"))
    assert all(isinstance(label, str) and isinstance(value, str) for label, value in rows)
    table = dict(rows)
    assert table["Best precision"] == "fp32"
    assert "NVML library not found" in table["GPUs"]
    assert "Disk free (studio home)" not in table


@pytest.mark.parametrize(("machine", "flags", "saturates"), [
    ("x86_64", {"avx2", "fma"}, True),  # AVX2, no VNNI: this project's 2-core machine
    ("x86_64", {"avx2", "avx512f", "avx512_vnni"}, False),
    ("x86_64", {"avx2", "avx_vnni"}, False),
    ("aarch64", {"asimd"}, False),  # the saturation is an x86 kernel's
])
def test_int8_saturates_on_x86_without_vnni_only(monkeypatch, machine, flags, saturates):
    monkeypatch.setattr(profile_mod.platform, "machine", lambda: machine)
    monkeypatch.setattr(profile_mod, "_read_cpuinfo", lambda: ("cpu", flags))
    assert profile_mod.int8_saturates() is saturates
