"""Use-case presets and the rank recommendation, each with the reasoning shown to the user.

A preset sets every training parameter and the method with all its parameters; the data, the model, the
seed, the precision, the backend and the label words stay the user's. The rank follows the data when its
statistics are known (`recommend_rank`): more supervised tokens hold more to learn, short categorical answers
need little capacity, long generations more, and a rank near the model's width stops being low-rank. Fitting the
result into the machine's memory is `studio_core.train.fit`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from studio_core.config import TrainingConfig
from studio_core.methods import switch_method


@dataclass(frozen=True)
class Preset:
    id: str
    title: str
    purpose: str
    method: str
    rank_scale: float  # times the recommended rank
    training: dict[str, Any]
    method_params: dict[str, Any] = field(default_factory=dict)


_STABLE = {"weight_decay": 0.0, "max_grad_norm": 1.0}  # no decay on adapters; clipping guards early steps
PRESETS: dict[str, Preset] = {p.id: p for p in (
    Preset("quick_try", "Quick try", "see the whole loop work in a few minutes on a CPU; not for a model you ship",
           "lora", 0.5,
           {"max_steps": 30, "per_device_batch_size": 4, "gradient_accumulation_steps": 1, "learning_rate": 1e-3,
            "lr_scheduler": "linear", "warmup_ratio": 0.0, "eval_steps": 10, "save_steps": 10,
            "early_stopping_patience": 0, "gradient_checkpointing": False, "eval_rows": 16, **_STABLE}),
    Preset("balanced", "Balanced", "a sound default: LoRA on every projection, a few hundred steps, early stopping",
           "lora", 1.0,
           {"max_steps": 200, "per_device_batch_size": 4, "gradient_accumulation_steps": 4, "learning_rate": 2e-4,
            "lr_scheduler": "cosine", "warmup_ratio": 0.05, "eval_steps": 20, "save_steps": 40,
            "early_stopping_patience": 3, "gradient_checkpointing": False, "eval_rows": 64, **_STABLE}),
    Preset("max_quality", "Max quality", "the most the data supports: DoRA at twice the rank, a larger effective "
           "batch, a lower learning rate and more steps", "dora", 2.0,
           {"max_steps": 600, "per_device_batch_size": 4, "gradient_accumulation_steps": 8, "learning_rate": 1e-4,
            "lr_scheduler": "cosine", "warmup_ratio": 0.05, "eval_steps": 50, "save_steps": 100,
            "early_stopping_patience": 4, "gradient_checkpointing": False, "eval_rows": 128, **_STABLE},
           {"dropout": 0.05}),
    Preset("low_memory", "Low memory", "fit the smallest machine: QLoRA (4-bit base) on a GPU, gradient "
           "checkpointing, one example per pass with the effective batch kept by accumulation", "qlora", 0.5,
           {"max_steps": 200, "per_device_batch_size": 1, "gradient_accumulation_steps": 16,
            "learning_rate": 2e-4, "lr_scheduler": "cosine", "warmup_ratio": 0.05, "eval_steps": 20,
            "save_steps": 40, "early_stopping_patience": 3, "gradient_checkpointing": True, "eval_rows": 32,
            **_STABLE}),
)}
PRESET_IDS = tuple(PRESETS)
RANK_MIN, RANK_MAX = 4, 128
MAX_EPOCHS = 3
# The user's machine and reproducibility, and the labels their answers carry, not the recipe's.
KEPT_TRAINING = ("enabled", "seed", "backend", "precision", "label_words", "label_loss_weight", "label_group")


@dataclass(frozen=True)
class DataStats:
    """What the rank depends on, from a prepared dataset (`data_stats`)."""

    train_rows: int
    supervised_tokens_per_row: float
    distinct_answer_share: float  # distinct assistant answers / rows: low for classification-like tasks


@dataclass(frozen=True)
class RankAdvice:
    r: int
    reasons: list[str]


def data_stats(data) -> DataStats:
    """From `studio_core.data.prepare.PreparedData`: the whole training split, not a simulation slice."""
    tokens = data.train_tokens
    rows = data.report["rows"]["train"]
    per_row = sum(e.supervised_tokens for e in tokens) / max(1, len(tokens))
    answers = {tuple(label for label in e.labels if label >= 0) for e in tokens}
    return DataStats(rows, per_row, len(answers) / max(1, len(tokens)))


def _power_of_two(x: float) -> int:
    return 2 ** round(math.log2(max(1.0, x)))


def recommend_rank(stats: DataStats | None, hidden_size: int | None, scale: float = 1.0) -> RankAdvice:
    """A LoRA rank for this data and model, with each step of the reasoning."""
    reasons = []
    if stats is None:
        r = 16.0
        reasons.append("no data statistics yet: r=16, the usual starting point (preview the data to refine it)")
    else:
        total = stats.train_rows * stats.supervised_tokens_per_row
        r = 4.0 if total < 20_000 else 8.0 if total < 100_000 else 16.0 if total < 1_000_000 else \
            32.0 if total < 10_000_000 else 64.0
        reasons.append(f"{stats.train_rows:,} training rows x {stats.supervised_tokens_per_row:.0f} supervised "
                       f"tokens each = {total:,.0f} tokens to learn from: r={r:.0f}")
        if stats.distinct_answer_share < 0.05 or stats.supervised_tokens_per_row <= 8:
            r /= 2
            reasons.append(f"answers are short or repeat ({stats.distinct_answer_share:.0%} distinct, "
                           f"{stats.supervised_tokens_per_row:.0f} tokens): a narrow task, halved to r={r:.0f}")
        elif stats.supervised_tokens_per_row >= 200:
            r *= 2
            reasons.append(f"long answers ({stats.supervised_tokens_per_row:.0f} tokens): open-ended generation "
                           f"needs more capacity, doubled to r={r:.0f}")
    if scale != 1.0:
        r *= scale
        reasons.append(f"the preset scales the rank by {scale:g}: r={r:.0f}")
    if hidden_size:
        cap = max(RANK_MIN, _power_of_two(hidden_size / 16))
        if r > cap:
            r = cap
            reasons.append(f"capped at hidden size {hidden_size} / 16 = {cap}: beyond that the update is no "
                           "longer low-rank and memorises instead")
    final = min(RANK_MAX, max(RANK_MIN, _power_of_two(r)))
    if final != r:
        reasons.append(f"rounded to a power of two within {RANK_MIN}-{RANK_MAX}: r={final}")
    return RankAdvice(final, reasons)


def _steps_for_data(preset: Preset, stats: DataStats | None) -> tuple[dict[str, Any], str | None]:
    """The preset's training recipe, its steps capped at MAX_EPOCHS passes over a small dataset."""
    recipe = dict(preset.training)
    if stats is None:
        return recipe, None
    per_step = recipe["per_device_batch_size"] * recipe["gradient_accumulation_steps"]
    cap = max(10, math.ceil(MAX_EPOCHS * stats.train_rows / per_step))
    if cap >= recipe["max_steps"]:
        return recipe, None
    eval_steps = max(1, min(recipe["eval_steps"], cap // 5))
    save_steps = eval_steps * max(1, recipe["save_steps"] // recipe["eval_steps"])
    recipe.update(max_steps=cap, eval_steps=eval_steps, save_steps=min(save_steps, cap - cap % eval_steps))
    return recipe, (f"steps capped at {cap} ({MAX_EPOCHS} passes over {stats.train_rows:,} rows at {per_step} "
                    f"examples a step, instead of {preset.training['max_steps']}): more passes over a small "
                    "dataset memorise it")


def apply_preset(data: dict[str, Any], preset_id: str, stats: DataStats | None = None,
                 hidden_size: int | None = None, device: str = "cuda") -> tuple[dict[str, Any], list[str]]:
    """Config data with the preset's method and training set in full; returns it and why each choice.

    `device` is where it will train: on "cpu" a 4-bit base saves no memory (bench/memory.py measured QLoRA
    above LoRA: the fp32 checkpoint stays mapped beside the 4-bit copy) and bitsandbytes is slower, so QLoRA
    presets use LoRA there.
    """
    preset = PRESETS[preset_id]
    advice = recommend_rank(stats, hidden_size, preset.rank_scale)
    name, cpu_note = preset.method, None
    if name == "qlora" and device == "cpu":
        name, cpu_note = "lora", ("lora, not qlora: on a CPU a 4-bit base saves no memory (the fp32 checkpoint "
                                  "stays mapped beside it) and trains slower; gradient checkpointing and one "
                                  "example per pass do the saving")
    method = switch_method({"enabled": data.get("method", {}).get("enabled", True), "target_modules": "auto"},
                           name)
    method.update(r=advice.r, alpha=float(2 * advice.r), **preset.method_params)
    kept = {k: v for k, v in data.get("training", {}).items() if k in KEPT_TRAINING}
    recipe, steps_reason = _steps_for_data(preset, stats)
    label_note = None
    if kept.get("label_words") and recipe["per_device_batch_size"] < 2:
        kept.pop("label_words")
        kept.pop("label_group", None)
        label_note = (f"label words cleared: {preset.title} trains one example per pass and the label loss compares "
                      "each row with the others of its pass; set a batch of 2 or more to use it")
    elif kept.get("label_group") and kept.get("label_words") and (
            recipe["per_device_batch_size"] % len(kept["label_words"])):
        kept.pop("label_group")
        label_note = (f"label group cleared: {preset.title} trains {recipe['per_device_batch_size']} examples per "
                      f"pass, not a multiple of the {len(kept['label_words'])} label words a group's tuple holds")
    training = TrainingConfig(**{**recipe, **kept})
    reasons = [f"{preset.title}: {preset.purpose}", *advice.reasons,
               f"alpha = 2 x r = {2 * advice.r}: the update's scale stays the same when r changes",
               (f"{name} with {training.max_steps} steps of {training.per_device_batch_size} x "
                f"{training.gradient_accumulation_steps} examples at learning rate {training.learning_rate:g}")]
    if cpu_note:
        reasons.append(cpu_note)
    if label_note:
        reasons.append(label_note)
    if steps_reason:
        reasons.append(steps_reason)
    if stats is not None:
        epochs = training.max_steps * training.per_device_batch_size * training.gradient_accumulation_steps \
            / max(1, stats.train_rows)
        reasons.append(f"that is {epochs:.2f} passes over the {stats.train_rows:,} training rows")
    return {**data, "method": method, "training": training.model_dump(mode="json")}, reasons


def recommend_preset(config, preset_id: str, home=None) -> tuple[dict[str, Any], list[str]]:
    """`apply_preset` with the statistics of the config's data (prepared as a run would) and its model's width."""
    from transformers import AutoConfig

    from studio_core.data.prepare import prepare_data
    from studio_core.train.fit import device_kind, memory_budget
    from studio_core.hardware.profile import hardware_profile
    from studio_core.models.resolve import load_tokenizer, resolve_in_home
    from studio_core.runs import studio_home

    resolved = resolve_in_home(config.model, home)
    data = prepare_data(config.data, lambda: load_tokenizer(resolved))
    hidden = getattr(AutoConfig.from_pretrained(resolved.path), "hidden_size", None)
    _, _, device = memory_budget(hardware_profile(studio_home(home)), 1.0)  # where "fit" would train it
    return apply_preset(config.model_dump(mode="json"), preset_id, data_stats(data), hidden, device_kind(device))
