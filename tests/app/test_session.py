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

