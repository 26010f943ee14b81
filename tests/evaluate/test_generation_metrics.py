"""Exact match, token F1 and ROUGE-L on strings whose scores can be worked out by hand."""

import pytest

from studio_core.evaluate.metrics import exact_match, generation_metrics, normalize, rouge_l, token_f1


def test_normalize_ignores_case_punctuation_and_spacing():
    assert normalize("  The  Cat, sat!  ") == "the cat sat"
    assert exact_match("The cat sat.", "the cat   sat") == 1.0
    assert exact_match("the cat", "the dog") == 0.0


def test_token_f1_by_hand():
    # prediction 2 words, reference 4, overlap 2: precision 1, recall 0.5 -> F1 2/3
    assert token_f1("Paris France", "the capital is Paris France"[4:]) == pytest.approx(2 * 1 * 0.5 / 1.5)
    assert token_f1("a a b", "a b b") == pytest.approx(2 / 3)  # bag overlap counts repeats once each
    assert token_f1("", "") == 1.0 and token_f1("x", "") == 0.0 and token_f1("x", "y") == 0.0


def test_rouge_l_by_hand():
    # LCS of "the cat sat on the mat" / "the cat on the mat" = 5: P 5/5, R 5/6 -> F 10/11
    assert rouge_l("the cat on the mat", "the cat sat on the mat") == pytest.approx(10 / 11)
    assert rouge_l("mat the on", "the on mat") == pytest.approx(2 / 3)  # order matters, unlike token F1
    assert rouge_l("Élan vital", "élan vital") == 1.0  # non-ASCII words are kept, not dropped


def test_generation_metrics_average_over_pairs_and_can_be_chosen():
    scores = generation_metrics(["The cat sat.", "dog"], ["the cat sat", "cat"])
    assert scores == {"exact_match": 0.5, "token_f1": 0.5, "rouge_l": 0.5}
    assert generation_metrics(["a"], ["a"], ["token_f1"]) == {"token_f1": 1.0}
    with pytest.raises(ValueError, match="2 predictions for 1 references"):
        generation_metrics(["a", "b"], ["a"])
