"""The synthetic legal-audit demo set: deterministic, balanced, and its verdicts learnable from the text."""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict

import pytest

from studio_core.data import demo
from studio_core.data.demo import (
    DEMO_DATASETS,
    DEMO_REF_PREFIX,
    generate_legal_audit,
    parse_verdict,
    verdict_accuracy,
    write_jsonl,
)

# The test's own copy of the policy, so the re-check does not lean on the module's tables.
APPROVED = {
    "England and Wales",
    "Scotland",
    "Ireland",
    "New York",
    "Delaware",
    "California",
    "Ontario",
    "Germany",
}
UNAPPROVED = {
    "Texas",
    "Nevada",
    "Florida",
    "Panama",
    "Bermuda",
    "the Cayman Islands",
    "the British Virgin Islands",
    "Singapore",
}

# Clause type from the rule the instruction states.
KIND_BY_KEYWORD = {
    "liability cap": "liability",
    "termination notice": "termination",
    "payment terms": "payment",
    "confidentiality must": "confidentiality",
    "governing law": "law",
    "auto-renewal": "renewal",
    "data breaches": "breach",
    "non-compete": "non_compete",
}


def _kind(row: dict) -> str:
    rule = row["instruction"].lower().split("policy rule:")[1]
    kinds = [kind for keyword, kind in KIND_BY_KEYWORD.items() if keyword in rule]
    assert len(kinds) == 1, row["instruction"]
    return kinds[0]


def _only_number(pattern: str, text: str) -> float:
    found = re.findall(pattern, text)
    assert len(found) == 1, (pattern, text)
    return float(found[0])


def _expected_compliant(row: dict) -> bool:
    """Re-derive the verdict by reading the value out of the clause text and applying the policy."""
    text, kind = row["input"], _kind(row)
    if kind == "law":
        named = [j for j in APPROVED | UNAPPROVED if j in text]
        # "Ireland" is not a substring of any other name, so exactly one jurisdiction is named.
        assert len(named) == 1, text
        return named[0] in APPROVED
    if kind == "renewal":
        days = re.findall(r"(\d+) days", text)
        return bool(days) and int(days[0]) <= 90 and len(days) == 1
    rules = {
        "liability": (r"(\d+(?:\.\d+)?)\s*(?:x|times)\b", lambda v: v >= 1),
        "termination": (r"(\d+) days", lambda v: v >= 30),
        "payment": (r"(\d+) days", lambda v: v <= 60),
        "confidentiality": (r"(\d+) years?\b", lambda v: v >= 3),
        "breach": (r"(\d+) hours", lambda v: v <= 72),
        "non_compete": (r"(\d+) months", lambda v: v <= 12),
    }
    pattern, passes = rules[kind]
    return passes(_only_number(pattern, text))


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return generate_legal_audit()


def test_registry_and_prefix():
    assert DEMO_REF_PREFIX == "demo:"
    assert DEMO_DATASETS["legal-audit"] is generate_legal_audit


def test_says_it_is_synthetic():
    assert "SYNTHETIC" in demo.__doc__
    assert "synthetic" in demo.LEGAL_AUDIT_NOTE.lower()


def test_deterministic_for_a_seed_and_varies_across_seeds(rows):
    again = generate_legal_audit()
    assert json.dumps(again) == json.dumps(rows)
    assert generate_legal_audit(n=50, seed=1) == generate_legal_audit(n=50, seed=1)
    assert generate_legal_audit(n=50, seed=1) != generate_legal_audit(n=50, seed=2)


def test_size_shape_and_distinct_rows(rows):
    assert len(rows) >= 2000
    assert all(set(r) == {"instruction", "input", "output"} for r in rows)
    assert all(r["instruction"] and r["input"] and r["output"] for r in rows)
    # Distinct clauses, not just distinct rows: a repeated clause would leak from train into eval.
    assert len({r["input"] for r in rows}) == len(rows)
    assert len(generate_legal_audit(n=37, seed=5)) == 37


def test_rejects_an_empty_request():
    with pytest.raises(ValueError, match="at least 1"):
        generate_legal_audit(n=0)


def test_eight_clause_types_each_balanced(rows):
    by_kind: dict[str, Counter] = defaultdict(Counter)
    for row in rows:
        by_kind[_kind(row)][parse_verdict(row["output"])] += 1
    assert set(by_kind) == set(KIND_BY_KEYWORD.values())
    for kind, counts in by_kind.items():
        share = counts["COMPLIANT"] / sum(counts.values())
        assert 0.4 <= share <= 0.6, (kind, counts)
        assert sum(counts.values()) >= len(rows) / 8 - 1


