"""Which optional backends are installed and usable on this machine.

Every check starts with `importlib.util.find_spec` (no import), and only then imports or probes where a
spec alone would lie: a CUDA-only package can be installed on a machine without a GPU, and importing it
there can crash or take seconds. Results are cached for the process; call `backend_status.cache_clear()`
after installing something.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
from dataclasses import dataclass
from functools import cache

from studio_core.errors import MissingBackendError

NOT_INSTALLED = "not installed"
NEEDS_CUDA = "needs a CUDA GPU (none is visible)"

# The CUDA wheel index matches the CPU pin in pyproject.toml; a plain `pip install torch` may stay on CPU.
_CUDA_INSTALL = (
    "pip install --force-reinstall torch==2.13.0 --index-url https://download.pytorch.org/whl/cu130"
)


@dataclass(frozen=True)
class Backend:
    """One optional backend: whether it can be used now, and the exact command that installs it."""

    name: str
    available: bool
    version: str | None
    reason: str
    install: str


@dataclass(frozen=True)
class _Spec:
    module: str
    install: str
    needs_cuda: bool = False
    # Import the module for real: find_spec cannot tell a broken install from a working one.
    probe_import: bool = False


_SPECS: dict[str, _Spec] = {
    "torch": _Spec("torch", "pip install torch==2.13.0", probe_import=True),
    "cuda": _Spec("torch", _CUDA_INSTALL),
    "bitsandbytes": _Spec("bitsandbytes", "pip install bitsandbytes", probe_import=True),
    "unsloth": _Spec("unsloth", "pip install 'peft-studio[unsloth]'", needs_cuda=True, probe_import=True),
    "tensorrt": _Spec("tensorrt", "pip install 'peft-studio[tensorrt]'", needs_cuda=True, probe_import=True),
    "onnxruntime": _Spec("onnxruntime", "pip install onnxruntime"),
    "opacus": _Spec("opacus", "pip install opacus"),
    "mlflow": _Spec("mlflow", "pip install mlflow"),
    "tensorboard": _Spec("tensorboard", "pip install tensorboard"),
    "wandb": _Spec("wandb", "pip install wandb"),
    "huggingface_hub": _Spec("huggingface_hub", "pip install huggingface_hub"),
}

BACKEND_NAMES: tuple[str, ...] = tuple(_SPECS)


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        # A half-removed package can leave a parent without __spec__; that is "not installed" to us.
        return False


def _version(module: str) -> str | None:
    """The installed distribution's version; the distribution may be named differently (onnxruntime-gpu)."""
    try:
        return importlib.metadata.version(module)
    except importlib.metadata.PackageNotFoundError:
        pass
    # Slower path: scans every installed distribution, so only when the obvious name missed.
    for dist in importlib.metadata.packages_distributions().get(module, []):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def _try_import(module: str) -> str | None:
    """Import `module`; returns None on success, else why it failed (any error: native libs raise OSError)."""
    try:
        importlib.import_module(module)
    except Exception as exc:  # noqa: BLE001 - any failure means "unusable", and the reason is kept
        return f"installed but fails to import: {type(exc).__name__}: {str(exc)[:200]}"
    return None


def _cuda_probe() -> tuple[bool, str]:
    """(usable, reason) for CUDA through torch: a CPU build, no driver or zero devices all mean no."""
    torch_status = backend_status("torch")
    if not torch_status.available:
        return False, f"needs torch, which is {torch_status.reason}"
    import torch

    if torch.version.cuda is None:
        return False, f"no CUDA GPU usable: torch {torch_status.version} is a CPU-only build"
    try:
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception as exc:  # noqa: BLE001 - a broken driver raises here instead of returning False
        return False, f"CUDA probe failed: {type(exc).__name__}: {exc}"
    return (True, f"{count} GPU(s)") if count > 0 else (False, "no CUDA GPU is visible")


