"""The overfitting verdict, read from the training curves (the run's metrics.jsonl lines)."""

from __future__ import annotations

from statistics import fmean
from typing import Any

# Validation loss must rise by more than this fraction of its best value to count: eval noise is not a trend.
RISE_FRACTION = 0.02


def overfitting_verdict(metrics: list[dict]) -> dict[str, Any]:
    """Judge the curves: does validation loss rise after its best point while training loss keeps falling?

    `metrics` are metrics.jsonl records: those with `val_loss` are evaluations, those with `loss` training
    steps (each with `step`). Returns `verdict` (a sentence), `overfitting` (bool) and the figures behind it.
    """
    evals = sorted((m["step"], m["val_loss"]) for m in metrics if m.get("val_loss") is not None)
    train = sorted((m["step"], m["loss"]) for m in metrics if m.get("loss") is not None)
    if len(evals) < 2 or not train:
        return {"verdict": "not enough evaluations to judge (need two or more, and training losses)",
                "overfitting": False, "evaluations": len(evals)}
    best_step, best = min(evals, key=lambda e: (e[1], e[0]))
    last_step, last = evals[-1]
    report = {"best_step": best_step, "best_val_loss": best, "last_step": last_step, "last_val_loss": last,
              "evaluations": len(evals), "overfitting": False}
    if last_step == best_step or last <= best * (1 + RISE_FRACTION):
        return {**report, "verdict": "no sign of overfitting: validation loss did not rise after its best point"}
    train_at_best, train_last = _train_loss_near(train, evals, best_step), _train_loss_near(train, evals, last_step)
    report.update(train_loss_at_best=train_at_best, train_loss_last=train_last)
    if train_last < train_at_best:
        return {**report, "overfitting": True, "from_step": best_step, "verdict": (
            f"overfitting from step {best_step}: validation loss rose from {best:.4f} to {last:.4f} while training "
            f"loss fell from {train_at_best:.4f} to {train_last:.4f}; the best checkpoint (step {best_step}) is the "
            "one to keep, or train fewer steps / with more data")}
    return {**report, "verdict": (
        f"validation loss rose from {best:.4f} to {last:.4f} after step {best_step}, but training loss did not fall "
        f"({train_at_best:.4f} -> {train_last:.4f}): unstable training rather than overfitting; try a lower "
        "learning rate")}


def _train_loss_near(train: list[tuple[int, float]], evals: list[tuple[int, float]], step: int) -> float:
    """Mean training loss over the steps since the evaluation before `step` (one step's loss is noisy)."""
    previous = max((s for s, _ in evals if s < step), default=-1)
    window = [loss for s, loss in train if previous < s <= step]
    if window:
        return fmean(window)
    return min(train, key=lambda t: abs(t[0] - step))[1]
