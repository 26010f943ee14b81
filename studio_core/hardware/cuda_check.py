"""CUDA validation: a small real kernel round trip on every visible GPU, naming the step that failed.

For each device: allocate two matrices, copy them host -> device, multiply (fp32, then fp16 and bf16 where the
device runs them), synchronize, copy the product back and compare it with the CPU's, then time the matmul. No
CUDA at all (a CPU-only torch, or no visible GPU) is reported as such, not as a failure; nothing here raises.
"""

from __future__ import annotations

import importlib.util
import math
import time
from typing import Any, Literal

from pydantic import BaseModel, Field, computed_field

Step = Literal["init", "device", "alloc", "copy", "matmul", "sync", "compare"]
CheckStatus = Literal["passed", "failed", "no_cuda"]

# Max |gpu - cpu| / max |cpu|. The CPU reference multiplies the same dtype-rounded inputs in fp32, so what is
# left is the output's rounding (and TF32 for fp32, if a caller enabled it): garbage is off by orders more.
TOLERANCE = {"fp32": 1e-3, "fp16": 2e-3, "bf16": 1e-2}
BF16_MIN_CAPABILITY = (8, 0)
_LAUNCH_BLOCKING = "rerun with CUDA_LAUNCH_BLOCKING=1 to pin it to the failing call"
_DRIVER_LOG = "check `nvidia-smi` and the kernel log (`dmesg | grep -i xid`) for GPU errors"


class DtypeResult(BaseModel):
    """One dtype's round trip on one device: passed, or the step that failed, the error and a hint."""

    dtype: str
    passed: bool
    max_relative_error: float | None = None
    tolerance: float
    matmul_ms: float | None = None
    tflops: float | None = None
    failed_step: Step | None = None
    error: str | None = None
    hint: str | None = None


class DeviceResult(BaseModel):
    """Every dtype checked on one GPU; `skipped` says which dtypes this device does not run, and why."""

    index: int
    name: str | None = None
    compute_capability: str | None = None
    results: list[DtypeResult] = Field(default_factory=list)
    skipped: dict[str, str] = Field(default_factory=dict)
    failed_step: Step | None = None
    error: str | None = None
    hint: str | None = None

    @computed_field
    @property
    def passed(self) -> bool:
        return self.error is None and all(r.passed for r in self.results)


class CudaCheck(BaseModel):
    """The whole check; `model_dump()` is JSON-able. `ok` is False only when CUDA exists and failed."""

    status: CheckStatus
    message: str
    torch_version: str | None = None
    torch_cuda_build: str | None = None
    device_count: int = 0
    matrix_size: int
    devices: list[DeviceResult] = Field(default_factory=list)
    failed_step: Step | None = None
    hint: str | None = None

    @computed_field
    @property
    def ok(self) -> bool:
        return self.status != "failed"


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).strip()[:300]}"


def _install_hint() -> str:
    from studio_core.catalog import backend_status

    return f"install a CUDA build of torch: {backend_status('cuda').install}"


def _device(index: int) -> str:
    """The torch device string of GPU `index` (a seam for the tests, which run the round trip on the CPU)."""
    return f"cuda:{index}"


def _matmul(a: Any, b: Any) -> Any:
    """The kernel under test (a seam for the tests, which make it return wrong values)."""
    import torch

    return torch.matmul(a, b)


def _no_cuda(torch: Any, size: int) -> CudaCheck | None:
    """The report when there is simply no CUDA to check, else None."""
    facts = {"torch_version": torch.__version__, "torch_cuda_build": torch.version.cuda, "matrix_size": size}
    if torch.version.cuda is None:
        return CudaCheck(status="no_cuda", hint=_install_hint(), **facts,
                         message=f"no CUDA to check: torch {torch.__version__} is a CPU-only build")
    if not torch.cuda.is_available() or torch.cuda.device_count() == 0:
        return CudaCheck(status="no_cuda", **facts,
                         message=f"no CUDA to check: torch {torch.__version__} is a CUDA {torch.version.cuda} "
                                 "build but sees no GPU",
                         hint="check `nvidia-smi`, CUDA_VISIBLE_DEVICES, and that the driver supports CUDA "
                              f"{torch.version.cuda}")
    return None