def _status(name: str, spec: _Spec) -> Backend:
    if name == "cuda":
        ok, reason = _cuda_probe()
        version = importlib.import_module("torch").version.cuda if ok else None
        return Backend(name, ok, version, reason, spec.install)
    if not _installed(spec.module):
        # Say so up front: installing a CUDA-only backend on a machine without a GPU would not help.
        no_gpu = spec.needs_cuda and not backend_status("cuda").available
        reason = f"{NOT_INSTALLED}, and it {NEEDS_CUDA}" if no_gpu else NOT_INSTALLED
        return Backend(name, False, None, reason, spec.install)
    version = _version(spec.module)
    # Check CUDA before importing: unsloth and tensorrt raise or abort on import without a GPU.
    if spec.needs_cuda and not backend_status("cuda").available:
        return Backend(name, False, version, f"installed but {NEEDS_CUDA}", spec.install)
    failure = _try_import(spec.module) if spec.probe_import else None
    if failure:
        return Backend(name, False, version, failure, spec.install)
    return Backend(name, True, version, "installed", spec.install)


@cache
def backend_status(name: str) -> Backend:
    """The cached status of backend `name` (one of BACKEND_NAMES); ValueError for an unknown name."""
    spec = _SPECS.get(name)
    if spec is None:
        raise ValueError(f"unknown backend {name!r}; known: {', '.join(BACKEND_NAMES)}")
    return _status(name, spec)


def all_backends() -> list[Backend]:
    """Status of every known backend, in a fixed order."""
    return [backend_status(name) for name in BACKEND_NAMES]


def require(name: str) -> Backend:
    """Return the backend's status if usable, else raise MissingBackendError with the pip command."""
    status = backend_status(name)
    if not status.available:
        raise MissingBackendError(name, status.install, status.reason)
    return status


def is_torch_available() -> bool:
    """True when torch imports."""
    return backend_status("torch").available


def is_cuda_available() -> bool:
    """True when torch is a CUDA build and sees at least one GPU."""
    return backend_status("cuda").available


def is_bitsandbytes_available() -> bool:
    """True when bitsandbytes imports (its CPU path works without a GPU)."""
    return backend_status("bitsandbytes").available


def is_unsloth_available() -> bool:
    """True when unsloth is installed, a CUDA GPU is visible, and it imports."""
    return backend_status("unsloth").available


def is_tensorrt_available() -> bool:
    """True when tensorrt is installed, a CUDA GPU is visible, and it imports."""
    return backend_status("tensorrt").available


def is_onnxruntime_available() -> bool:
    """True when onnxruntime is installed."""
    return backend_status("onnxruntime").available


def is_opacus_available() -> bool:
    """True when opacus is installed."""
    return backend_status("opacus").available


def is_mlflow_available() -> bool:
    """True when mlflow is installed."""
    return backend_status("mlflow").available


@dataclass(frozen=True)
class Connector:
    """One connector of the hub (`studio_core.connectors`): its kind, what it does, and the backend it needs."""

    name: str
    kind: str  # data | model | tracking
    description: str
    backend: str | None  # the catalog backend it needs; None: nothing beyond the studio itself

    def status(self) -> Backend:
        """The needed backend's status; a connector needing none is always usable."""
        if self.backend is None:
            return Backend(self.name, True, None, "built in", "")
        return backend_status(self.backend)


CONNECTORS: tuple[Connector, ...] = (
    Connector("local-data", "data", "data files and dataset folders under the studio's allowed roots", None),
    Connector("local-models", "model", "model folders (config.json + *.safetensors) under the allowed roots", None),
    Connector("huggingface-hub", "model", "Hugging Face Hub: search, details, download into the model cache",
              "huggingface_hub"),
    Connector("mlflow", "tracking", "MLflow tracking store: params, per-step metrics, artifacts", "mlflow"),
    Connector("tensorboard", "tracking", "TensorBoard event files: scalars, adapter weight histograms",
              "tensorboard"),
    Connector("wandb", "tracking", "Weights & Biases: offline run files by default, online with a key", "wandb"),
)


def all_connectors() -> list[Connector]:
    """Every connector, in a fixed order (data, model, tracking)."""
    return list(CONNECTORS)


def connector(name: str) -> Connector:
    """The connector `name`; ValueError naming the known ones otherwise."""
    found = next((c for c in CONNECTORS if c.name == name), None)
    if found is None:
        raise ValueError(f"unknown connector {name!r}; known: {', '.join(c.name for c in CONNECTORS)}")
    return found
