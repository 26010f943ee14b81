"""Fit a run to this machine's memory: the changes, in the order that costs the least, each with its reason.

Order: gradient checkpointing (costs ~30% more compute, keeps the result), then a smaller per-device batch with
more accumulation (same effective batch, same result, slower), then QLoRA instead of LoRA (a 4-bit base: a
seventh of the weight memory, a slightly different model). What still does not fit says what is left to change.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from studio_core.hardware.memory import CPU_RUNTIME, GIB, MemoryEstimate, estimate_training_memory, model_shape


@dataclass
class Fit:
    fits: bool
    changes: dict[str, Any] = field(default_factory=dict)  # dotted config path -> value
    reasons: list[str] = field(default_factory=list)
    estimate: MemoryEstimate | None = None
    budget: float = 0.0


def estimate_for(cfg, model_config, base_params: int, adapter_params: int, precision: str,
                 device: str = "cpu") -> MemoryEstimate:
    """The training-memory estimate of `cfg` on a model with this config and these parameter counts.

    On CPU, training's attention keeps its probabilities for rows of at most `EAGER_MAX_KV` tokens
    (`studio_core.train.attention`); the estimate is the larger of the longest batch's (`data.max_length`) and
    that of a batch at the longest length the probabilities are kept for."""
    from studio_core.methods import get_method
    from studio_core.train.attention import EAGER_MAX_KV
    from studio_core.train.precision import base_dtype

    shape = model_shape(model_config)
    common = dict(
        base_params=base_params, adapter_params=adapter_params, batch=cfg.training.per_device_batch_size,
        weight_format="nf4" if get_method(cfg.method.name).loads_in_4bit else base_dtype(cfg, precision),
        compute=precision,
        gradient_checkpointing=cfg.training.gradient_checkpointing,
        adapter_dropout=getattr(cfg.method, "dropout", 0.0) > 0, device=device, private=cfg.privacy.enabled,
    )
    longest = estimate_training_memory(**common, **shape, seq_len=cfg.data.max_length)
    if device != "cpu" or getattr(model_config, "_attn_implementation", None) != "sdpa":
        return longest
    kept = estimate_training_memory(**common, **{**shape, "attention_probs": True},
                                    seq_len=min(cfg.data.max_length, EAGER_MAX_KV))
    return kept if kept.total > longest.total else longest


def machine_memory(cfg, per_process: MemoryEstimate, device: str = "cpu") -> float:
    """Bytes the run needs of the budgeted memory, from one training process's estimate.

    On a CPU the `training.nproc` processes share this machine's RAM, and with more than one, the process that
    launched them keeps its own copy of the model (weights and adapter) beside them; on GPUs each process has a
    GPU of its own, so the budget (one GPU's memory) is compared with one process.
    """
    processes = cfg.training.nproc
    if device == "cuda" or processes == 1:
        return per_process.total
    return processes * per_process.total + per_process.weights + per_process.adapter + CPU_RUNTIME


def with_changes(cfg, changes: dict[str, Any]):
    """`cfg` with dotted-path changes (method.name switches the method section, keeping its shared fields)."""
    from studio_core.methods import switch_method

    data = cfg.model_dump(mode="json")
    for path, value in changes.items():
        section, name = path.split(".")
        if path == "method.name":
            data["method"] = switch_method(data["method"], value)
        else:
            data[section][name] = value
    return type(cfg).model_validate(data)


def fit_to_memory(cfg, model_config, base_params: int, adapter_params: int, precision: str,
                  budget: float, device: str = "cpu") -> Fit:
    """The least costly changes that bring the estimate under `budget` bytes, with why each was made."""
    changes: dict[str, Any] = {}
    reasons: list[str] = []

    class Need(float):  # the machine's need (every process), carrying the per-process estimate
        estimate: MemoryEstimate

        @property
        def total(self) -> float:
            return float(self)

    def estimate():
        changed = with_changes(cfg, changes)
        per_process = estimate_for(changed, model_config, base_params, adapter_params, precision, device)
        need = Need(machine_memory(changed, per_process, device))
        need.estimate = per_process
        return need

    current = estimate()
    per = f" ({cfg.training.nproc} processes of {current.estimate.total / GIB:.2f} GiB and their launcher)" \
        if cfg.training.nproc > 1 and device != "cuda" else ""
    reasons.append(f"estimated {current.total / GIB:.2f} GiB{per} against a budget of {budget / GIB:.2f} GiB")
    if current.total <= budget:
        reasons.append("fits as configured: nothing to change")
        return Fit(True, changes, reasons, current.estimate, budget)
    if not cfg.training.gradient_checkpointing:
        changes["training.gradient_checkpointing"] = True
        current = estimate()
        reasons.append(f"gradient checkpointing on: activations are recomputed in the backward pass instead of "
                       f"kept (about 30% more compute): {current.total / GIB:.2f} GiB")
    batch, accumulation = cfg.training.per_device_batch_size, cfg.training.gradient_accumulation_steps
    least = 2 if cfg.training.label_words else 1  # the label loss compares the rows of a pass with each other
    whole = len(cfg.training.label_words) if cfg.training.label_group else 1  # a pass holds whole groups' tuples
    least = max(least, whole)
    while current.total > budget and batch > least:
        # A divisor keeps batch x accumulation exact.
        smaller = next((d for d in range(batch // 2, least - 1, -1) if batch % d == 0 and d % whole == 0), None)
        if smaller is None:
            break
        batch, accumulation = smaller, accumulation * (batch // smaller)
        changes.update({"training.per_device_batch_size": batch, "training.gradient_accumulation_steps": accumulation})
        current = estimate()
        reasons.append(f"batch {batch} x accumulation {accumulation}: the same {batch * accumulation} examples per "
                       f"optimizer step, fewer at once: {current.total / GIB:.2f} GiB")
    if current.total > budget and cfg.method.name == "lora":
        changes["method.name"] = "qlora"
        quantized = estimate()
        if quantized.total < current.total:
            current = quantized
            reasons.append(f"qlora instead of lora: the frozen base in 4-bit NF4 takes about a seventh of its fp32 "
                           f"memory: {current.total / GIB:.2f} GiB")
        else:  # on CPU the memory-mapped fp32 checkpoint stays resident beside the 4-bit copy
            del changes["method.name"]
            reasons.append(f"qlora would not help here ({quantized.total / GIB:.2f} GiB): on a CPU the fp32 "
                           "checkpoint stays mapped in memory beside its 4-bit copy")
    fits = current.total <= budget
    if not fits and least > 1:
        reasons.append(f"kept {batch} rows per pass: the label loss (training.label_words) compares each row with "
                       "the others of its pass" + (f", a multiple of the {whole} label words under "
                                                   "training.label_group" if whole > 1 else "")
                       + "; clear it to go down to one")
    if not fits:
        reasons.append(f"still {current.total / GIB:.2f} GiB over {budget / GIB:.2f} GiB: lower data.max_length "
                       f"(activations and logits grow with it) or choose a smaller model")
    return Fit(fits, changes, reasons, current.estimate, budget)


def memory_budget(profile, headroom: float) -> tuple[float, float, str]:
    """(available bytes, budget bytes, device): the first GPU's free memory where CUDA runs, else free RAM."""
    on_gpu = bool(profile.gpus) and profile.cuda_available and profile.gpus[0].memory_free_gb is not None
    available = (profile.gpus[0].memory_free_gb if on_gpu else profile.ram_available_gb) * GIB
    return available, available * headroom, "cuda:0" if on_gpu else "cpu"


def device_kind(device: str) -> str:
    """"cuda" for any CUDA device ("cuda:0"), else "cpu": the distinction the estimator and presets make."""
    return "cuda" if device.startswith("cuda") else "cpu"


def fit_config(cfg, home=None) -> Fit:
    """`fit_to_memory` for a config on this machine: its model counted on the meta device (nothing loaded)."""
    from studio_core.models.resolve import load_empty_model, resolve_in_home

    return fit_model(cfg, load_empty_model(resolve_in_home(cfg.model, home)), home)


def fit_model_config(cfg, model_config, home=None) -> Fit:
    """`fit_config` for a model known only by its config (a Hub model not downloaded): built on the meta device."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(model_config)
    return fit_model(cfg, model, home)


def fit_model(cfg, model, home=None) -> Fit:
    """`fit_to_memory` for `cfg`'s method on `model` (on the meta device) within this machine's memory budget."""
    from studio_core.hardware.profile import hardware_profile
    from studio_core.methods import BuildContext
    from studio_core.models.targets import default_target_modules
    from studio_core.runs import studio_home
    from studio_core.train.adapters import apply_method, count_parameters, rewrites_base
    from studio_core.train.precision import resolve_precision

    profile = hardware_profile(studio_home(home))
    _, base_params = count_parameters(model)
    section = cfg.method
    targets = section.target_modules if getattr(section, "target_modules", "auto") != "auto" else \
        default_target_modules(model, section.name)
    if rewrites_base(section):
        from studio_core.config import method_config  # same shapes; an SVD or QR init cannot run on meta

        section = method_config("lora", r=section.r, target_modules=targets)
    adapter_params, _ = count_parameters(apply_method(model, section, targets, BuildContext(loftq=False)))
    _, budget, device = memory_budget(profile, cfg.preflight.memory_headroom)
    precision = resolve_precision(cfg.training.precision, profile)
    return fit_to_memory(cfg, model.config, base_params, adapter_params, precision, budget, device_kind(device))
