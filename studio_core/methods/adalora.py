"""AdaLoRA: SVD-form LoRA whose rank budget is pruned to where it matters during training."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from studio_core.errors import Problem
from studio_core.methods.base import BuildContext, Method, TargetedMethod, task_type


class AdaLoraMethod(TargetedMethod):
    name: Literal["adalora"] = Field("adalora", description="PEFT method.")
    init_r: int = Field(12, ge=1, le=1024, description="Rank every module starts with.")
    target_r: int = Field(8, ge=1, le=1024, description="Average rank per module once the budget is pruned.")
    alpha: float = Field(32.0, gt=0, description="Scale of the update (alpha / r).")
    dropout: float = Field(0.05, ge=0.0, lt=1.0, description="Dropout on the adapter input.")
    warmup_fraction: float = Field(
        0.1, ge=0.0, lt=1.0, description="Fraction of training.max_steps before rank pruning starts (tinit)."
    )
    final_fraction: float = Field(
        0.3, ge=0.0, lt=1.0, description="Fraction of training.max_steps at the end trained at the final ranks "
        "(tfinal).",
    )
    update_every: int = Field(1, ge=1, description="Steps between two rank reallocations (deltaT).")
    orth_reg_weight: float = Field(0.5, ge=0.0, description="Weight of the orthogonality regulariser on P and Q.")


SECTIONS = (AdaLoraMethod,)


def build(m, targets, ctx: BuildContext):
    from peft import AdaLoraConfig

    steps = ctx.max_steps
    return AdaLoraConfig(init_r=m.init_r, target_r=m.target_r, lora_alpha=m.alpha, lora_dropout=m.dropout,
                         target_modules=targets, tinit=int(steps * m.warmup_fraction),
                         tfinal=int(steps * m.final_fraction), deltaT=m.update_every, total_step=steps,
                         orth_reg_weight=m.orth_reg_weight, task_type=task_type())


def problems(config) -> list[Problem]:
    m, found = config.method, []
    if not isinstance(m, AdaLoraMethod):
        return found
    if m.target_r > m.init_r:
        found.append(Problem("method.target_r", f"{m.target_r} exceeds method.init_r={m.init_r}: AdaLoRA prunes "
                             "ranks down from init_r; set target_r <= init_r"))
    if config.training.max_steps * (1 - m.warmup_fraction - m.final_fraction) < 1:
        found.append(Problem("method.final_fraction", "warmup_fraction + final_fraction leave no step of "
                             f"training.max_steps={config.training.max_steps} to prune ranks in; lower them or "
                             "raise training.max_steps"))
    return found


def callbacks(section) -> list:
    """AdaLoRA reallocates its rank budget after each optimizer step, while the gradients are still there (the
    Trainer zeroes them after `on_optimizer_step`)."""
    from transformers import TrainerCallback

    class AdaLoraBudget(TrainerCallback):
        def on_optimizer_step(self, args, state, control, model=None, **kwargs):
            model.base_model.update_and_allocate(state.global_step)

    return [AdaLoraBudget()]


METHODS = (
    Method("adalora", "AdaLoRA", "SVD-form LoRA whose rank budget is pruned to where it matters during training",
           build, callbacks=callbacks,
           # Its saved adapter is cut to the ranks kept; on a bf16 base (a bf16 residual stream) that rounds apart
           # from the trained model: 3e-3 of the logits on the tiny model, against the 1e-4 reload check.
           bf16_base=False),
)
