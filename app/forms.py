"""A config section's form, built from its pydantic model and drawn from the session's config.

Each widget's value is set from the config before it is drawn and written back by its on_change callback, so
whatever changes the config (typing, an upload, a preset, an import) shows in every widget. Labels are for
people; the help text is the field's description plus its config key (the `--set` name on the CLI). Problems
are shown under the field they concern.
"""

from __future__ import annotations

import hashlib
import json
import types
import typing
from typing import Any, Literal, get_args, get_origin

import streamlit as st

from app.labels import label_for
from app.session import config_data, field_text, get_value, problems, set_value
from studio_core.config import METHOD_IDS, RunConfig, method_section
from studio_core.methods import switch_method

ALWAYS_ON = ("data", "model")  # steps every run needs: no "enabled" box
# Fields shown first; the rest of a section sits under "More settings". Sections not listed show everything.
ESSENTIAL = {
    "data": ("path", "row_schema", "columns", "on_bad_rows", "max_length"),
    "method": ("name", "target_modules", "r", "alpha", "init_r", "target_r", "virtual_tokens", "init", "init_text",
               "block_size"),
    "training": ("max_steps", "per_device_batch_size", "gradient_accumulation_steps", "learning_rate", "eval_steps",
                 "save_steps"),
    "evaluation": ("task_rows", "samples", "prompts", "test_path"),
    "privacy": ("target_epsilon", "delta", "max_grad_norm", "accountant"),
    "comm": ("method", "ratio"),
    "compile": ("engines", "onnx_kv_precision", "gguf_quants"),
}
WIDE = ("modules", "tuple", "shapes", "columns", "lines")  # drawn across the page, not in a column
FLOAT_AS_TEXT = {"training.learning_rate", "method.eps", "export.parity_tolerance"}  # 5e-4 reads better typed


def section_model(section: str):
    """The pydantic class of a section; the method section's depends on the method chosen."""
    if section == "method":
        return method_section(config_data()["method"].get("name", "lora"))
    return RunConfig.model_fields[section].annotation


def field_problems(path: str) -> list[str]:
    return [p.message for p in problems() if p.field == path or p.field.startswith(path + ".")]


def render_section(section: str, disabled: bool = False, exclude: tuple[str, ...] = (), targets=None) -> None:
    """Every field of `section`, editable, its problems under it. An optional step shows only its switch when off.

    `targets`: the model's module names for target-module pickers (None: typed by name).
    """
    fields = dict(section_model(section).model_fields)
    enabled = fields.pop("enabled")
    if section == "method":  # the method first: the fields below it are its own
        fields = {"name": fields.pop("name"), **fields}
    if section not in ALWAYS_ON or not config_data()[section]["enabled"]:
        draw_field(f"{section}.enabled", enabled, disabled)
        if not config_data()[section]["enabled"]:
            return
    fields = {n: f for n, f in fields.items() if n not in exclude}
    essential = ESSENTIAL.get(section, tuple(fields))
    _grid(section, {n: f for n, f in fields.items() if n in essential}, disabled, targets)
    more = {n: f for n, f in fields.items() if n not in essential}
    if more:
        with st.expander("More settings"):
            _grid(section, more, disabled, targets)


def _grid(section: str, fields: dict, disabled: bool, targets) -> None:
    """Fields two to a row; lists, tables and tuples across the page."""
    row = None
    for name, field in fields.items():
        path = f"{section}.{name}"
        if _kind(path, field.annotation) in WIDE:
            row = None
            draw_field(path, field, disabled, targets=targets)
            continue
        if row is None or not row[1]:
            row = [st.columns(2), [0, 1]]
        with row[0][row[1].pop(0)]:
            draw_field(path, field, disabled, targets=targets)


def draw_field(path: str, field, disabled: bool = False, targets=None) -> None:
    """One field's widget, then its problems under it."""
    key, label = f"field:{path}", label_for(path, field)
    help_text = f"{field.description}\n\nConfig key: `{path}` (CLI: `--set {path}=...`)"
    kind = _kind(path, field.annotation)
    draw = _DRAWERS[kind]
    draw(path, key, label, help_text, field.annotation, disabled, targets)
    for message in field_problems(path):
        st.error(message, icon="⚠️")


