"""LoRA and its variants that share its parameters: QLoRA (a 4-bit base), DoRA, rsLoRA."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from studio_core.errors import Problem
from studio_core.methods.base import BuildContext, Method, TargetedMethod, task_type


class LoraMethod(TargetedMethod):
    name: Literal["lora", "qlora", "dora", "rslora"] = Field(
        "lora", description="PEFT method (see the method table on this page); the parameters below are its own."
    )
    r: int = Field(16, ge=1, le=1024, description="LoRA rank: the inner dimension of the update B @ A.")
    alpha: float = Field(32.0, gt=0, description="LoRA alpha; the update is scaled by alpha / r "
                         "(alpha / sqrt(r) for rslora).")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout on the LoRA input. 0 by default: a mask over "
                           "every adapted projection's input costs the embedded model's CPU training about a quarter "
                           "of its time (bench/train_throughput.py --studio-method), and a default run sees each row "
                           "less than once, so there is nothing to regularise; 0.05-0.1 for several epochs on few rows "
                           "(the Max quality preset sets 0.05).")
    init: Literal["default", "gaussian", "olora", "loftq"] = Field(
        "default",
        description="Adapter initialisation: 'default' (A Kaiming-uniform, B zero), 'gaussian', 'olora' "
        "(orthonormal, from a QR of the base weight; not for qlora), 'loftq' (qlora only: initialises the "
        "adapter to cancel the 4-bit quantization error).",
    )


SECTIONS = (LoraMethod,)


def build(m, targets, ctx: BuildContext):
    from peft import LoraConfig

    init = {"default": True, "gaussian": "gaussian", "olora": "olora", "loftq": True}[m.init]  # loftq: after load
    return LoraConfig(r=m.r, lora_alpha=m.alpha, lora_dropout=m.dropout, target_modules=targets, bias="none",
                      use_dora=m.name == "dora", use_rslora=m.name == "rslora", init_lora_weights=init,
                      task_type=task_type())


def problems(config) -> list[Problem]:
    m, found = config.method, []
    if not isinstance(m, LoraMethod):
        return found
    if m.init == "loftq" and m.name != "qlora":
        found.append(Problem("method.init", "loftq initialises the adapter against the 4-bit quantization "
                             "error, so it needs method.name=qlora; use init=default for " + m.name))
    if m.init == "olora" and m.name == "qlora":
        found.append(Problem("method.init", "olora rewrites the base weights, which a 4-bit base cannot "
                             "hold; use init=default or loftq, or method.name=lora"))
    return found


def fit_problems(section, modules) -> list[Problem]:
    if getattr(section, "init", "") == "olora" and any(type(mod).__name__ == "Conv1D" for _, mod in modules):
        return [Problem("method.init", "olora cannot factor GPT-2 style Conv1D weights (stored transposed); use "
                        "init=default")]
    return []


_NOTE = "Trains B @ A beside each target weight; merges exactly."
METHODS = (
    Method("lora", "LoRA", "low-rank update B @ A on each target weight", build, notes=(_NOTE,),
           fit_problems=fit_problems),
    Method("qlora", "QLoRA", "LoRA on the base loaded in 4-bit NF4 (about a seventh of the weight memory)", build,
           loads_in_4bit=True, notes=("Merges into the NF4 base de-quantized to fp32: the weights it trained on.",),
           fit_problems=fit_problems),
    Method("dora", "DoRA", "LoRA on the direction plus a trained magnitude per output (weight-decomposed)", build,
           fit_problems=fit_problems),
    Method("rslora", "rsLoRA", "LoRA scaled by alpha / sqrt(r), which keeps high ranks stable", build,
           fit_problems=fit_problems),
)
