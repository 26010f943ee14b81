"""The session's run: its config (plain data, edited page by page) and the run it launched."""

from __future__ import annotations

import json
import shlex
from typing import Any

import streamlit as st

from studio_core.config import RunConfig, parse_value, validate_config
from studio_core.errors import ConfigError, Problem

CONFIG_KEY = "run_config"
RUN_KEY = "current_run_id"


def config_data() -> dict[str, Any]:
    """The session's config as plain data (defaults on first use)."""
    if CONFIG_KEY not in st.session_state:
        st.session_state[CONFIG_KEY] = RunConfig().model_dump(mode="json")
    return st.session_state[CONFIG_KEY]


def replace_config(data: dict[str, Any]) -> None:
    """Swap in an imported config; widgets are re-seeded from it."""
    st.session_state[CONFIG_KEY] = validate_config(data).model_dump(mode="json")
    for key in [k for k in st.session_state if isinstance(k, str) and k.startswith("field:")]:
        del st.session_state[key]


def problems() -> list[Problem]:
    """Every field and cross-field problem of the session's config, the stages not available yet, and (in a
    shared studio) typed paths outside the allowed roots."""
    from studio_core.share import shared_studio_problems
    from studio_core.workflow import unavailable_problems

    try:
        config = validate_config(config_data())
    except ConfigError as e:
        return e.problems
    return unavailable_problems(config) + shared_studio_problems(config)  # paths outside the roots, when shared


def validated_config() -> RunConfig | None:
    return None if problems() else RunConfig.model_validate(config_data())


def cli_command(config: dict[str, Any]) -> str:
    """The `peft-studio run` command that runs this very config (fields that differ from the defaults)."""
    defaults = RunConfig().model_dump(mode="json")
    parts = ["peft-studio", "run"]
    for key, value in _flatten(config):
        if _lookup(defaults, key) != value:
            plain = isinstance(value, str) and parse_value(value) == value  # else quote it as JSON
            text = value if plain else json.dumps(value)
            parts += ["--set", f"{key}={text}"]
    return " ".join(shlex.quote(p) for p in parts)


def _flatten(data: dict[str, Any], prefix: str = ""):
    for key, value in data.items():
        if isinstance(value, dict) and key != "columns":
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _lookup(data: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        data = data.get(part, {}) if isinstance(data, dict) else {}
    return data