def _kind(path: str, annotation) -> str:
    if path == "method.name":
        return "method"
    if annotation is bool:
        return "bool"
    if _literal_choices(annotation):
        return "choice"
    if annotation is int:
        return "int"
    if annotation is float:
        return "float_text" if path in FLOAT_AS_TEXT else "float"
    if annotation is str:
        return "str"
    if _is_optional_str(annotation):
        return "optional_str"
    if get_origin(annotation) in (typing.Union, types.UnionType) and set(get_args(annotation)) == {float, type(None)}:
        return "optional_float"
    if path.endswith("target_modules") or path.endswith("feedforward_modules") or path == "pruning.targets":
        return "modules"
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is tuple:
        return "tuple"
    if origin is list and args and _literal_choices(args[0]):
        return "multichoice"
    if origin is list and args and get_origin(args[0]) is tuple:
        return "shapes"
    if origin is dict:
        return "columns"
    if origin is list:
        return "lines"
    raise TypeError(f"no widget for {path} ({annotation})")


def _seed(key: str, value: Any) -> None:
    """Set the widget's state from the config (the config is the only truth)."""
    st.session_state[key] = value


PAIRED = {"method.enabled": "training.enabled", "training.enabled": "method.enabled"}  # they run together


def _commit(path: str, key: str, convert=lambda v: v) -> None:
    set_value(path, convert(st.session_state[key]))
    if path in PAIRED:  # Training Init builds what Training Exec trains: one switch turns both
        set_value(PAIRED[path], convert(st.session_state[key]))


def _bool(path, key, label, help_text, annotation, disabled, targets):
    _seed(key, bool(get_value(path)))
    st.checkbox(label, help=help_text, key=key, disabled=disabled, on_change=_commit, args=(path, key))


def _choice(path, key, label, help_text, annotation, disabled, targets):
    choices = _literal_choices(annotation)
    value = get_value(path)
    _seed(key, value if value in choices else choices[0])
    st.selectbox(label, choices, help=help_text, key=key, disabled=disabled, on_change=_commit, args=(path, key))


def _method(path, key, label, help_text, annotation, disabled, targets):
    from studio_core.methods import get_method

    _seed(key, get_value(path))
    st.selectbox(label, list(METHOD_IDS), format_func=lambda m: f"{get_method(m).title} ({m})", help=help_text,
                 key=key, disabled=disabled, on_change=_switch_method, args=(key,))


def _switch_method(key: str) -> None:
    """A new method: its own parameters at their defaults (shared ones kept); a preset's text no longer holds."""
    data = config_data()
    data["method"] = switch_method(data["method"], st.session_state[key])
    for path in [p for p in field_text() if p.startswith("method.")]:
        del field_text()[path]


def _int(path, key, label, help_text, annotation, disabled, targets):
    _seed(key, int(get_value(path)))
    st.number_input(label, step=1, help=help_text, key=key, disabled=disabled, on_change=_commit,
                    args=(path, key, int))


def _float(path, key, label, help_text, annotation, disabled, targets):
    _seed(key, float(get_value(path)))
    st.number_input(label, format="%g", step=0.01, help=help_text, key=key, disabled=disabled, on_change=_commit,
                    args=(path, key, float))


def _float_text(path, key, label, help_text, annotation, disabled, targets):
    _text_field(path, key, label, help_text, disabled, _parse_float, lambda v: f"{v:g}")


def _str(path, key, label, help_text, annotation, disabled, targets):
    _seed(key, get_value(path))
    st.text_input(label, help=help_text, key=key, disabled=disabled, on_change=_commit, args=(path, key))


def _optional_str(path, key, label, help_text, annotation, disabled, targets):
    _seed(key, get_value(path) or "")
    st.text_input(label, help=help_text + "\n\nLeave empty for none.", key=key, disabled=disabled,
                  on_change=_commit, args=(path, key, lambda v: v.strip() or None))


def _optional_float(path, key, label, help_text, annotation, disabled, targets):
    _text_field(path, key, label, help_text + "\n\nLeave empty for none.", disabled,
                lambda text: _parse_float(text) if text.strip() else None, lambda v: "" if v is None else f"{v:g}")


