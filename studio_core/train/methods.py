"""PEFT method construction, in one registry that later methods extend.

Each entry turns the `method` config section into a peft config. QLoRA is LoRA on a 4-bit base: the
difference is in how the base loads (`loads_in_4bit`), not in the adapter.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from studio_core.config import MethodConfig


@dataclass(frozen=True)
class Method:
    name: str
    build: Callable[[MethodConfig, list[str]], object]  # (method config, target modules) -> peft config
    loads_in_4bit: bool = False
    mergeable: bool = True


def _lora(cfg: MethodConfig, targets: list[str]):
    from peft import LoraConfig, TaskType

    return LoraConfig(
        r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=targets,
        bias="none", task_type=TaskType.CAUSAL_LM,
    )


METHODS: dict[str, Method] = {
    "lora": Method("lora", _lora),
    "qlora": Method("qlora", _lora, loads_in_4bit=True),
}


def get_method(name: str) -> Method:
    return METHODS[name]


def apply_method(model, cfg: MethodConfig, targets: list[str]):
    """Wrap `model` with the configured adapter; only the adapter's parameters stay trainable."""
    from peft import get_peft_model, prepare_model_for_kbit_training

    method = get_method(cfg.name)
    if method.loads_in_4bit:
        keep_4bit_layers_trainable(model)
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    return get_peft_model(model, method.build(cfg, targets))


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
