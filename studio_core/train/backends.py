"""Which training backend builds the PEFT model: unsloth where it can, transformers+peft everywhere else.

Unsloth's `FastLanguageModel` patches the model with fused Triton kernels for LoRA and QLoRA on NVIDIA GPUs.
`choose_backend` decides, and its reason is recorded in the run, so a run that fell back says why (method,
missing package, no GPU). `load_with_unsloth` is the only place that imports unsloth, and only when called:
importing it patches transformers globally and fails without a GPU.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from studio_core import catalog
from studio_core.errors import ConfigError, MissingBackendError, Problem

BackendName = Literal["unsloth", "transformers+peft"]
Requested = Literal["auto", "unsloth", "transformers+peft"]
UNSLOTH = "unsloth"
STANDARD = "transformers+peft"
UNSLOTH_METHODS = ("lora", "qlora")
# Unsloth loads and computes in half precision; it rejects fp32.
UNSLOTH_PRECISIONS = ("bf16", "fp16")


@dataclass(frozen=True)
class BackendChoice:
    """The backend a run uses and why; `as_dict()` goes into training_init.json."""

    name: BackendName
    reason: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def _unavailable_reason() -> str:
    """Why unsloth cannot be used here, naming the fix: not installed, no CUDA GPU, or a broken install."""
    unsloth, cuda = catalog.backend_status("unsloth"), catalog.backend_status("cuda")
    installed = not unsloth.reason.startswith(catalog.NOT_INSTALLED)
    if not installed and not cuda.available:
        return f"unsloth is not installed (install with: {unsloth.install}) and it needs a CUDA GPU: {cuda.reason}"
    if not installed:
        return f"unsloth is not installed; install it with: {unsloth.install}"
    if not cuda.available:
        return f"no CUDA GPU for unsloth (it runs on NVIDIA GPUs only): {cuda.reason}"
    return f"unsloth is {unsloth.reason}; reinstall it with: {unsloth.install}"


def _ineligible_reason(method_name: str, precision: str | None) -> str | None:
    """Why this run's settings rule unsloth out whatever is installed, or None."""
    if method_name not in UNSLOTH_METHODS:
        return f"method '{method_name}' is not supported by unsloth (it supports {', '.join(UNSLOTH_METHODS)})"
    if precision is not None and precision not in UNSLOTH_PRECISIONS:
        return f"unsloth trains in {' or '.join(UNSLOTH_PRECISIONS)}, and this run's precision is {precision}"
    return None


def _refuse_unsloth(reason: str, ineligible: bool) -> None:
    """An explicit request for unsloth that cannot be met is an error, not a silent fallback."""
    if ineligible:
        raise ConfigError(Problem("training.backend", f"{reason}; choose 'auto' or '{STANDARD}'"))
    status = catalog.backend_status(UNSLOTH)
    raise MissingBackendError(UNSLOTH, status.install, status.reason)


def choose_backend(method_name: str, requested: Requested = "auto", *, precision: str | None = None) -> BackendChoice:
    """unsloth for LoRA/QLoRA when a CUDA GPU and unsloth are usable, else transformers+peft, with the reason.

    `requested` 'transformers+peft' always gets it; 'unsloth' raises (ConfigError for a method or precision
    unsloth cannot train, MissingBackendError when it is not usable here) instead of falling back. `precision`
    is the resolved compute precision (bf16/fp16/fp32), where known: unsloth does not train in fp32.
    """
    if requested not in ("auto", UNSLOTH, STANDARD):
        raise ConfigError(Problem("training.backend", f"unknown backend '{requested}'; choose auto, {UNSLOTH} "
                                                      f"or {STANDARD}"))
    if requested == STANDARD:
        return BackendChoice(STANDARD, f"{STANDARD} was requested")
    ineligible = _ineligible_reason(method_name, precision)
    reason = ineligible or (None if catalog.is_unsloth_available() else _unavailable_reason())
    if reason is None:
        version = catalog.backend_status("unsloth").version or "(version unknown)"
        return BackendChoice(UNSLOTH, f"{method_name} on a CUDA GPU with unsloth {version}")
    if requested == UNSLOTH:
        _refuse_unsloth(reason, ineligible is not None)
    return BackendChoice(STANDARD, f"{reason}; using {STANDARD}")


def _torch_dtype(dtype: Any) -> Any:
    """A torch half dtype (or None: unsloth picks bf16 where supported) from 'bf16'/'fp16' or a torch dtype."""
    import torch

    if dtype is None or (isinstance(dtype, torch.dtype) and dtype in (torch.bfloat16, torch.float16)):
        return dtype
    named = {"bf16": torch.bfloat16, "fp16": torch.float16}
    if dtype in named:
        return named[dtype]
    raise ConfigError(Problem("training.precision", f"unsloth trains in bf16 or fp16, not {dtype}; set bf16, fp16 "
                                                    f"or auto, or use the {STANDARD} backend"))


def load_with_unsloth(model_dir: str | Path, *, load_in_4bit: bool, max_seq_length: int, dtype: Any, r: int,
                      alpha: float, dropout: float, target_modules: list[str], seed: int,
                      gradient_checkpointing: bool) -> tuple[Any, Any]:
    """(peft model, tokenizer): the base from `model_dir` through unsloth's FastLanguageModel, with LoRA applied.

    `load_in_4bit` is QLoRA (bitsandbytes nf4, quantised on load). `dtype` is 'bf16', 'fp16', a torch half
    dtype, or None for unsloth's choice. Call only after `choose_backend` picked unsloth.
    """
    status = catalog.backend_status(UNSLOTH)
    if not status.available:
        raise MissingBackendError(UNSLOTH, status.install, status.reason)
    torch_dtype = _torch_dtype(dtype)
    try:
        from unsloth import FastLanguageModel
    except Exception as exc:  # unsloth raises more than ImportError without a usable GPU
        raise MissingBackendError(UNSLOTH, status.install, f"import failed: {type(exc).__name__}: {exc}") from exc

    # An absolute path: unsloth maps "org/name" strings to hub repos (and looks them up online).
    model, tokenizer = FastLanguageModel.from_pretrained(
        model_name=str(Path(model_dir).resolve()), max_seq_length=max_seq_length, dtype=torch_dtype,
        load_in_4bit=load_in_4bit,
    )
    model = FastLanguageModel.get_peft_model(
        model, r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(target_modules), bias="none",
        use_gradient_checkpointing="unsloth" if gradient_checkpointing else False, random_state=seed,
    )
    return model, tokenizer