def _text_field(path, key, label, help_text, disabled, parse, show) -> None:
    """A typed value: text that does not parse is kept as typed, its error shown and Start blocked."""
    pending = field_text().get(path)
    _seed(key, pending[0] if pending else show(get_value(path)))
    st.text_input(label, help=help_text, key=key, disabled=disabled, on_change=_commit_text, args=(path, key, parse))


def _commit_text(path: str, key: str, parse) -> None:
    text = st.session_state[key]
    try:
        set_value(path, parse(text))
    except ValueError as e:
        field_text()[path] = (text, str(e))


def _parse_float(text: str) -> float:
    try:
        return float(text.strip())
    except ValueError:
        raise ValueError(f"'{text}' is not a number; write it like 0.0005 or 5e-4") from None


def _parse_names(text: str) -> list[str] | str:
    names = [n.strip() for n in text.replace("\n", ",").split(",") if n.strip()]
    if not names:
        raise ValueError("name at least one module, or choose the architecture's defaults")
    bad = [n for n in names if not all(c.isalnum() or c in "._-" for c in n)]
    if bad:
        raise ValueError(f"{', '.join(map(repr, bad))}: a module name has letters, digits, '.', '_' or '-' only; "
                         "separate names with commas, e.g. q_proj, v_proj")
    return names


def _modules(path, key, label, help_text, annotation, disabled, targets):
    """'auto', or names picked from the model's real modules (typed when the model could not be read)."""
    value = get_value(path)
    auto_key = f"{key}:auto"
    _seed(auto_key, value == "auto")
    st.checkbox(f"{label}: the architecture's defaults", key=auto_key, help=help_text, disabled=disabled,
                on_change=_toggle_auto, args=(path, auto_key, targets))
    if value == "auto":
        return
    if targets is None:
        _text_field(path, key, label, help_text + "\n\nModule names, separated by commas.", disabled, _parse_names,
                    lambda v: ", ".join(v))
        return
    options = list(targets) + [n for n in value if n not in targets]  # keep a name the model lacks: it is flagged
    _seed(key, list(value))
    st.multiselect(label, options, help=help_text, key=key, disabled=disabled, on_change=_commit, args=(path, key))
    unknown = [n for n in value if n not in targets]
    if unknown:
        st.warning(f"Not a module of this model: {', '.join(unknown)}; pre-flight will refuse it.")


def _toggle_auto(path: str, auto_key: str, targets) -> None:
    if st.session_state[auto_key]:
        set_value(path, "auto")
    else:
        set_value(path, list((targets or [])[:2]) or ["q_proj", "v_proj"])


def _multichoice(path, key, label, help_text, annotation, disabled, targets):
    choices = _literal_choices(get_args(annotation)[0])
    _seed(key, [v for v in get_value(path) if v in choices])
    st.multiselect(label, choices, help=help_text, key=key, disabled=disabled, on_change=_commit, args=(path, key))


def _tuple(path, key, label, help_text, annotation, disabled, targets):
    names = {3: ("min", "optimal", "max"), 2: ("batch", "sequence")}[len(get_args(annotation))]
    value = list(get_value(path))
    st.markdown(f"**{label}**", help=help_text)
    for i, (column, name) in enumerate(zip(st.columns(len(names)), names, strict=True)):
        part = f"{key}.{i}"
        _seed(part, int(value[i]))
        column.number_input(name, step=1, key=part, disabled=disabled, on_change=_commit_part, args=(path, part, i))


def _commit_part(path: str, key: str, index: int) -> None:
    value = list(get_value(path))
    value[index] = int(st.session_state[key])
    set_value(path, value)


def _editor_key(key: str, value: Any) -> str:
    """A table editor's key changes with the config value, so an import or preset redraws it from the config."""
    return f"{key}:{hashlib.sha1(json.dumps(value).encode()).hexdigest()[:8]}"


def _table(path, key, label, help_text, disabled, rows: list[dict], columns: dict, to_value) -> None:
    import pandas as pd

    editor_key = _editor_key(key, get_value(path))
    st.markdown(f"**{label}**", help=help_text)
    st.data_editor(pd.DataFrame(rows, columns=list(columns)), num_rows="dynamic", column_config=columns, key=editor_key, disabled=disabled,
                   hide_index=True, width="stretch", on_change=_commit_table, args=(path, editor_key, rows, to_value))