def _hint(step: Step, exc: BaseException | None, capability: tuple[int, int] | None) -> str:
    """What to do about a failure at `step`, in words a user can act on."""
    text = str(exc or "")
    if "not compiled with CUDA" in text:
        return _install_hint()
    if step == "alloc":
        if "out of memory" in text.lower():
            return "the GPU is out of memory: stop other processes on it (see `nvidia-smi`) and retry"
        return f"the GPU refused a small allocation: it may be busy, in exclusive mode, or unhealthy; {_DRIVER_LOG}"
    if step == "copy":
        return f"a host <-> device copy failed: CUDA errors are asynchronous, so {_LAUNCH_BLOCKING}; {_DRIVER_LOG}"
    if step == "matmul":
        return _matmul_hint(capability)
    if step == "sync":
        return f"an asynchronous CUDA error surfaced at synchronize: {_LAUNCH_BLOCKING}; {_DRIVER_LOG}"
    if step == "compare":
        return ("the GPU returned wrong numbers: check ECC errors (`nvidia-smi -q -d ECC`), clocks and "
                "temperature, and run the vendor diagnostics (`dcgmi diag -r 1`)")
    return f"the CUDA driver or runtime failed to answer: {_DRIVER_LOG}; a GPU reset or reboot may be needed"


def _matmul_hint(capability: tuple[int, int] | None) -> str:
    import torch

    arch = f"sm_{capability[0]}{capability[1]}" if capability else None
    try:
        built_for = torch.cuda.get_arch_list()
    except Exception:  # noqa: BLE001 - the hint must not fail where the check already did
        built_for = []
    if arch and built_for and arch not in built_for:
        return (f"this torch build has no kernels for {arch} (it has {', '.join(built_for)}); "
                f"{_install_hint()}")
    return f"the matmul kernel failed to launch: {_LAUNCH_BLOCKING}"


def _reference(torch: Any, size: int, dtype: Any, seed: int) -> tuple[Any, Any, Any]:
    """Host inputs in `dtype` and the CPU product of exactly those values, in fp32."""
    generator = torch.Generator().manual_seed(seed)
    a = torch.randn(size, size, generator=generator).to(dtype)
    b = torch.randn(size, size, generator=generator).to(dtype)
    return a, b, a.float() @ b.float()


def _relative_error(result: Any, reference: Any) -> float | None:
    """Max |result - reference| / max |reference|; None when the result holds NaN or inf."""
    result = result.float()
    if not bool(result.isfinite().all()):
        return None
    return float((result - reference).abs().max() / reference.abs().max().clamp_min(1e-30))


