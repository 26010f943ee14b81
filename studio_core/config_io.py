"""What the CLI reads a run config from: JSON files and `--set dotted.key=value` overrides.

The schema and its validation are `studio_core.config`; this module turns files and command-line text into
the plain data `validate_config` takes (and writes a config back to a file).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from studio_core.config import METHOD_IDS, RunConfig, all_field_paths, did_you_mean, validate_config
from studio_core.errors import ConfigError, Problem
from studio_core.methods import switch_method


def read_json_file(path: str | Path, what: str = "config") -> Any:
    """A JSON file's data; a missing or malformed file is a ConfigError naming it (`what` says which file)."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise ConfigError(Problem(str(path), f"{what} file not found")) from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(Problem(str(path), f"not valid JSON: {e}")) from e


def load_config(path: str | Path) -> RunConfig:
    """Read a RunConfig from a JSON file; errors name the file."""
    data = read_json_file(path)
    if not isinstance(data, dict):
        raise ConfigError(Problem(str(path), "must hold a JSON object with one key per section"))
    return validate_config(data)


def save_config(config: RunConfig, path: str | Path) -> None:
    """Write the config as indented JSON (atomically: write then rename)."""
    from studio_core.runs import atomic_write_text

    atomic_write_text(Path(path), config.model_dump_json(indent=2) + "\n")



def parse_value(text: str) -> Any:
    """`--set` values parse as JSON where they can (true, 3, 0.1, ["q_proj"]), else they are strings."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def apply_overrides(data: dict[str, Any], assignments: list[str]) -> dict[str, Any]:
    """Apply `dotted.key=value` assignments to plain config data; unknown keys name the nearest valid ones."""
    known = set(all_field_paths())
    problems = []
    # A new method starts from its own defaults (keeping enabled and target_modules); then its parameters apply.
    names = [a.partition("=")[2].strip() for a in assignments if a.partition("=")[0].strip() == "method.name"]
    if names and names[-1] in METHOD_IDS and names[-1] != data.get("method", {}).get("name", "lora"):
        data["method"] = switch_method(data.get("method", {}), names[-1])
    for assignment in assignments:
        key, sep, raw = assignment.partition("=")
        key = key.strip()
        if not sep or not key:
            problems.append(Problem(assignment, "expected dotted.key=value, e.g. training.max_steps=50"))
            continue
        if key not in known:
            problems.append(Problem(key, f"unknown key{did_you_mean(key)}"))
            continue
        _set_path(data, key.split("."), parse_value(raw))
    if problems:
        raise ConfigError(problems)
    return data


def _set_path(data: dict[str, Any], parts: list[str], value: Any) -> None:
    for part in parts[:-1]:
        data = data.setdefault(part, {})
    data[parts[-1]] = value
