"""Differential privacy: DP-SGD over the adapter weights with Opacus (see `engine`), accounting (`accounting`).

`trainer_parts(ctx)` is the feature's one join to the training seam (`stages.trainer_parts`): None when
`privacy.enabled` is off, else a wrapper that replaces the built Trainer's training by DP-SGD and the metric
field that puts epsilon on every training metric line.
"""

from __future__ import annotations

from studio_core.privacy.accounting import PrivacyPlan, plan_privacy


def logical_batch(training, processes: int = 1) -> int:
    """Expected Poisson batch: per-device batch x gradient accumulation x processes."""
    return training.per_device_batch_size * training.gradient_accumulation_steps * processes


def trainer_parts(ctx):
    """The privacy engine as `TrainerParts` (None when privacy is off)."""
    if not ctx.config.privacy.enabled:
        return None
    from studio_core.train.trainer import TrainerParts

    holder: dict = {}

    def wrap(trainer):
        from studio_core.privacy.engine import GRAD_SAMPLE_MODES, PrivateTrainer, world_size

        cfg, args = ctx.config, trainer.args
        batch = args.per_device_train_batch_size * args.gradient_accumulation_steps * world_size()
        plan = plan_privacy(cfg.privacy, len(trainer.train_dataset), batch, args.max_steps)
        private = PrivateTrainer(trainer, plan, GRAD_SAMPLE_MODES[cfg.method.name], ctx.emit,
                                 lambda report: ctx.write_artifact("privacy.json", report))
        holder["trainer"] = private
        ctx.emit("privacy_plan", privacy_summary(plan) + f"; training.max_grad_norm={cfg.training.max_grad_norm:g} "
                 "does not apply under DP (each example is clipped to privacy.max_grad_norm instead)",
                 **plan.as_dict())
        return private

    def fields(state) -> dict:
        private = holder.get("trainer")
        return private.fields(state) if private else {}

    return TrainerParts(wrap=[wrap], metric_fields=[fields])


def privacy_summary(plan: PrivacyPlan) -> str:
    source = f"for target epsilon {plan.target_epsilon:g}" if plan.noise_from_target else "as configured"
    return (f"DP-SGD: noise multiplier {plan.noise_multiplier:.4f} ({source}), clip {plan.max_grad_norm:g} per example, "
            f"sample rate {plan.sample_rate:.5f} (expected batch {plan.logical_batch} of N = {plan.examples}), "
            f"delta {plan.delta:.3g}, {plan.accountant} accountant: epsilon {plan.expected_epsilon:.3f} after "
            f"{plan.steps} steps")
