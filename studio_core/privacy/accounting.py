"""Privacy accounting through Opacus' accountants: the sample rate, delta, the noise a budget needs, epsilon.

Every figure the studio reports comes from `opacus.accountants` on the run's (noise multiplier, sample rate,
steps, delta); nothing here re-derives the mathematics.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass

from studio_core.errors import ConfigError, Problem


@dataclass(frozen=True)
class PrivacyPlan:
    """What a DP run will do, fixed before its first step (and checkable after it)."""

    examples: int  # N: training examples (rows) the guarantee is about
    logical_batch: int  # expected Poisson batch: per-device batch x accumulation x processes
    sample_rate: float  # q, the probability an example joins a step's batch
    steps: int  # training.max_steps
    delta: float
    noise_multiplier: float
    max_grad_norm: float
    accountant: str
    target_epsilon: float | None
    noise_from_target: bool  # the noise multiplier was computed from target_epsilon
    secure_mode: bool
    expected_epsilon: float  # epsilon after `steps` steps, by the same accountant

    def as_dict(self) -> dict:
        return asdict(self)


def sample_rate(examples: int, logical_batch: int) -> float:
    """q as Opacus' Poisson data loader samples it: 1 / (batches per epoch at the logical batch size).

    This is logical_batch / N when N is a multiple of the logical batch, slightly more otherwise.
    """
    return 1 / math.ceil(examples / logical_batch)


def resolve_delta(delta: float | None, examples: int) -> float:
    """The configured delta, or 1/(10 N); refused at or above 1/N, naming N."""
    if examples < 1:
        raise ConfigError(Problem("privacy.enabled", "there are no training examples to protect"))
    if delta is None:
        return 1 / (10 * examples)
    if delta >= 1 / examples:
        raise ConfigError(Problem("privacy.delta", f"{delta:g} is at or above 1/N = {1 / examples:.3g} for the "
                                  f"N = {examples} training examples: a mechanism that publishes one random example "
                                  f"in full would satisfy it; set it below {1 / examples:.3g} (or leave it empty for "
                                  f"1/(10 N) = {1 / (10 * examples):.3g})"))
    return delta


def epsilon(history: list[tuple[float, float, int]], delta: float, accountant: str) -> float:
    """Epsilon spent by the (noise multiplier, sample rate, steps) history, by Opacus' accountant."""
    from opacus.accountants import create_accountant

    if not history or sum(h[2] for h in history) == 0:
        return 0.0
    if any(h[0] == 0 for h in history):
        return math.inf  # no noise: no privacy
    acc = create_accountant(mechanism=accountant)
    acc.history = [tuple(h) for h in history]
    with warnings.catch_warnings():  # RDP's "optimal order is the largest alpha": the bound holds, only looser
        warnings.simplefilter("ignore")
        return float(acc.get_epsilon(delta))


def noise_for_target(target_epsilon: float, delta: float, rate: float, steps: int, accountant: str) -> float:
    """The smallest noise multiplier (to Opacus' tolerance) whose epsilon after `steps` stays <= the target."""
    from opacus.accountants.utils import get_noise_multiplier

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(get_noise_multiplier(target_epsilon=target_epsilon, target_delta=delta, sample_rate=rate,
                                          steps=steps, accountant=accountant))


def plan_privacy(privacy, examples: int, logical_batch: int, steps: int) -> PrivacyPlan:
    """The run's plan from the privacy section, N, the logical batch and the steps."""
    if logical_batch > examples:
        raise ConfigError(Problem("training.per_device_batch_size", f"the logical batch ({logical_batch}) exceeds "
                                  f"the N = {examples} training examples: lower the batch or accumulation"))
    delta = resolve_delta(privacy.delta, examples)
    rate = sample_rate(examples, logical_batch)
    from_target = privacy.noise_multiplier is None
    sigma = (noise_for_target(privacy.target_epsilon, delta, rate, steps, privacy.accountant) if from_target
             else float(privacy.noise_multiplier))
    return PrivacyPlan(
        examples=examples, logical_batch=logical_batch, sample_rate=rate, steps=steps, delta=delta,
        noise_multiplier=sigma, max_grad_norm=privacy.max_grad_norm, accountant=privacy.accountant,
        target_epsilon=privacy.target_epsilon, noise_from_target=from_target, secure_mode=privacy.secure_mode,
        expected_epsilon=epsilon([(sigma, rate, steps)], delta, privacy.accountant),
    )