def test_held_out_tail_is_balanced(rows):
    tail = rows[-len(rows) // 10 :]
    share = sum(parse_verdict(r["output"]) == "COMPLIANT" for r in tail) / len(tail)
    assert 0.4 <= share <= 0.6


def _lines(row: dict) -> tuple[str, str]:
    """(verdict line, reason line) whichever comes first."""
    first, second = row["output"].split("\n")
    return (first, second) if first.startswith("Verdict:") else (second, first)


@pytest.mark.parametrize("answer", demo.ANSWER_FORMATS)
def test_every_output_is_two_lines_that_parse_in_its_format(answer):
    rows = generate_legal_audit(400, answer=answer)
    for row in rows:
        first, _ = row["output"].split("\n")
        assert first.startswith("Verdict: " if answer == "verdict_first" else "Reason: "), row
        verdict_line, reason_line = _lines(row)
        assert verdict_line in ("Verdict: COMPLIANT", "Verdict: NON-COMPLIANT")
        assert reason_line.startswith("Reason: ") and reason_line.endswith(".")
        assert parse_verdict(row["output"]) == verdict_line.removeprefix("Verdict: ")
    # The clauses and verdicts are the same in every format: only the answer's wording differs.
    assert [(r["input"], parse_verdict(r["output"])) for r in rows] == [
        (r["input"], parse_verdict(r["output"])) for r in generate_legal_audit(400, answer="verdict_first")]


def test_the_reasons_comparison_states_the_clauses_value_against_the_rules_limit():
    rows = generate_legal_audit(answer="reason_compare")
    compared = 0
    for row in rows:
        _, reason = _lines(row)
        match = re.search(r"; ([\d.]+) is (at least|less than|at most|more than) ([\d.]+)\.$", reason)
        if _kind(row) == "law" or "no opt-out" in reason:
            assert match is None, row  # nothing to compare: no number decides these
            continue
        assert match is not None, row
        value, relation, limit = float(match.group(1)), match.group(2), float(match.group(3))
        bound = "least" if relation in ("at least", "less than") else "most"
        assert f"at {bound} {match.group(3)}" in row["instruction"]
        holds = {"at least": value >= limit, "less than": value < limit, "at most": value <= limit,
                 "more than": value > limit}[relation]
        assert holds, row  # the relation is true of the numbers
        assert (relation in ("at least", "at most")) == _expected_compliant(row), row
        compared += 1
    assert compared > len(rows) * 0.8


def test_an_unknown_answer_format_is_refused():
    with pytest.raises(ValueError, match="answer must be one of"):
        generate_legal_audit(10, answer="verdict_last")


def test_verdict_follows_the_policy_read_from_the_clause_text(rows):
    for row in rows:
        expected = "COMPLIANT" if _expected_compliant(row) else "NON-COMPLIANT"
        assert parse_verdict(row["output"]) == expected, row


def test_reason_uses_one_template_per_rule_and_cites_the_value(rows):
    prefixes: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        _, reason = _lines(row)
        prefixes[_kind(row)].add(reason.split(";")[0])
        numbers = re.findall(r"\d+(?:\.\d+)?", reason.split("; the clause ")[1].split(";")[0])
        # The cited value is the one in the clause (auto-renewal without opt-out cites no number).
        assert all(n in row["input"] for n in numbers), row
    assert all(len(p) == 1 for p in prefixes.values()), prefixes


def test_values_near_the_thresholds_are_present(rows):
    near = Counter()
    for row in rows:
        kind = _kind(row)
        for pattern, threshold, margin in (
            (r"(\d+) days", 30, 3) if kind == "termination" else (None, 0, 0),
            (r"(\d+) hours", 72, 6) if kind == "breach" else (None, 0, 0),
            (r"(\d+) days", 60, 5) if kind == "payment" else (None, 0, 0),
        ):
            if pattern and abs(_only_number(pattern, row["input"]) - threshold) <= margin:
                near[(kind, _expected_compliant(row))] += 1
    for kind in ("termination", "breach", "payment"):
        assert near[(kind, True)] >= 10 and near[(kind, False)] >= 10, near


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Verdict: COMPLIANT\nReason: fine.", "COMPLIANT"),
        ("Verdict: NON-COMPLIANT\nReason: too short.", "NON-COMPLIANT"),
        ("  verdict :   non-compliant  ", "NON-COMPLIANT"),
        ("VERDICT:compliant", "COMPLIANT"),
        ("The clause is fine.\nVerdict:  Non Compliant", "NON-COMPLIANT"),
        ("Verdict: noncompliant", "NON-COMPLIANT"),
        ("NON-COMPLIANT. The notice is too short.", "NON-COMPLIANT"),
        ("compliant", "COMPLIANT"),
        ("", None),
        ("I cannot tell.", None),
        ("asdf qwerty 1234", None),
        ("Verdict: maybe", None),
    ],
)
def test_parse_verdict(text, expected):
    assert parse_verdict(text) == expected


def test_verdict_accuracy_on_a_known_list():
    refs = [
        "Verdict: COMPLIANT\nReason: a.",
        "Verdict: NON-COMPLIANT\nReason: b.",
        "COMPLIANT",
        "NON-COMPLIANT",
    ]
    preds = ["verdict: compliant", "Verdict: COMPLIANT", "no idea", "Verdict: NON-COMPLIANT\nReason: c."]
    assert verdict_accuracy(preds, refs) == pytest.approx(0.5)
    assert verdict_accuracy(refs, refs) == 1.0
    assert verdict_accuracy([], []) == 0.0


def test_verdict_accuracy_rejects_mismatched_or_unreadable_references():
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        verdict_accuracy(["COMPLIANT", "COMPLIANT"], ["COMPLIANT"])
    with pytest.raises(ValueError, match="reference 0 has no verdict"):
        verdict_accuracy(["COMPLIANT"], ["garbage"])


def test_write_jsonl_round_trips(tmp_path, rows):
    path = tmp_path / "out" / "demo.jsonl"
    write_jsonl(rows[:20], path)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == rows[:20]


def test_the_demo_answer_format_is_a_config_field_and_reaches_the_rows():
    from studio_core.config import validate_config
    from studio_core.data.prepare import read_source

    for answer, first in (("reason_first", "Reason: "), ("verdict_first", "Verdict: ")):
        cfg = validate_config({"data": {"demo_rows": 100, "demo_answer": answer}})
        rows = read_source(cfg.data.path, cfg.data).rows
        assert len(rows) == 100 and all(row[-1]["content"].startswith(first) for row in rows), answer
