"""The legal-audit demo's decision, measured as a decision: accuracy against the majority-class baseline,
per rule, a confusion matrix, and whether the accuracy is above chance at all.

Verdict accuracy alone reads as a gain when it is a coin toss ("0.000 -> 0.469" is an untrained model that
answers in the wrong format, then a tuned one that guesses). The baseline is what always answering the most
common expected verdict scores on the same rows; `above_baseline` is a one-sided exact binomial test of the
hits against that rate (p < 0.05), so a handful of lucky rows does not count as learning.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

from studio_core.data.demo import COMPLIANT, NON_COMPLIANT, parse_verdict, rule_of

LABELS = (COMPLIANT, NON_COMPLIANT)
NO_VERDICT = "no verdict"
SIGNIFICANCE = 0.05


def binomial_tail(hits: int, n: int, p: float) -> float:
    """P(X >= hits) for X ~ Binomial(n, p): the chance of doing at least this well by guessing at rate p."""
    if hits <= 0:
        return 1.0
    if p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    total = 0.0
    for k in range(hits, n + 1):
        total += math.exp(math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
                          + k * math.log(p) + (n - k) * math.log1p(-p))
    return min(1.0, total)


def _accuracy(pairs: list[tuple[str, str | None]]) -> dict[str, Any]:
    """Accuracy, the majority-class baseline and the binomial test on (expected, answered) pairs."""
    n = len(pairs)
    hits = sum(expected == answered for expected, answered in pairs)
    counts = Counter(expected for expected, _ in pairs)
    majority, majority_rows = counts.most_common(1)[0] if counts else (None, 0)
    baseline = majority_rows / n if n else 0.0
    p_value = binomial_tail(hits, n, baseline) if n else 1.0
    return {"rows": n, "accuracy": hits / n if n else 0.0, "majority_verdict": majority,
            "majority_baseline": baseline, "p_value_vs_baseline": p_value,
            "above_baseline": bool(n) and hits / n > baseline and p_value < SIGNIFICANCE}


def verdict_report(prompts: list[str], predictions: list[str], references: list[str]) -> dict[str, Any]:
    """Overall and per-rule accuracy with their baselines, and the confusion matrix (expected x answered).

    `prompts` are the user turns' text, where the demo states each row's rule. A reference without a verdict is
    an error (it is not a demo row); an answer without one counts as wrong and lands in the "no verdict" column.
    """
    if not len(prompts) == len(predictions) == len(references):
        raise ValueError(f"{len(prompts)} prompts, {len(predictions)} answers and {len(references)} references; "
                         "pass one of each per row")
    pairs: list[tuple[str, str | None]] = []
    for i, ref in enumerate(references):
        expected = parse_verdict(ref)
        if expected is None:
            raise ValueError(f"reference {i} has no verdict: {ref!r}")
        pairs.append((expected, parse_verdict(predictions[i] or "")))
    by_rule: dict[str, list[tuple[str, str | None]]] = {}
    for prompt, pair in zip(prompts, pairs, strict=True):
        by_rule.setdefault(rule_of(prompt) or "other", []).append(pair)
    confusion = {expected: {answered: sum(1 for e, a in pairs if e == expected and (a or NO_VERDICT) == answered)
                            for answered in (*LABELS, NO_VERDICT)} for expected in LABELS}
    return {**_accuracy(pairs), "confusion": confusion,
            "per_rule": {rule: _accuracy(rows) for rule, rows in sorted(by_rule.items())},
            "significance": SIGNIFICANCE}


def headline(report: dict[str, Any]) -> str:
    """One line saying what the accuracy means: above the majority baseline, or not distinguishable from it."""
    acc, base = report["accuracy"], report["majority_baseline"]
    if report["above_baseline"]:
        return (f"verdict accuracy {acc:.3f} is above the majority-class baseline {base:.3f} "
                f"(always {report['majority_verdict']}; binomial p = {report['p_value_vs_baseline']:.2g})")
    return (f"verdict accuracy {acc:.3f} is NOT above the majority-class baseline {base:.3f} "
            f"(always {report['majority_verdict']}; binomial p = {report['p_value_vs_baseline']:.2g}): "
            "the decision was not learnt")
