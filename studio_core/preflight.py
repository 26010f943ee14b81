"""Step 3, Pre-flight Check: one go/no-go report before any long run. Errors block; warnings do not.

Checks: target modules exist, trainable parameters, memory estimate against what the hardware has,
dtype support, token lengths against max length, rank sanity, what the run will write against the free
disk, and a time estimate from a measured micro-run of real training steps on the real data.
"""

from __future__ import annotations

import os
import random
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from studio_core.config import RunConfig
from studio_core.data.prepare import PreparedData
from studio_core.hardware.memory import GIB
from studio_core.methods import get_method
from studio_core.models.targets import default_target_modules, missing_targets, module_names_by_type
from studio_core.train.adapters import count_parameters, fit_problems
from studio_core.train.attention import training_attention
from studio_core.train.batching import answer_logits_work, collate, supervised_rows
from studio_core.train.precision import autocast, autocast_adapter_inputs, resolve_precision


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


def check_targets(report: PreflightReport, model, section) -> list[str]:
    """Target modules exist, and the method can wrap them (layer types, block sizes, 4-bit base)."""
    if not get_method(section.name).targeted:
        report.facts["target_modules"] = None  # prefix/prompt tuning adapts no module
        return []
    requested = section.target_modules
    targets = default_target_modules(model, section.name) if requested == "auto" else list(requested)
    report.facts["target_modules"] = targets
    missing = missing_targets(model, targets)
    if missing:
        groups = "; ".join(f"{kind}: {', '.join(names)}" for kind, names in module_names_by_type(model).items())
        report.errors.append(
            f"method.target_modules: {', '.join(missing)} not found in the model. Its modules by type: {groups}"
        )
    else:
        report.errors.extend(f"{p.field}: {p.message}" for p in fit_problems(model, section, targets))
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


RANKED = {"lora": "r", "qlora": "r", "dora": "r", "rslora": "r", "pissa": "r", "loha": "r", "lokr": "r",
          "adalora": "target_r"}  # methods whose rank plays LoRA's role (VeRA's r is its frozen projections')


def check_rank(report: PreflightReport, cfg: RunConfig, adapter_params: int, data: PreparedData,
               hidden_size: int | None) -> None:
    """The configured rank against the one recommended for this data and model (judged on the full split)."""
    from studio_core.train.presets import data_stats, recommend_rank

    stats = data_stats(data)
    advice = recommend_rank(stats, hidden_size)
    supervised = int(stats.supervised_tokens_per_row * stats.train_rows)
    field = RANKED.get(cfg.method.name)
    r = getattr(cfg.method, field) if field else None
    report.facts["rank"] = {
        "r": r, "recommended_r": advice.r, "reasons": advice.reasons, "train_rows": stats.train_rows,
        "supervised_train_tokens": supervised, "distinct_answer_share": round(stats.distinct_answer_share, 4),
        "adapter_parameters_per_supervised_token": round(adapter_params / max(1, supervised), 2),
    }
    if r is None:
        return
    if r >= 4 * advice.r:
        report.warnings.append(
            f"method.{field}={r} is {r / advice.r:.0f}x the rank recommended for this data (r={advice.r}): the "
            f"adapter can memorise {stats.train_rows:,} rows rather than learn the task. Why {advice.r}: "
            + "; ".join(advice.reasons)
        )
    elif 4 * r <= advice.r:
        report.warnings.append(
            f"method.{field}={r} is low for this data (recommended r={advice.r}): it may not hold what "
            f"{supervised:,} supervised tokens teach. Why {advice.r}: " + "; ".join(advice.reasons)
        )
    if r > 256:
        report.warnings.append(f"method.{field}={r} is very high: memory and time grow with r for little gain")


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
    """The estimate against the budget; over it, the changes that would fit (`studio_core.train.fit`)."""
    from studio_core.train.fit import device_kind, estimate_for, fit_to_memory, machine_memory, memory_budget

    available, budget, device = memory_budget(profile, cfg.preflight.memory_headroom)
    kind = device_kind(device)
    estimate = estimate_for(cfg, model.config, base_params, adapter_params, precision, kind)
    need = machine_memory(cfg, estimate, kind)
    report.facts["memory_gib"] = {**estimate.as_gib(), "per_process": round(estimate.total / GIB, 3),
                                  "processes": cfg.training.nproc, "total": round(need / GIB, 3), "device": device,
                                  "available": round(available / GIB, 3), "budget": round(budget / GIB, 3)}
    _check_processes(report, cfg, profile, kind)
    if need > budget:
        fit = fit_to_memory(cfg, model.config, base_params, adapter_params, precision, budget, kind)
        changes = ", ".join(f"{k}={v}" for k, v in fit.changes.items())
        advice = f"; it would fit with {changes}" if fit.fits else \
            f"; even with {changes or 'no change'} it would be {fit.reasons[-1].removeprefix('still ')}"
        report.facts["memory_fit"] = {"fits": fit.fits, "changes": fit.changes, "reasons": fit.reasons}
        per = f" ({cfg.training.nproc} processes of {estimate.total / GIB:.2f} GiB and their launcher)" \
            if cfg.training.nproc > 1 and kind == "cpu" else ""
        report.errors.append(
            f"estimated training memory {need / GIB:.2f} GiB{per} exceeds the {budget / GIB:.2f} GiB budget "
            f"({cfg.preflight.memory_headroom:.0%} of {available / GIB:.2f} GiB free){advice} (the Training Init "
            "page's 'Fit to this machine' applies it)"
        )