def _time_matmul(torch: Any, a: Any, b: Any, device: str, repeats: int) -> float:
    """Median milliseconds of one matmul, synchronised, after a warm-up."""
    _matmul(a, b)
    torch.cuda.synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        _matmul(a, b)
        torch.cuda.synchronize(device)
        times.append(1000 * (time.perf_counter() - start))
    return sorted(times)[len(times) // 2]


def _round_trip(torch: Any, index: int, name: str, size: int, repeats: int, capability) -> DtypeResult:
    """alloc -> copy -> matmul -> sync -> copy back -> compare -> time, on GPU `index` in dtype `name`."""
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[name]
    host_a, host_b, reference = _reference(torch, size, dtype, seed=index)
    device, step = _device(index), "alloc"
    try:
        a = torch.empty(size, size, dtype=dtype, device=device)
        b = torch.empty(size, size, dtype=dtype, device=device)
        step = "copy"
        a.copy_(host_a)
        b.copy_(host_b)
        step = "matmul"
        product = _matmul(a, b)
        step = "sync"
        torch.cuda.synchronize(device)
        step = "copy"
        error = _relative_error(product.cpu(), reference)
        step = "compare"
        if error is None or not error <= TOLERANCE[name]:
            seen = "NaN or inf in the result" if error is None else f"max relative error {error:.2e}"
            raise ValueError(f"GPU result differs from the CPU's: {seen} (tolerance {TOLERANCE[name]:.0e})")
        step = "matmul"
        ms = _time_matmul(torch, a, b, device, repeats)
    except Exception as exc:  # noqa: BLE001 - the report is the point: which device, which step, why
        failed = DtypeResult(dtype=name, passed=False, tolerance=TOLERANCE[name], failed_step=step,
                             error=_error_text(exc), hint=_hint(step, exc, capability))
        if step == "compare":
            failed.max_relative_error = error
        return failed
    tflops = 2 * size**3 / (ms / 1000) / 1e12 if ms > 0 else None
    return DtypeResult(dtype=name, passed=True, max_relative_error=error, tolerance=TOLERANCE[name],
                       matmul_ms=round(ms, 4), tflops=round(tflops, 2) if tflops else None)


def _check_device(torch: Any, index: int, size: int, repeats: int) -> DeviceResult:
    """Every dtype on GPU `index`; stops at the first failure, since CUDA errors poison the context."""
    try:
        name = torch.cuda.get_device_name(index)
        capability = tuple(torch.cuda.get_device_capability(index))
    except Exception as exc:  # noqa: BLE001 - a GPU that will not even describe itself
        return DeviceResult(index=index, failed_step="device", error=_error_text(exc),
                            hint=_hint("device", exc, None))
    device = DeviceResult(index=index, name=name, compute_capability=f"{capability[0]}.{capability[1]}")
    dtypes = ["fp32", "fp16", "bf16"]
    if capability < BF16_MIN_CAPABILITY:
        dtypes.remove("bf16")
        device.skipped["bf16"] = f"needs compute capability 8.0 or newer (this GPU is {device.compute_capability})"
    for dtype in dtypes:
        result = _round_trip(torch, index, dtype, size, repeats, capability)
        device.results.append(result)
        if not result.passed:
            device.failed_step, device.error, device.hint = result.failed_step, result.error, result.hint
            break
    return device


def _summary(check: CudaCheck) -> str:
    failed = [d for d in check.devices if not d.passed]
    if not failed:
        return f"CUDA works: {len(check.devices)} GPU(s) passed the round trip"
    first = failed[0]
    dtype = next((r.dtype for r in first.results if not r.passed), None)
    where = f"GPU {first.index} ({first.name or 'unknown'})" + (f", {dtype}" if dtype else "")
    return f"CUDA round trip failed on {where} at step '{first.failed_step}': {first.error}"


def validate_cuda(size: int = 1024, repeats: int = 10) -> CudaCheck:
    """Round-trip a `size` x `size` matmul on every visible GPU and report per device, dtype and step."""
    if importlib.util.find_spec("torch") is None:
        return CudaCheck(status="no_cuda", message="no CUDA to check: torch is not installed", matrix_size=size,
                         hint=_install_hint())
    import torch

    try:
        absent = _no_cuda(torch, size)
        count = 0 if absent else torch.cuda.device_count()
    except Exception as exc:  # noqa: BLE001 - a broken driver raises here instead of answering
        return CudaCheck(status="failed", message=f"CUDA failed to initialise: {_error_text(exc)}",
                         torch_version=torch.__version__, torch_cuda_build=torch.version.cuda, matrix_size=size,
                         failed_step="init", hint=_hint("init", exc, None))
    if absent:
        return absent
    check = CudaCheck(status="passed", message="", torch_version=torch.__version__,
                      torch_cuda_build=torch.version.cuda, device_count=count, matrix_size=size,
                      devices=[_check_device(torch, i, size, repeats) for i in range(count)])
    check.status = "passed" if all(d.passed for d in check.devices) else "failed"
    check.message = _summary(check)
    return check


def _fmt(value: float | None, spec: str) -> str:
    return "" if value is None or not math.isfinite(value) else format(value, spec)


def _row(device: DeviceResult, dtype: str, result: str, detail: str, r: DtypeResult | None = None) -> dict[str, str]:
    return {"device": f"{device.index}: {device.name or 'unknown'}", "dtype": dtype, "result": result,
            "rel. error": _fmt(r.max_relative_error, ".1e") if r else "",
            "matmul ms": _fmt(r.matmul_ms, ".3f") if r else "", "TFLOP/s": _fmt(r.tflops, ".2f") if r else "",
            "detail": detail}


def cuda_check_rows(check: CudaCheck) -> list[dict[str, str]]:
    """One row per (device, dtype) checked or skipped, for a CLI table or a web page alike."""
    rows = []
    for device in check.devices:
        if not device.results and device.error:  # failed before any dtype ran
            rows.append(_row(device, "", f"failed at {device.failed_step}", f"{device.error}. Fix: {device.hint}"))
        for r in device.results:
            result = "passed" if r.passed else f"failed at {r.failed_step}"
            rows.append(_row(device, r.dtype, result, "" if r.passed else f"{r.error}. Fix: {r.hint}", r))
        rows += [_row(device, dtype, "skipped", why) for dtype, why in device.skipped.items()]
    return rows
