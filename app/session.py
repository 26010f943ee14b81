"""The session's run: its config (plain data, the only state the wizard edits) and the run it launched.

Every widget is drawn from `config_data()` and writes back to it (app/forms.py). A field whose text does not
parse keeps that text in `field_text()`, shows the error under it and blocks Start. The config is also saved
as a draft in the studio home under an id carried in the page's URL (`?draft=`), so a reload keeps it.
"""

from __future__ import annotations

import json
import shlex
import uuid
from typing import Any

import streamlit as st

from studio_core.config import RECIPE_KEYS, RunConfig, switch_recipe, validate_config
from studio_core.config_io import parse_value
from studio_core.errors import ConfigError, Problem
from studio_core.runs import atomic_write_text, studio_home

CONFIG_KEY = "run_config"
RUN_KEY = "current_run_id"
TEXT_KEY = "field_text"  # {field path: (text as typed, why it does not parse)}
BROWSER_KEY = "browser_session"
DRAFT_KEY = "draft_id"
_SAVED_KEY = "draft_saved"


def config_data() -> dict[str, Any]:
    """The session's config as plain data (the saved draft, else defaults, on first use)."""
    if CONFIG_KEY not in st.session_state:
        st.session_state[CONFIG_KEY] = _load_draft() or RunConfig().model_dump(mode="json")
    return st.session_state[CONFIG_KEY]


def get_value(path: str) -> Any:
    data: Any = config_data()
    for part in path.split("."):
        data = data[part]
    return data


def set_value(path: str, value: Any) -> None:
    """Write one field of the session's config; a parse error kept for it is cleared. A new data path also swaps
    the settings the old data's recipe brought that you left alone for the new data's, and so do a new model and
    privacy turned on or off (`switch_recipe`)."""
    if path in RECIPE_KEYS:
        st.session_state[CONFIG_KEY] = switch_recipe(config_data(), path, value)
        field_text().pop(path, None)
        return
    *parents, last = path.split(".")
    data = config_data()
    for part in parents:
        data = data[part]
    data[last] = value
    field_text().pop(path, None)


def field_text() -> dict[str, tuple[str, str]]:
    return st.session_state.setdefault(TEXT_KEY, {})


def replace_config(data: dict[str, Any]) -> None:
    """Swap in a whole config (import, preset, fit, quick start): every widget shows it on the next draw."""
    st.session_state[CONFIG_KEY] = validate_config(data).model_dump(mode="json")
    field_text().clear()


def problems() -> list[Problem]:
    """Every field and cross-field problem, the fields whose text does not parse, the stages not available yet, and
    (in a shared studio) typed paths outside the allowed roots."""
    from studio_core.share import shared_studio_problems
    from studio_core.workflow import unavailable_problems

    typed = [Problem(path, error) for path, (_, error) in field_text().items()]
    fingerprint = json.dumps(config_data(), sort_keys=True)
    cached = st.session_state.get("_problems")
    if cached and cached[0] == fingerprint:  # validated once per change, not once per field drawn
        return typed + cached[1]
    try:
        config = validate_config(config_data())
        found = unavailable_problems(config) + shared_studio_problems(config)  # paths outside the roots, when shared
    except ConfigError as e:
        found = e.problems
    st.session_state["_problems"] = (fingerprint, found)
    return typed + found


def validated_config() -> RunConfig | None:
    return None if problems() else RunConfig.model_validate(config_data())


def browser_session() -> str:
    """A stable id for this browser: who asked, in a run's events (a start, a cancel). It is the draft's id, so a
    reload of the same URL is the same browser."""
    return st.session_state.setdefault(BROWSER_KEY, f"browser-{_draft_id()}")


def _draft_path(draft_id: str):
    return studio_home() / "studio" / "drafts" / f"{draft_id}.json"


def _draft_id() -> str:
    if DRAFT_KEY not in st.session_state:
        given = st.query_params.get("draft", "")
        st.session_state[DRAFT_KEY] = given if given.isalnum() and len(given) <= 32 else uuid.uuid4().hex[:16]
    return st.session_state[DRAFT_KEY]


def _load_draft() -> dict[str, Any] | None:
    path = _draft_path(_draft_id())
    try:
        return validate_config(json.loads(path.read_text())).model_dump(mode="json")
    except (OSError, ValueError, ConfigError):  # none yet, or unreadable: start from the defaults
        return None


def keep_draft() -> None:
    """Save the config as this browser's draft (when it changed) and keep the draft's id in the URL."""
    draft_id = _draft_id()
    if st.query_params.get("draft") != draft_id:
        st.query_params["draft"] = draft_id
    text = json.dumps(config_data(), sort_keys=True)
    if st.session_state.get(_SAVED_KEY) != text:
        atomic_write_text(_draft_path(draft_id), text)
        st.session_state[_SAVED_KEY] = text


def cli_command(config: dict[str, Any]) -> str:
    """The `peft-studio run` command that runs this very config (fields that differ from the defaults the CLI
    gives its data and model: the demo's recipe for the demo on the embedded model)."""
    plain = RunConfig().model_dump(mode="json")
    keys = [key.split(".") for key in RECIPE_KEYS]
    defaults = RunConfig.model_validate({s: {k: config[s][k]} for s, k in keys}).model_dump(mode="json")
    for section, key in keys:  # the recipe follows these; each is listed where it differs from the plain default
        defaults[section][key] = plain[section][key]
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