def check_privacy(report: PreflightReport, cfg: RunConfig, data: PreparedData, steps: int) -> None:
    """Under DP: the noise the target needs, the steps the budget allows, delta against N (`studio_core.privacy`)."""
    if not cfg.privacy.enabled:
        return
    from studio_core.errors import ConfigError
    from studio_core.privacy import logical_batch, plan_privacy, privacy_summary
    from studio_core.privacy.accounting import epsilon
    from studio_core.privacy.engine import GRAD_SAMPLE_LABELS, GRAD_SAMPLE_MODES

    examples = sum(1 for e in data.train_tokens if e.supervised_tokens)
    try:
        processes = cfg.training.nproc * cfg.training.nnodes
        plan = plan_privacy(cfg.privacy, examples, logical_batch(cfg.training, processes), steps)
    except ConfigError as e:
        report.errors.extend(str(p) for p in e.problems)
        return
    expected = steps
    if plan.target_epsilon is not None and plan.expected_epsilon > plan.target_epsilon:
        low, high = 0, steps  # the last step whose epsilon stays within the budget
        while low < high:
            mid = (low + high + 1) // 2
            inside = epsilon([(plan.noise_multiplier, plan.sample_rate, mid)], plan.delta, plan.accountant)
            low, high = (mid, high) if inside <= plan.target_epsilon else (low, mid - 1)
        expected = low
        report.warnings.append(f"privacy: with noise_multiplier={plan.noise_multiplier:g} the budget "
                               f"target_epsilon={plan.target_epsilon:g} is spent after {expected} of {steps} steps; "
                               "training will stop there")
    report.facts["privacy"] = {**plan.as_dict(), "expected_steps": expected, "summary": privacy_summary(plan),
                               "unit": "one training example (one row of the training split)",
                               "per_sample_gradients": GRAD_SAMPLE_LABELS[GRAD_SAMPLE_MODES[cfg.method.name]]}
    report.warnings.append(f"privacy: training.max_grad_norm={cfg.training.max_grad_norm:g} does not apply under DP; "
                           f"each example's gradient is clipped to privacy.max_grad_norm={plan.max_grad_norm:g}. "
                           "Pre-flight's time estimate is measured without DP (bench/dp_overhead.py measures the "
                           "ratio)")


def _check_processes(report: PreflightReport, cfg: RunConfig, profile, kind: str) -> None:
    """Several training processes: one GPU each under CUDA; on a CPU, more processes than cores only contend."""
    n = cfg.training.nproc
    if n == 1:
        return
    if kind == "cuda" and n > len(profile.gpus):
        report.errors.append(f"training.nproc={n} needs one GPU per process and this machine has "
                             f"{len(profile.gpus)}; set training.nproc={len(profile.gpus)}")
    cores = profile.cpu_cores_logical or os.cpu_count() or 1
    if kind == "cpu" and n > cores:
        report.warnings.append(f"training.nproc={n} processes on {cores} CPU cores: they take turns on the cores, "
                               "which is slower than fewer processes")


