"""A private run end to end on the tiny model: epsilon per step, the budget stop, resume, privacy.json, refusals."""

import json
import threading

import pytest
from opacus.accountants import PRVAccountant, RDPAccountant
from opacus.accountants.analysis.rdp import compute_rdp, get_privacy_spent

from studio_core import workflow
from studio_core.config import validate_config
from studio_core.errors import CancelledError, ConfigError
from studio_core.privacy.accounting import epsilon, plan_privacy, resolve_delta
from studio_core.runs import RunStore
from tests.train.test_training import tiny_config


def private_config(**privacy):
    data = tiny_config(max_steps=4, eval_steps=2, save_steps=2).model_dump(mode="json")
    data["privacy"] = {"enabled": True, **privacy}
    data["evaluation"]["enabled"] = False
    return validate_config(data)


def independent_epsilon(report: dict) -> float:
    """Opacus' accountant stepped once per training step, not from the history the run saved."""
    accountant = PRVAccountant() if report["accountant"] == "prv" else RDPAccountant()
    for _ in range(report["steps"]):
        accountant.step(noise_multiplier=report["noise_multiplier"], sample_rate=report["sample_rate"])
    return accountant.get_epsilon(report["delta"])


def check_private_run(run):
    """What every private run shows: epsilon per step, an epsilon Opacus reproduces, delta 1/(10 N)."""
    report = json.loads((run.artifacts / "privacy.json").read_text())
    n = report["N"]
    assert report["delta"] == pytest.approx(1 / (10 * n)) and report["poisson"] is True
    assert report["sample_rate"] == pytest.approx(1 / -(-n // 2)) and report["steps"] == 4  # batch 2 x accumulation 1
    assert report["epsilon"] == pytest.approx(independent_epsilon(report), rel=1e-9)
    assert report["epsilon"] <= 6.0 and report["epsilon"] == pytest.approx(6.0, rel=0.02)  # the noise hits the target
    lines = [m for m in run.metrics() if "loss" in m]
    spent = [m["epsilon"] for m in lines]
    assert [m["step"] for m in lines] == [1, 2, 3, 4] and spent == sorted(spent) and 0 < spent[0] < spent[-1]
    assert spent[-1] == pytest.approx(report["epsilon"], abs=1e-4)
    if report["per_sample_gradients"] == "Opacus GradSampleModule hooks":  # the LM head only where loss is taken
        assert json.loads((run.artifacts / "training.json").read_text())["answer_logits_only"] is True
    events = run.events()
    plan = next(e for e in events if e["type"] == "privacy_plan")
    assert "training.max_grad_norm=1 does not apply" in plan["message"]
    assert any(e["type"] == "progress" and e.get("epsilon") == spent[-1] for e in events)


def test_rdp_epsilon_equals_the_rdp_formula_directly():
    sigma, q, steps, delta = 0.9, 0.02, 37, 1e-5
    orders = RDPAccountant.DEFAULT_ALPHAS
    eps, _ = get_privacy_spent(orders=orders, rdp=compute_rdp(q=q, noise_multiplier=sigma, steps=steps, orders=orders),
                               delta=delta)
    assert epsilon([(sigma, q, steps)], delta, "rdp") == pytest.approx(eps, rel=1e-12)


def test_training_stops_at_the_budget_with_an_event(tmp_path):
    n = 108  # the tiny config's training rows
    two_steps = epsilon([(0.8, 1 / 54, 2)], 1 / (10 * n), "prv")
    run = workflow.run(private_config(noise_multiplier=0.8, target_epsilon=two_steps * 1.0001), tmp_path)
    report = json.loads((run.artifacts / "privacy.json").read_text())
    assert report["N"] == n and report["steps"] == 2 and report["stopped_at_budget"] is True
    assert report["epsilon"] <= two_steps * 1.0001
    stop = next(e for e in run.events() if e["type"] == "privacy_budget_reached")
    assert "step 2" in stop["message"] and "target_epsilon" in stop["message"]
    assert json.loads((run.artifacts / "training.json").read_text())["stopped_early"] is True
    package_and_gate(run, tmp_path, report)


def package_and_gate(run, tmp_path, report):
    """The package's evidence carries the budget, and the policy's max_epsilon rule really passes or fails on it."""
    from studio_core.package import (
        Policy,
        build_package,
        evaluate_policy,
        generate_keys,
        load_private_keys,
        load_public_keys,
        sign_package,
    )

    home = tmp_path / "keys-home"
    keys = load_private_keys(home, generate_keys(home).key_id)
    package = build_package(run.path, tmp_path / "package")
    sign_package(package, keys)
    evidence = json.loads((package / "payload" / "evidence.json").read_text())["privacy"]
    assert evidence["enabled"] is True
    for key in ("epsilon", "delta", "accountant", "noise_multiplier", "max_grad_norm", "sample_rate", "steps", "N",
                "poisson", "secure_mode"):
        assert evidence[key] == report[key], key
    public = load_public_keys(home)
    (passed,) = [r for r in evaluate_policy(package, Policy(max_epsilon=report["epsilon"] * 1.01), public).rules
                 if r.name == "max_epsilon"]
    (failed,) = [r for r in evaluate_policy(package, Policy(max_epsilon=report["epsilon"] * 0.99), public).rules
                 if r.name == "max_epsilon"]
    assert passed.passed and not failed.passed and "required" in failed.detail


def test_epsilon_per_step_opacus_reproduces_it_and_resume_keeps_counting(tmp_path):
    config = private_config(target_epsilon=6.0)
    cancel = threading.Event()

    def on_event(event):
        if event["type"] == "progress" and event["step"] == 2:
            cancel.set()

    with pytest.raises(CancelledError):
        workflow.run(config, tmp_path / "a", cancel=cancel, on_event=on_event)
    (run,) = RunStore(tmp_path / "a").list()
    saved = json.loads((run.path / "checkpoints" / "checkpoint-2" / "privacy_state.json").read_text())
    assert saved["steps"] == 2
    resumed = workflow.run(config, tmp_path / "a", resume=run.run_id)
    straight = workflow.run(config, tmp_path / "b")
    check_private_run(straight)
    a, b = (json.loads((r.artifacts / "privacy.json").read_text()) for r in (resumed, straight))
    assert a["steps"] == b["steps"] == 4 and a["accountant_history"] == b["accountant_history"]
    assert a["epsilon"] == pytest.approx(b["epsilon"], rel=1e-12)
    steps = [(m["step"], m["epsilon"]) for m in resumed.metrics() if "loss" in m]
    assert [s for s, _ in steps] == [1, 2, 3, 4] and steps[2][1] > steps[1][1]  # not restarted from 0
    def losses(r):  # None where a Poisson batch came out empty (a noise-only step)
        return [None if m["loss"] is None else round(m["loss"], 4) for m in r.metrics() if "loss" in m]

    assert losses(resumed) == losses(straight)  # the same batches, noise and weights after the resume


def test_a_private_run_validates_after_a_last_step_that_is_not_an_evaluation_step_as_the_trainer_does(tmp_path):
    data = tiny_config(max_steps=5, eval_steps=2, save_steps=2).model_dump(mode="json")
    data["privacy"] = {"enabled": True, "target_epsilon": 6.0}
    data["evaluation"]["enabled"] = False
    run = workflow.run(validate_config(data), tmp_path)
    assert [m["step"] for m in run.metrics() if "val_loss" in m] == [0, 2, 4, 5]


def test_delta_defaults_to_a_tenth_of_one_over_n_and_is_refused_at_one_over_n():
    assert resolve_delta(None, 500) == pytest.approx(1 / 5000)
    with pytest.raises(ConfigError, match=r"N = 500 training examples"):
        resolve_delta(1 / 500, 500)
    config = private_config(delta=0.5)
    with pytest.raises(ConfigError, match="privacy.delta"):
        plan_privacy(config.privacy, 108, 2, 4)


@pytest.mark.parametrize("change,field,words", [
    ({"privacy": {"accountant": "gdp"}}, "privacy.accountant", "underestimate"),
    ({"method": {"name": "ia3"}}, "privacy.enabled", "method ia3"),
    ({"comm": {"enabled": True}}, "comm.enabled", "privacy analysis does not cover"),
    ({"data": {"row_schema": "text"}}, "data.row_schema", "packing"),
    ({"privacy": {"poisson_sampling": False}}, "privacy.poisson_sampling", "Poisson"),
    ({"training": {"gradient_checkpointing": True}}, "training.gradient_checkpointing", "hooks"),
    ({"privacy": {"target_epsilon": None}}, "privacy.target_epsilon", "noise_multiplier"),
    ({"pruning": {"enabled": True}}, "pruning.enabled", "per-example gradient hooks"),
    ({"training": {"nnodes": 2, "rdzv_endpoint": "node0:29500"}}, "training.nnodes", "one machine"),
])
def test_what_the_privacy_analysis_does_not_cover_is_refused_with_the_reason(change, field, words):
    data = {"privacy": {"enabled": True}}
    for section, values in change.items():
        data.setdefault(section, {}).update(values)
    with pytest.raises(ConfigError) as e:
        validate_config(data)
    problem = next(p for p in e.value.problems if p.field == field)
    assert words in problem.message


def test_a_dora_run_trains_privately_with_one_backward_per_example(tmp_path):
    """DoRA's per-example passes take full logits for each row, whatever the training collator adds."""
    data = private_config(target_epsilon=6.0).model_dump(mode="json")
    data["method"]["name"] = "dora"
    run = workflow.run(validate_config(data), tmp_path)
    check_private_run(run)
    report = json.loads((run.artifacts / "privacy.json").read_text())
    assert report["per_sample_gradients"] == "one backward pass per example (exact)"
    assert json.loads((run.artifacts / "training.json").read_text())["answer_logits_only"] is False
