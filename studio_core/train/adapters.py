"""Applying a PEFT method (`studio_core.methods`) to a model: check it fits the model's layers, wrap the model,
count what trains, and the hooks a method adds to the training loop.

PiSSA and OLoRA start by rewriting the base weights (base minus the adapter's initial product); their adapter is
saved converted to a plain LoRA of rank 2r against the original base, so it loads on the untouched base model.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from studio_core.errors import ConfigError, Problem
from studio_core.methods import METHODS, BuildContext, get_method

FEEDFORWARD_NAMES = ("gate_proj", "up_proj", "down_proj", "gate_up_proj", "c_fc", "mlp.c_proj", "fc1", "fc2",
                     "dense_h_to_4h", "dense_4h_to_h", "wi", "wo", "w1", "w2", "w3", "output.dense")



def method_table() -> list[dict[str, Any]]:
    """One row per method: what the studio's method table and `peft-studio methods` show."""
    return [{"id": m.id, "method": m.title, "what it trains": m.summary, "mergeable": m.mergeable,
             "4-bit base": "loads it" if m.loads_in_4bit else ("yes" if m.quantized_base else "no"),
             "layers": "virtual tokens" if not m.targeted else ", ".join(m.layer_types)} for m in METHODS.values()]


def feedforward_modules(targets: list[str]) -> tuple[str, ...]:
    """IA3's feed-forward modules among `targets` (scaled on their input): the MLP projections by name."""
    return tuple(t for t in targets if t in FEEDFORWARD_NAMES)


def fit_problems(model, section, targets: list[str]) -> list[Problem]:
    """What stops `section`'s method from wrapping `targets` of this model, in peft's terms, with the fix."""
    from studio_core.models.targets import matching_modules

    method = get_method(section.name)
    if not method.targeted:
        return []
    problems: list[Problem] = []
    modules = matching_modules(model, targets)
    wrong = sorted({f"{path.rsplit('.', 1)[-1]} ({type(mod).__name__})" for path, mod in modules
                    if type(mod).__name__ not in method.layer_types})
    if wrong:
        alternatives = ", ".join(m.id for m in METHODS.values() if m.targeted and
                                 all(type(mod).__name__ in m.layer_types for _, mod in modules))
        problems.append(Problem("method.name", f"{method.title} can only wrap {', '.join(method.layer_types)} "
                                f"layers; {', '.join(wrong)} are not. Use {alternatives or 'another method'}, or "
                                "set method.target_modules to linear layers only"))
    if method.fit_problems is not None:
        problems += method.fit_problems(section, modules)
    if getattr(model, "is_loaded_in_4bit", False) and not method.quantized_base and not method.loads_in_4bit:
        problems.append(Problem("method.name", f"{method.title} cannot train on a 4-bit base; load the base in "
                                "full precision or use qlora, oft, ia3, vera or adalora"))
    return problems



def check_fits(model, section, targets: list[str]) -> None:
    problems = fit_problems(model, section, targets)
    if problems:
        raise ConfigError(problems)


def apply_method(model, section, targets: list[str], context: BuildContext | None = None):
    """Wrap `model` with the configured adapter; only the adapter's parameters stay trainable."""
    from peft import get_peft_model, prepare_model_for_kbit_training

    method = get_method(section.name)
    context = context or BuildContext()
    if method.targeted:
        check_fits(model, section, targets)
    if section.name == "ia3" and not context.feedforward:
        from studio_core.models.targets import default_feedforward_modules

        ff = default_feedforward_modules(model, targets) or feedforward_modules(targets)
        context = dataclasses.replace(context, feedforward=tuple(ff))
    if method.loads_in_4bit:
        keep_4bit_layers_trainable(model)
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    peft_model = get_peft_model(model, method.build(section, targets, context))
    if getattr(section, "init", "") == "loftq" and context.loftq:
        _loftq_init(peft_model, context)
    return peft_model


def _loftq_init(peft_model, context: BuildContext) -> None:
    """LoftQ for QLoRA: set each adapter so that the 4-bit weight plus B @ A approximates the original weight."""
    import torch
    from peft import replace_lora_weights_loftq

    if not torch.cuda.is_available():  # peft quantizes each weight on the GPU to measure the error
        raise ConfigError(Problem("method.init", "loftq initialisation needs a CUDA GPU (peft's "
                                  "replace_lora_weights_loftq); none is visible, so use init=default here"))
    if not context.model_dir:
        raise ConfigError(Problem("method.init", "loftq needs the base model's safetensors folder"))
    files = sorted(Path(context.model_dir).glob("*.safetensors"))
    if len(files) != 1:
        raise ConfigError(Problem("method.init", f"loftq reads one safetensors file; {context.model_dir} has "
                                  f"{len(files)}; use init=default"))
    replace_lora_weights_loftq(peft_model, model_path=str(files[0]))


def rewrites_base(section) -> bool:
    """PiSSA (and LoRA with olora init) change the base weights at init: their adapter is saved converted."""
    return get_method(section.name).rewrites_base or getattr(section, "init", "") == "olora"


def save_initial_adapter(peft_model, folder: Path) -> None:
    """The adapter as initialised: what converts a PiSSA/OLoRA adapter back onto the original base."""
    peft_model.save_pretrained(str(folder), safe_serialization=True)


def training_callbacks(section) -> list:
    """The hooks the method adds to the training loop (AdaLoRA's rank reallocation), from its module."""
    method = get_method(section.name)
    return method.callbacks(section) if method.callbacks is not None else []


def keep_4bit_layers_trainable(model) -> None:
    """Stop bitsandbytes from repacking 4-bit weights for CPU inference during evaluation.

    On CPUs with AVX-512 BF16, bitsandbytes (0.50) repacks a Linear4bit's weight at its first eval-mode forward
    and never unpacks it for training: every later training forward then runs `gemv_4bit`, which has no autograd
    kernel, and gradients flowing through the frozen 4-bit layers are silently wrong. Evaluation inside a training
    run (the step-0 baseline, periodic evals) would trigger it, so the repacking is switched off for models we
    train; tests/train/test_training.py checks that gradients after an evaluation equal those without one.
    """
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts; 4-bit packed weights count as their logical size."""
    trainable = total = 0
    for param in model.parameters():
        n = param.numel()
        if param.__class__.__name__ == "Params4bit":
            n *= 2  # two 4-bit values per stored byte
        total += n
        if param.requires_grad:
            trainable += n
    return trainable, total
