"""A config section's form, built from its pydantic model: the field's description is the widget's help,
and each validation problem is shown under the field it concerns."""

from __future__ import annotations

import json
import typing
from typing import Any, Literal, get_args, get_origin

import streamlit as st

from app.session import config_data, problems
from studio_core.config import METHOD_IDS, RunConfig, method_section
from studio_core.methods import switch_method


def section_model(section: str):
    """The pydantic class of a section; the method section's depends on the method chosen."""
    if section == "method":
        return method_section(config_data()["method"].get("name", "lora"))
    return RunConfig.model_fields[section].annotation


def render_section(section: str, disabled: bool = False, exclude: tuple[str, ...] = ()) -> None:
    """Every field of `section`, editable, with defaults filled in and its problems beside it."""
    model, values = section_model(section), config_data()[section]
    slots = {}
    fields = dict(model.model_fields)
    if section == "method":  # the method first: the fields below it are its own
        fields = {"enabled": fields.pop("enabled"), "name": fields.pop("name"), **fields}
    for name, field in fields.items():
        if name in exclude:
            continue
        values[name] = _widget(f"field:{section}.{name}", name, field, values[name], disabled)
        slots[name] = st.empty()  # filled once the whole config, with this run's edits, is validated
    found = problems()
    for name, slot in slots.items():
        path = f"{section}.{name}"
        messages = [p.message for p in found if p.field == path or p.field.startswith(path + ".")]
        if messages:
            slot.error("\n\n".join(messages), icon="⚠️")


def _widget(key: str, name: str, field, value: Any, disabled: bool) -> Any:
    label, help_text = name.replace("_", " "), field.description
    annotation = field.annotation
    choices = list(METHOD_IDS) if key == "field:method.name" else _literal_choices(annotation)
    if annotation is bool:
        return st.checkbox(label, value=bool(value), help=help_text, key=key, disabled=disabled)
    if choices and all(isinstance(c, str) for c in choices):
        index = choices.index(value) if value in choices else 0
        return st.selectbox(label, choices, index=index, help=help_text, key=key, disabled=disabled)
    if annotation is int:
        return int(st.number_input(label, value=int(value), step=1, help=help_text, key=key, disabled=disabled))
    if annotation is float:
        return float(st.number_input(label, value=float(value), format="%g", help=help_text, key=key,
                                     disabled=disabled))
    if annotation is str:
        return st.text_input(label, value=value, help=help_text, key=key, disabled=disabled)
    return _json_widget(key, label, help_text, value, disabled, optional_str=_is_optional_str(annotation))


def _json_widget(key: str, label: str, help_text: str, value: Any, disabled: bool, optional_str: bool) -> Any:
    """Lists, dicts and optional strings: typed as text; lists and dicts as JSON, or 'auto'."""
    shown = "" if value is None else value if isinstance(value, str) else json.dumps(value)
    text = st.text_input(label, value=shown, help=f"{help_text} (JSON)", key=key, disabled=disabled)
    parsed, error = parse_text(text, optional_str)
    if error:
        st.error(error)
        return value
    return parsed


def parse_text(text: str, optional_str: bool) -> tuple[Any, str | None]:
    """A text widget's value as config data: None for an empty optional string, 'auto', or JSON."""
    if optional_str:
        return (text or None), None
    if text.strip() in ("", "auto"):
        return ("auto" if text.strip() == "auto" else {}), None
    try:
        return json.loads(text), None
    except json.JSONDecodeError as e:
        return None, f"not valid JSON ({e.msg}); e.g. [\"q_proj\", \"v_proj\"] or {{\"instruction\": \"question\"}}"


def sync_widgets() -> None:
    """Copy this rerun's widget values into the config before anything validates it (the sidebar draws first)."""
    data = config_data()
    chosen = st.session_state.get("field:method.name")
    if chosen and chosen != data["method"].get("name"):  # a new method: its own parameters, at their defaults
        data["method"] = switch_method(data["method"], chosen)
        for key in [k for k in st.session_state if isinstance(k, str) and k.startswith("field:method.")]:
            if key != "field:method.name":
                del st.session_state[key]
    for key, raw in list(st.session_state.items()):
        if not (isinstance(key, str) and key.startswith("field:")):
            continue
        path = key.removeprefix("field:").split(".")
        if len(path) == 1:
            data[path[0]] = raw
            continue
        section, name = path
        field = section_model(section).model_fields.get(name)
        if field is None:
            continue
        if isinstance(raw, str) and field.annotation is not str and not _literal_choices(field.annotation):
            raw, error = parse_text(raw, _is_optional_str(field.annotation))
            if error:
                continue
        data[section][name] = raw


def _literal_choices(annotation) -> list:
    if get_origin(annotation) is Literal:
        return list(get_args(annotation))
    return []


def _is_optional_str(annotation) -> bool:
    return get_origin(annotation) in (typing.Union, getattr(__import__("types"), "UnionType")) and \
        set(get_args(annotation)) == {str, type(None)}