def check_disk(report: PreflightReport, cfg: RunConfig, run_path, base_params: int, adapter_params: int) -> None:
    """What the run will write (checkpoints, adapter, merged model, exports, package) against the free disk.

    Sizes in fp32, as the studio writes them: a checkpoint holds the adapter and AdamW's two moments; up to
    `save_total_limit` checkpoints plus one being written; the merged model and the ONNX export are the whole
    model; the compiled engine about the same (int8 less); the package copies the payload it signs.
    """
    import shutil

    from studio_core.methods import get_method

    t, fp32 = cfg.training, 4
    adapter = adapter_params * fp32
    kept = 2 if t.early_stopping_patience > 0 else 1
    sizes = {"checkpoints": (kept + 1) * 3 * adapter, "adapter": adapter}
    if get_method(cfg.method.name).mergeable:
        sizes["merged"] = base_params * fp32
        if cfg.export.enabled:
            sizes["onnx"] = base_params * fp32
            if cfg.compile.enabled:
                sizes["engine"] = base_params * (fp32 // 2 if cfg.compile.int8 else fp32)
    if cfg.package.enabled:
        sizes["package"] = sum(v for k, v in sizes.items() if k != "checkpoints")
    total = sum(sizes.values())
    free = shutil.disk_usage(run_path).free
    report.facts["disk"] = {"estimated_bytes": total, "free_bytes": free, "parts_bytes": sizes}
    if total > free:
        report.errors.append(f"the run will write about {total / GIB:.2f} GiB (checkpoints, merged model, exports) "
                             f"but only {free / GIB:.2f} GiB is free where its run dir is ({run_path}); free space "
                             "there, move the studio home (--home or PEFT_STUDIO_HOME), or turn off export/compile")
    elif total > 0.8 * free:
        report.warnings.append(f"the run will write about {total / GIB:.2f} GiB, over 80% of the {free / GIB:.2f} GiB "
                               "free where its run dir is")


def expected_padded_tokens(lengths: list[int], batch: int, draws: int = 400) -> float:
    """Rows x longest row of a batch of `batch` rows drawn at random (as the Trainer's sampler draws them), on
    average: what a training batch costs, padding included."""
    if not lengths:
        return 0.0
    rng = random.Random(0)
    return statistics.fmean(batch * max(rng.choices(lengths, k=batch)) for _ in range(draws))


def _forward_seconds(peft_model, batch, precision: str, device: str) -> float:
    """One no-grad forward of `batch` in eval mode (what a validation batch costs), the faster of two."""
    import torch

    peft_model.eval()
    times = []
    try:
        for _ in range(2):
            start = time.perf_counter()
            with torch.no_grad(), autocast(precision, device):
                peft_model(**batch)  # with the labels and the training's collation, as the Trainer evaluates
            times.append(time.perf_counter() - start)
    finally:
        peft_model.train()
    return min(times)


def _checkpoint_seconds(peft_model, optimizer) -> float:
    """Write what a Trainer checkpoint holds (the adapter's weights and the optimizer's state) to a scratch folder,
    timed: what each of the run's checkpoints costs."""
    import tempfile

    import torch

    with tempfile.TemporaryDirectory(prefix="studio-preflight-") as scratch:
        start = time.perf_counter()
        peft_model.save_pretrained(scratch)
        torch.save(optimizer.state_dict(), Path(scratch) / "optimizer.pt")
        return time.perf_counter() - start


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
    # Collated as training collates them (build_trainer), so the time measured is the time training takes.
    batch = collate(learnable[: cfg.training.per_device_batch_size], pad_id,
                    answer_logits_work(peft_model, learnable, pad_id))
    device = next(peft_model.parameters()).device
    batch = {k: v.to(device) for k, v in batch.items()}
    params = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.training.learning_rate)
    peft_model.train()
    times, losses = [], []
    # as training runs it (train/trainer.py: train)
    with autocast_adapter_inputs(peft_model, precision), training_attention(peft_model):
        for _ in range(steps):
            start = time.perf_counter()
            with autocast(precision, device.type):
                loss = peft_model(**batch).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            times.append(time.perf_counter() - start)
            losses.append(loss.item())
        checkpoint = _checkpoint_seconds(peft_model, optimizer)
        forward = _forward_seconds(peft_model, batch, precision, device.type)
    # The first step pays one-off costs (allocation, kernel selection), and the second runs faster than the run's
    # steady state (measured on the embedded model: step 2 at 3.1 ms a token, steps 4-6 at 3.4-3.8, sampled
    # training batches at 3.3-4.2): time from the third step on where there is one.
    per_batch = statistics.median(times[2:] if len(times) > 2 else times[1:] or times)
    t = cfg.training
    rows, width = batch["input_ids"].shape
    # A batch costs about its padded size, rows x its longest row: scale the measured batch to the run's own.
    train_batch = expected_padded_tokens([len(e.input_ids) for e in learnable], t.per_device_batch_size)
    per_train_batch = per_batch * train_batch / (rows * width)
    per_step = per_train_batch * t.gradient_accumulation_steps
    # The periodic validation (on start, every eval_steps, and after the last step where that is not one of
    # them, as the Trainer does): eval_rows held-out rows, forward only.
    evaluations = 1 + -(-t.max_steps // t.eval_steps)
    # A resumable checkpoint every save_steps and after the last step (the Trainer saves there too).
    checkpoints = -(-t.max_steps // t.save_steps)
    checkpoint_s = checkpoints * checkpoint
    val = [len(e.input_ids) for e in supervised_rows(data)[1][: t.eval_rows]]  # what build_trainer evaluates on
    val_tokens = sum(t.per_device_batch_size * max(val[i: i + t.per_device_batch_size])
                     for i in range(0, len(val), t.per_device_batch_size))
    validation_s = evaluations * forward * val_tokens / (rows * width)
    steps_s = per_step * t.max_steps
    tokens = int(batch["attention_mask"].sum())
    report.facts["time_estimate"] = {
        "micro_run_steps": steps, "seconds_per_batch": round(per_train_batch, 4), "tokens_per_batch": tokens,
        "tokens_per_s": round(tokens / per_batch, 1), "seconds_per_optimizer_step": round(per_step, 3),
        "max_steps": t.max_steps, "steps_s": round(steps_s, 1), "validations": evaluations,
        "validation_s": round(validation_s, 3), "checkpoints": checkpoints, "checkpoint_s": round(checkpoint_s, 3),
        "estimated_training_s": round(steps_s + validation_s + checkpoint_s, 1),
        "micro_run_losses": [round(x, 4) for x in losses],
        "measured_on": "simulation model" if simulated else "base model",
    }
    if not all(torch.isfinite(torch.tensor(losses))):
        report.errors.append(f"the micro-run produced a non-finite loss {losses}; check the data and precision")
