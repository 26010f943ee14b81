"""The studio's 'equivalent CLI command' really is the same run: parity between the UI and `peft-studio run`."""

import shlex

from app.session import cli_command
from studio_core.cli import build_parser, resolve_run_config
from studio_core.config import RunConfig


def test_cli_command_rebuilds_the_same_config():
    data = RunConfig().model_dump(mode="json")
    data["name"] = "my run"
    data["simulate"] = True
    data["data"]["columns"] = {"instruction": "question", "output": "answer"}
    data["data"]["val_path"] = "val 1.jsonl"
    data["method"]["target_modules"] = ["q_proj", "v_proj"]
    data["training"]["max_steps"] = 60
    data["training"]["learning_rate"] = 1e-4
    data["model"]["ref"] = "3"  # a string that looks like JSON must stay a string
    command = cli_command(data)
    argv = shlex.split(command)
    assert argv[:2] == ["peft-studio", "run"]
    rebuilt = resolve_run_config(build_parser().parse_args(argv[1:]))
    assert rebuilt.model_dump(mode="json") == RunConfig.model_validate(data).model_dump(mode="json")


def test_defaults_need_no_flags():
    assert cli_command(RunConfig().model_dump(mode="json")) == "peft-studio run"


def test_the_time_estimate_check_says_what_it_does_not_time():
    """Step 3's time line counts steps and validations; the save-and-merge and step 8 are named as not timed."""
    from app.results import _check_text

    text = _check_text("time_estimate", {"estimated_training_s": 160.2, "max_steps": 40,
                                         "seconds_per_optimizer_step": 3.32, "validation_s": 26.9, "validations": 5,
                                         "measured_on": "base model"})
    assert text.startswith("~160 s of training: 40 steps at 3.32 s/step + 27 s for 5 validations")
    assert "not timed: saving and merging the adapter" in text and "step 8's evaluation" in text
