"""The demo's decision is measured against the majority-class baseline, per rule, with a confusion matrix."""

import pytest

from studio_core.data.demo import generate_legal_audit, parse_verdict, rule_of
from studio_core.evaluate.verdicts import binomial_tail, headline, verdict_report


def _rows(n=64):
    rows = generate_legal_audit(n, seed=7)
    return [f"{r['instruction']}\n\n{r['input']}" for r in rows], [r["output"] for r in rows]


def test_always_answering_one_verdict_scores_the_baseline_and_is_not_called_learning():
    prompts, refs = _rows()
    report = verdict_report(prompts, ["Verdict: COMPLIANT\nReason: x"] * len(refs), refs)
    compliant = sum(parse_verdict(r) == "COMPLIANT" for r in refs)
    assert report["accuracy"] == pytest.approx(compliant / len(refs))
    assert report["accuracy"] <= report["majority_baseline"] and not report["above_baseline"]
    assert "NOT above the majority-class baseline" in headline(report)
    assert report["confusion"]["COMPLIANT"]["COMPLIANT"] == compliant
    assert report["confusion"]["NON-COMPLIANT"]["COMPLIANT"] == len(refs) - compliant


def test_right_answers_beat_the_baseline_on_every_rule_and_a_missing_verdict_counts_as_wrong():
    prompts, refs = _rows()
    answers = list(refs)
    answers[0] = "I cannot tell."
    report = verdict_report(prompts, answers, refs)
    assert report["accuracy"] == pytest.approx((len(refs) - 1) / len(refs)) and report["above_baseline"]
    assert report["p_value_vs_baseline"] < 1e-9
    expected_first = parse_verdict(refs[0])
    assert report["confusion"][expected_first]["no verdict"] == 1
    assert set(report["per_rule"]) == {rule_of(p) for p in prompts} and len(report["per_rule"]) == 8
    assert sum(r["rows"] for r in report["per_rule"].values()) == len(refs)
    assert "is above the majority-class baseline" in headline(report)


def test_a_few_lucky_rows_are_not_above_chance():
    prompts, refs = _rows()
    pick = ([i for i, r in enumerate(refs) if parse_verdict(r) == "COMPLIANT"][:3]
            + [i for i, r in enumerate(refs) if parse_verdict(r) == "NON-COMPLIANT"][:3])  # balanced: baseline 0.5
    answers = [refs[i] for i in pick[:4]] + ["Verdict: COMPLIANT"] * 2  # the last two wrong
    report = verdict_report([prompts[i] for i in pick], answers, [refs[i] for i in pick])
    assert report["majority_baseline"] == 0.5 and report["accuracy"] == pytest.approx(4 / 6)
    assert report["p_value_vs_baseline"] == pytest.approx(22 / 64) and not report["above_baseline"]


def test_binomial_tail_is_exact():
    assert binomial_tail(9, 10, 0.5) == pytest.approx(11 / 1024)
    assert binomial_tail(0, 10, 0.5) == 1.0 and binomial_tail(10, 10, 0.5) == pytest.approx(1 / 1024)


def test_a_reference_without_a_verdict_is_an_error_naming_the_row():
    with pytest.raises(ValueError, match="reference 1 has no verdict"):
        verdict_report(["a", "b"], ["Verdict: COMPLIANT"] * 2, ["Verdict: COMPLIANT", "no verdict here"])
