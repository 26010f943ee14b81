"""Generation metrics on answer strings: exact match, token F1 (SQuAD-style) and ROUGE-L (rouge-score).

All three compare normalised text: lowercased, punctuation removed, whitespace collapsed. The words are
split with that same normalisation (not rouge-score's default tokenizer, which drops non-ASCII letters, so a
French or Greek answer would score zero).
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Callable
from statistics import fmean

GENERATION_METRICS = ("exact_match", "token_f1", "rouge_l")


def normalize(text: str) -> str:
    """Lowercase, drop punctuation (any Unicode P* character), collapse whitespace."""
    text = "".join(" " if unicodedata.category(c).startswith("P") else c for c in text.lower())
    return " ".join(text.split())


def words(text: str) -> list[str]:
    return normalize(text).split()


def exact_match(prediction: str, reference: str) -> float:
    """1.0 when the normalised strings are equal, else 0.0."""
    return float(normalize(prediction) == normalize(reference))


def token_f1(prediction: str, reference: str) -> float:
    """Harmonic mean of word precision and recall (bag of words); two empty strings agree fully."""
    pred, ref = words(prediction), words(reference)
    if not pred or not ref:
        return float(pred == ref)
    overlap = sum((Counter(pred) & Counter(ref)).values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(pred), overlap / len(ref)
    return 2 * precision * recall / (precision + recall)


class _WordTokenizer:
    """rouge-score's tokenizer interface over `words` (keeps non-ASCII letters)."""

    def tokenize(self, text: str) -> list[str]:
        return words(text)


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F-measure (longest common subsequence of words), from the rouge-score package."""
    from rouge_score import rouge_scorer

    if not words(prediction) and not words(reference):
        return 1.0
    scorer = rouge_scorer.RougeScorer(["rougeL"], tokenizer=_WordTokenizer())
    return float(scorer.score(reference, prediction)["rougeL"].fmeasure)


_METRICS: dict[str, Callable[[str, str], float]] = {
    "exact_match": exact_match, "token_f1": token_f1, "rouge_l": rouge_l,
}


def generation_metrics(predictions: list[str], references: list[str],
                       names: list[str] | tuple[str, ...] = GENERATION_METRICS) -> dict[str, float]:
    """Each named metric averaged over the (prediction, reference) pairs; 0.0 for no pairs."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    pairs = list(zip(predictions, references))
    return {name: fmean(_METRICS[name](p, r) for p, r in pairs) if pairs else 0.0 for name in names}