def _commit_table(path: str, key: str, rows: list[dict], to_value) -> None:
    try:
        set_value(path, to_value(apply_edits(rows, st.session_state[key])))
    except ValueError as e:
        field_text()[path] = ("", str(e))


def apply_edits(rows: list[dict], edits: dict) -> list[dict]:
    """A data editor's rows after its edits (edited, added and deleted rows, as st.data_editor reports them)."""
    rows = [dict(r) for r in rows]
    for index, change in edits.get("edited_rows", {}).items():
        rows[int(index)].update(change)
    rows += [dict(r) for r in edits.get("added_rows", [])]
    deleted = {int(i) for i in edits.get("deleted_rows", [])}
    return [r for i, r in enumerate(rows) if i not in deleted]


def _columns(path, key, label, help_text, annotation, disabled, targets):
    """The column mapping as a small table: one box per field the row layout uses, holding your column's name."""
    from studio_core.data.schemas import CANONICAL_FIELDS, REQUIRED_FIELDS

    mapping = get_value(path)
    layout = get_value("data.row_schema")
    fields = list(CANONICAL_FIELDS) if layout == "auto" else [
        f for f in CANONICAL_FIELDS if f in REQUIRED_FIELDS.get(layout, ()) or f in (("input", "system") if layout == "alpaca" else ("system",))]
    fields += [f for f in mapping if f not in fields]  # a mapped field the layout does not use stays visible
    st.markdown(f"**{label}**", help=help_text + "\n\nLeave a box empty where your file uses that name already.")
    shown = ", ".join(f"{k} → {v}" for k, v in mapping.items()) or "none: the usual column names are read"
    with st.expander(f"Map your columns ({shown})", expanded=bool(mapping)):
        cells = st.columns(4)
        for i, field in enumerate(fields):
            cell_key = f"{key}.{field}"
            _seed(cell_key, mapping.get(field, ""))
            cells[i % 4].text_input(f"{field}: my column", key=cell_key, disabled=disabled, placeholder=field,
                                    on_change=_commit_column, args=(path, cell_key, field))


def _commit_column(path: str, key: str, field: str) -> None:
    mapping = dict(get_value(path))
    column = st.session_state[key].strip()
    if column:
        mapping[field] = column
    else:
        mapping.pop(field, None)
    set_value(path, mapping)


def _shapes(path, key, label, help_text, annotation, disabled, targets):
    rows = [{"batch": b, "sequence": s} for b, s in get_value(path)]
    columns = {"batch": st.column_config.NumberColumn("batch", min_value=1, step=1, required=True),
               "sequence": st.column_config.NumberColumn("sequence", min_value=2, step=1, required=True)}
    _table(path, key, label, help_text, disabled, rows, columns,
           lambda rs: [[int(r["batch"]), int(r["sequence"])] for r in rs if r.get("batch") and r.get("sequence")])


def _lines(path, key, label, help_text, annotation, disabled, targets):
    rows = [{"item": str(v)} for v in get_value(path)]  # numbers too (comm.update_ratios), as text
    columns = {"item": st.column_config.TextColumn(label, required=True, width="large")}
    _table(path, key, label, help_text + "\n\nOne row each; + adds a row.", disabled, rows, columns,
           lambda rs: [r["item"].strip() for r in rs if (r.get("item") or "").strip()])


_DRAWERS = {"bool": _bool, "choice": _choice, "method": _method, "int": _int, "float": _float,
            "float_text": _float_text, "str": _str, "optional_str": _optional_str, "optional_float": _optional_float,
            "modules": _modules,
            "multichoice": _multichoice, "tuple": _tuple, "shapes": _shapes, "columns": _columns, "lines": _lines}


def _literal_choices(annotation) -> list:
    if get_origin(annotation) is Literal:
        return list(get_args(annotation))
    return []


def _is_optional_str(annotation) -> bool:
    return get_origin(annotation) in (typing.Union, types.UnionType) and set(get_args(annotation)) == {str, type(None)}
