"""studio_core.catalog: backend detection, reasons and install commands."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator

import pytest

from studio_core import catalog
from studio_core.errors import MissingBackendError


@pytest.fixture(autouse=True)
def fresh_cache() -> Iterator[None]:
    # Tests below fake installs; the process-wide cache must not leak them into other tests.
    catalog.backend_status.cache_clear()
    yield
    catalog.backend_status.cache_clear()


def _fake_installed(monkeypatch: pytest.MonkeyPatch, present: set[str], absent: set[str]) -> None:
    real = catalog._installed

    def installed(module: str) -> bool:
        if module in present:
            return True
        return False if module in absent else real(module)

    monkeypatch.setattr(catalog, "_installed", installed)


def test_torch_is_available_with_a_version() -> None:
    status = catalog.backend_status("torch")
    assert catalog.is_torch_available() is True
    assert status.available and status.version
    assert status.install.startswith("pip install ")


def test_all_backends_lists_every_name_in_order() -> None:
    assert [b.name for b in catalog.all_backends()] == list(catalog.BACKEND_NAMES)
    assert all(b.install.startswith("pip install ") for b in catalog.all_backends())
    assert all(b.reason for b in catalog.all_backends())


@pytest.mark.parametrize(
    "check",
    [
        catalog.is_torch_available,
        catalog.is_cuda_available,
        catalog.is_bitsandbytes_available,
        catalog.is_unsloth_available,
        catalog.is_tensorrt_available,
        catalog.is_onnxruntime_available,
        catalog.is_opacus_available,
        catalog.is_mlflow_available,
    ],
)
def test_checks_return_bool(check: Callable[[], bool]) -> None:
    assert isinstance(check(), bool)


def test_cuda_reason_explains_its_absence() -> None:
    status = catalog.backend_status("cuda")
    if status.available:
        pytest.skip("a CUDA GPU is visible here")
    assert "CUDA" in status.reason or "GPU" in status.reason
    assert "download.pytorch.org" in status.install


@pytest.mark.parametrize("name", ["unsloth", "tensorrt"])
def test_gpu_backends_unavailable_here_with_reason(name: str) -> None:
    if catalog.is_cuda_available() and importlib.util.find_spec(name) is not None:
        pytest.skip(f"{name} is installed and a CUDA GPU is visible")
    status = catalog.backend_status(name)
    assert not status.available
    assert "CUDA" in status.reason or "not installed" in status.reason
    assert status.install == f"pip install 'peft-studio[{name}]'"


def test_installed_unsloth_without_cuda_is_never_imported(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_installed(monkeypatch, present={"unsloth"}, absent=set())
    monkeypatch.setattr(catalog, "_cuda_probe", lambda: (False, "no CUDA GPU is visible"))

    def no_import(module: str) -> str | None:
        raise AssertionError(f"{module} imported before the CUDA check")

    monkeypatch.setattr(catalog, "_try_import", no_import)
    status = catalog.backend_status("unsloth")
    assert not status.available
    assert "needs a CUDA GPU" in status.reason


def test_installed_backend_that_fails_to_import_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_installed(monkeypatch, present={"tensorrt"}, absent=set())
    monkeypatch.setattr(catalog, "_cuda_probe", lambda: (True, "1 GPU(s)"))
    monkeypatch.setattr(catalog, "_try_import", lambda module: "installed but fails to import: OSError")
    status = catalog.backend_status("tensorrt")
    assert not status.available
    assert "fails to import" in status.reason


def test_require_raises_with_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_installed(monkeypatch, present=set(), absent={"mlflow"})
    with pytest.raises(MissingBackendError) as info:
        catalog.require("mlflow")
    assert info.value.backend == "mlflow"
    assert info.value.install == "pip install mlflow"
    assert "pip install mlflow" in str(info.value)
    assert "not installed" in str(info.value)


def test_require_gpu_backend_names_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_installed(monkeypatch, present=set(), absent={"unsloth"})
    with pytest.raises(MissingBackendError, match=r"pip install 'peft-studio\[unsloth\]'"):
        catalog.require("unsloth")


def test_require_returns_available_backend() -> None:
    assert catalog.require("torch").name == "torch"


def test_unknown_backend_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="unknown backend"):
        catalog.backend_status("nonsense")


def test_status_is_cached() -> None:
    assert catalog.backend_status("torch") is catalog.backend_status("torch")
