"""studio_core.hardware.cuda_check: no CUDA is said plainly; a failing round trip names the GPU and the step.

The failure paths fake a CUDA build on the CPU: torch.cuda's queries are monkeypatched, and the round trip's
device seam points at the CPU, so the real alloc/copy/matmul/compare code runs with injected faults.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

from studio_core.cli import main
from studio_core.hardware import cuda_check as cc
from studio_core.hardware import cuda_check_rows, validate_cuda

HARDWARE_PAGE = Path(__file__).resolve().parents[2] / "pages" / "hardware.py"
cpu_only = pytest.mark.skipif(torch.version.cuda is not None, reason="checks the CPU-only torch build's report")


@pytest.fixture
def fake_cuda(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Two fake GPUs (Hopper, Turing) whose round trip runs on the CPU; returns the device indices used, in order."""
    used: list[int] = []
    names = {0: "Fake H200", 1: "Fake T4"}
    capabilities = {0: (9, 0), 1: (7, 5)}
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i: names[i])
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i: capabilities[i])
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
    monkeypatch.setattr(cc, "_device", lambda index: used.append(index) or "cpu")
    return used


@cpu_only
def test_no_cuda_on_a_cpu_build_is_reported_with_the_install_command() -> None:
    check = validate_cuda(size=32)
    assert check.status == "no_cuda" and check.ok
    assert check.message == f"no CUDA to check: torch {torch.__version__} is a CPU-only build"
    assert "--index-url https://download.pytorch.org/whl/cu" in check.hint
    assert check.devices == [] and cuda_check_rows(check) == []
    assert json.loads(check.model_dump_json())["ok"] is True


def test_a_cuda_build_without_a_visible_gpu_is_no_cuda_not_a_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    check = validate_cuda(size=32)
    assert check.status == "no_cuda" and check.ok
    assert "CUDA 13.0 build but sees no GPU" in check.message and "CUDA_VISIBLE_DEVICES" in check.hint


def test_round_trip_passes_on_every_device_and_skips_bf16_before_ampere(fake_cuda: list[int]) -> None:
    check = validate_cuda(size=64, repeats=2)
    assert check.status == "passed" and check.ok and check.device_count == 2
    hopper, turing = check.devices
    assert [r.dtype for r in hopper.results] == ["fp32", "fp16", "bf16"]
    assert [r.dtype for r in turing.results] == ["fp32", "fp16"]
    assert "8.0 or newer (this GPU is 7.5)" in turing.skipped["bf16"]
    for result in hopper.results + turing.results:
        assert result.passed and result.max_relative_error <= result.tolerance and result.matmul_ms > 0
    assert [row["result"] for row in cuda_check_rows(check)] == ["passed"] * 5 + ["skipped"]


def test_a_sync_error_on_the_second_gpu_names_that_gpu_and_step(fake_cuda: list[int],
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    def synchronize(device=None) -> None:
        if fake_cuda[-1] == 1:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(torch.cuda, "synchronize", synchronize)
    check = validate_cuda(size=32, repeats=2)
    assert check.status == "failed" and not check.ok
    good, bad = check.devices
    assert good.passed and not bad.passed
    assert (bad.index, bad.failed_step) == (1, "sync") and "illegal memory access" in bad.error
    assert "CUDA_LAUNCH_BLOCKING=1" in bad.hint
    assert len(bad.results) == 1  # stops at the first failure: a CUDA error poisons the context
    assert check.message.startswith("CUDA round trip failed on GPU 1 (Fake T4), fp32 at step 'sync'")


@pytest.mark.parametrize(("wrong", "seen"), [(torch.zeros_like, "max relative error 1.00e+00"),
                                             (lambda t: torch.full_like(t, float("nan")), "NaN or inf")])
def test_wrong_numbers_fail_at_compare(fake_cuda: list[int], monkeypatch: pytest.MonkeyPatch, wrong, seen) -> None:
    monkeypatch.setattr(cc, "_matmul", lambda a, b: wrong(torch.matmul(a, b)))
    check = validate_cuda(size=32, repeats=2)
    first = check.devices[0]
    assert check.status == "failed" and (first.index, first.failed_step) == (0, "compare")
    assert seen in first.error and "ECC" in first.hint
    assert "at step 'compare'" in check.message
    json.dumps(check.model_dump())  # NaN is kept out of the report


def test_a_gpu_that_cannot_describe_itself_fails_at_device(fake_cuda: list[int],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    def capability(index: int):
        raise RuntimeError("CUDA error: unknown error")

    monkeypatch.setattr(torch.cuda, "get_device_capability", capability)
    check = validate_cuda(size=32)
    assert check.status == "failed" and [d.failed_step for d in check.devices] == ["device", "device"]
    assert cuda_check_rows(check)[0]["result"] == "failed at device"


def test_a_driver_that_raises_on_device_count_fails_at_init(monkeypatch: pytest.MonkeyPatch) -> None:
    def device_count() -> int:
        raise RuntimeError("CUDA driver initialization failed")

    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", device_count)
    check = validate_cuda(size=32)
    assert check.status == "failed" and check.failed_step == "init"
    assert "driver initialization failed" in check.message and "nvidia-smi" in check.hint


@cpu_only
def test_a_real_allocation_on_a_cpu_only_torch_fails_at_alloc_with_the_install_hint(
        fake_cuda: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cc, "_device", lambda index: f"cuda:{index}")  # the real seam: torch raises
    check = validate_cuda(size=32)
    first = check.devices[0]
    assert (first.index, first.failed_step) == (0, "alloc")
    assert "not compiled with CUDA" in first.error and "--index-url" in first.hint


@cpu_only
def test_cli_check_cuda_without_cuda_exits_0_and_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["hardware", "--check-cuda"]) == 0
    assert "no CUDA to check" in capsys.readouterr().out
    assert main(["hardware", "--check-cuda", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "no_cuda"


def test_cli_check_cuda_exits_1_and_names_the_step_when_cuda_fails(
        fake_cuda: list[int], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(cc, "_matmul", lambda a, b: torch.zeros_like(a))
    assert main(["hardware", "--check-cuda"]) == 1
    out = capsys.readouterr().out
    assert "failed at compare" in out and "GPU 0: Fake H200 fp32: ValueError" in out and "ECC" in out
    assert main(["hardware", "--check-cuda", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["status"] == "failed" and report["devices"][0]["failed_step"] == "compare"


@cpu_only
def test_hardware_page_check_cuda_button_says_there_is_no_cuda() -> None:
    at = AppTest.from_file(str(HARDWARE_PAGE), default_timeout=30).run()
    assert not at.info  # nothing until asked
    at.button(key="hardware:check_cuda").click().run()
    assert not at.exception, [e.value for e in at.exception]
    expected = f"no CUDA to check: torch {torch.__version__} is a CPU-only build"
    assert [i.value.split(" — ")[0] for i in at.info] == [expected]
