"""Step 3, Pre-flight Check: one go/no-go report before any long run. Errors block; warnings do not.

Checks: target modules exist, trainable parameters, memory estimate against what the hardware has,
dtype support, token lengths against max length, rank sanity, and a time estimate from a measured
micro-run of real training steps on the real data.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from studio_core.config import RunConfig
from studio_core.data.prepare import PreparedData
from studio_core.hardware.memory import GIB, estimate_training_memory
from studio_core.models.targets import default_target_modules, missing_targets, module_names_by_type
from studio_core.train.batching import collate
from studio_core.train.methods import count_parameters, get_method
from studio_core.train.precision import autocast, resolve_precision


@dataclass
class PreflightReport:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def go(self) -> bool:
        return not self.errors

    def as_dict(self) -> dict[str, Any]:
        return {"go": self.go, "errors": self.errors, "warnings": self.warnings, **self.facts}


def check_precision(report: PreflightReport, requested: str, profile) -> str:
    precision = resolve_precision(requested, profile)
    report.facts["precision"] = {"requested": requested, "resolved": precision,
                                 "bf16_supported": profile.bf16_supported, "fp16_supported": profile.fp16_supported}
    if precision == "bf16" and not profile.bf16_supported:
        report.errors.append("training.precision=bf16: this hardware has no bf16 support; use auto or fp32")
    if precision == "fp16" and not profile.fp16_supported:
        report.errors.append("training.precision=fp16: fp16 training needs a CUDA GPU; use auto, bf16 or fp32")
    return precision


def check_targets(report: PreflightReport, model, requested) -> list[str]:
    targets = default_target_modules(model) if requested == "auto" else list(requested)
    report.facts["target_modules"] = targets
    missing = missing_targets(model, targets)
    if missing:
        groups = "; ".join(f"{kind}: {', '.join(names)}" for kind, names in module_names_by_type(model).items())
        report.errors.append(
            f"method.target_modules: {', '.join(missing)} not found in the model. Its modules by type: {groups}"
        )
    return targets


def check_tokens(report: PreflightReport, data: PreparedData, max_length: int) -> None:
    stats = data.report["tokens"]["train"]
    n = max(1, len(data.train_tokens))
    report.facts["tokens"] = {k: stats[k] for k in ("max_length", "truncated", "no_supervised_tokens", "p95", "max")}
    if stats["no_supervised_tokens"] == len(data.train_tokens):
        report.errors.append(f"data.max_length={max_length}: truncation removes every assistant token, so "
                             "nothing can be learned; raise data.max_length")
    elif stats["no_supervised_tokens"]:
        report.warnings.append(f"{stats['no_supervised_tokens']} training examples lose all assistant tokens to "
                               f"truncation at data.max_length={max_length} and teach nothing; raise it")
    if stats["truncated"] / n > 0.05:
        report.warnings.append(f"{stats['truncated']} of {n} training examples ({stats['truncated'] / n:.0%}) are "
                               f"longer than data.max_length={max_length} (p95 {stats['p95']}, max {stats['max']})")


def check_rank(report: PreflightReport, cfg: RunConfig, adapter_params: int, data: PreparedData) -> None:
    # Judged against the full training split: a simulation's 64-row slice would always look too small.
    rows = data.report["rows"]["train"]
    per_row = sum(e.supervised_tokens for e in data.train_tokens) / max(1, len(data.train_tokens))
    supervised, r = int(per_row * rows), cfg.method.r
    report.facts["rank"] = {"r": r, "train_rows": rows, "supervised_train_tokens": supervised}
    report.facts["rank"]["adapter_parameters_per_supervised_token"] = round(adapter_params / max(1, supervised), 2)
    if r > 64 and rows < 1000:
        report.warnings.append(
            f"method.r={r} is high for {rows:,} training rows: the adapter can memorise them rather than learn the "
            "task. r=8-16 is the usual range for a dataset this size"
        )
    if r > 256:
        report.warnings.append(f"method.r={r} is very high: memory and time grow with r for little gain")
    if r < 4 and rows >= 5000:
        report.warnings.append(f"method.r={r} is low for {rows:,} rows of data; r=8-16 keeps more of what they teach")


def check_parameters(report: PreflightReport, peft_model) -> int:
    trainable, total = count_parameters(peft_model)
    percent = 100.0 * trainable / max(1, total)
    report.facts["parameters"] = {"trainable": trainable, "total": total, "trainable_percent": round(percent, 4)}
    if percent > 50:
        report.errors.append(f"{percent:.1f}% of the parameters would train: the base model is not frozen; "
                             "check method.target_modules")
    return trainable


def check_memory(report: PreflightReport, cfg: RunConfig, model, adapter_params: int, base_params: int,
                 precision: str, profile) -> None:
    c = model.config
    estimate = estimate_training_memory(
        base_params=base_params, adapter_params=adapter_params,
        layers=c.num_hidden_layers, hidden=c.hidden_size, heads=c.num_attention_heads,
        batch=cfg.training.per_device_batch_size, seq_len=cfg.data.max_length,
        weight_format="nf4" if get_method(cfg.method.name).loads_in_4bit else "fp32", compute=precision,
        gradient_checkpointing=cfg.training.gradient_checkpointing,
    )
    on_gpu = bool(profile.gpus) and profile.cuda_available
    available = profile.gpus[0].memory_free_gb * GIB if on_gpu else profile.ram_available_gb * GIB
    budget = available * cfg.preflight.memory_headroom
    report.facts["memory_gib"] = {**estimate.as_gib(), "device": "cuda:0" if on_gpu else "cpu",
                                  "available": round(available / GIB, 3), "budget": round(budget / GIB, 3)}
    if estimate.total > budget:
        report.errors.append(
            f"estimated training memory {estimate.total / GIB:.2f} GiB exceeds the {budget / GIB:.2f} GiB budget "
            f"({cfg.preflight.memory_headroom:.0%} of {available / GIB:.2f} GiB free); lower "
            "training.per_device_batch_size or data.max_length, turn on training.gradient_checkpointing, "
            "or use method.name=qlora"
        )


def micro_run(report: PreflightReport, cfg: RunConfig, peft_model, data: PreparedData, pad_id: int,
              precision: str, simulated: bool) -> None:
    """Time `micro_run_steps` real forward/backward/optimizer steps; estimate the whole run from them."""
    import torch

    steps = cfg.preflight.micro_run_steps
    if steps == 0:
        report.warnings.append("preflight.micro_run_steps=0: no time estimate")
        return
    # Examples truncation left without assistant tokens give a 0/0 = NaN loss: measure on ones that learn.
    learnable = [e for e in data.train_tokens if e.supervised_tokens] or data.train_tokens
    batch = collate(learnable[: cfg.training.per_device_batch_size], pad_id)
    device = next(peft_model.parameters()).device
    batch = {k: v.to(device) for k, v in batch.items()}
    params = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.training.learning_rate)
    peft_model.train()
    times, losses = [], []
    for _ in range(steps):
        start = time.perf_counter()
        with autocast(precision, device.type):
            loss = peft_model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
        losses.append(loss.item())
    # The first step pays one-off costs (allocation, kernel selection): time from the later ones.
    per_batch = min(times[1:]) if len(times) > 1 else times[0]
    tokens = int(batch["attention_mask"].sum())
    per_step = per_batch * cfg.training.gradient_accumulation_steps
    report.facts["time_estimate"] = {
        "micro_run_steps": steps, "seconds_per_batch": round(per_batch, 4), "tokens_per_batch": tokens,
        "tokens_per_s": round(tokens / per_batch, 1), "seconds_per_optimizer_step": round(per_step, 3),
        "max_steps": cfg.training.max_steps, "estimated_training_s": round(per_step * cfg.training.max_steps, 1),
        "micro_run_losses": [round(x, 4) for x in losses],
        "measured_on": "simulation model" if simulated else "base model",
    }
    if not all(torch.isfinite(torch.tensor(losses))):
        report.errors.append(f"the micro-run produced a non-finite loss {losses}; check the data and precision")
