"""Pre-flight under DP: the noise the target needs, the steps a fixed noise allows, delta refused against N."""

from types import SimpleNamespace

import pytest

from studio_core.config import validate_config
from studio_core.data.tokenize import TokenizedExample
from studio_core.preflight import PreflightReport, check_privacy
from studio_core.privacy.accounting import epsilon

DATA = SimpleNamespace(train_tokens=[TokenizedExample([1, 2, 3, 4], [-100, -100, 3, 4], 4)] * 1000
                       + [TokenizedExample([1, 2], [-100, -100], 2)] * 5)  # 5 rows with nothing to learn: not in N


def report_for(**privacy):
    cfg = validate_config({"privacy": {"enabled": True, **privacy},
                           "training": {"max_steps": 40, "per_device_batch_size": 4, "gradient_accumulation_steps": 2}})
    report = PreflightReport()
    check_privacy(report, cfg, DATA, cfg.training.max_steps)
    return report


def test_the_noise_a_target_needs_and_the_expected_steps():
    facts = report_for(target_epsilon=3.0).facts["privacy"]
    assert facts["examples"] == 1000 and facts["logical_batch"] == 8 and facts["sample_rate"] == pytest.approx(1 / 125)
    assert facts["delta"] == pytest.approx(1e-4) and facts["expected_steps"] == 40
    assert facts["expected_epsilon"] <= 3.0 and facts["expected_epsilon"] == pytest.approx(3.0, rel=0.02)
    assert epsilon([(facts["noise_multiplier"] * 0.95, 1 / 125, 40)], 1e-4, "prv") > 3.0  # less noise would overspend


def test_a_fixed_noise_warns_where_the_budget_stops_training():
    report = report_for(noise_multiplier=0.6, target_epsilon=1.6)
    steps = report.facts["privacy"]["expected_steps"]
    assert 0 < steps < 40 and f"spent after {steps} of 40 steps" in " ".join(report.warnings)
    assert epsilon([(0.6, 1 / 125, steps)], 1e-4, "prv") <= 1.6 < epsilon([(0.6, 1 / 125, steps + 1)], 1e-4, "prv")
    assert any("training.max_grad_norm=1 does not apply" in w for w in report.warnings)


def test_delta_at_one_over_n_is_a_no_go_naming_n():
    report = report_for(delta=1e-3)
    assert not report.go and "N = 1000 training examples" in report.errors[0]
