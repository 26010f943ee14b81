"""The PEFT methods the studio trains through `peft`, one module each, as peft keeps one package per method.

A method's module holds all of it: its parameters (the config section, with defaults and descriptions, from
which the UI builds its form), how they become a peft config (`build`), its registry entry (`Method`: layers it
can wrap, mergeable, 4-bit base, what it promises), its own config checks (`problems`, where it has any), its
checks against the model's layers (`fit_problems`) and any hook it needs in the training loop (`callbacks`). QLoRA,
DoRA and rsLoRA share LoRA's module and parameters; QLoRA differs in how the base loads (`loads_in_4bit`).

Applying a method to a model (and saving it) is `studio_core.train.adapters`.
"""

from __future__ import annotations

from typing import Any, get_args

from pydantic import ValidationError

from studio_core.errors import Problem
from studio_core.methods import adalora, boft, ia3, loha, lokr, lora, oft, pissa, prefix, prompt, vera
from studio_core.methods.base import TARGETS_DESCRIPTION, AdapterMethod, BuildContext, Method, TargetedMethod

MODULES = (lora, pissa, adalora, ia3, loha, lokr, oft, boft, vera, prefix, prompt)
METHOD_SECTIONS: tuple[type[AdapterMethod], ...] = tuple(cls for module in MODULES for cls in module.SECTIONS)
METHODS: dict[str, Method] = {m.id: m for module in MODULES for m in module.METHODS}
METHOD_IDS: tuple[str, ...] = tuple(METHODS)
NOT_MERGEABLE = tuple(m.id for m in METHODS.values() if not m.mergeable)
assert METHOD_IDS == tuple(i for cls in METHOD_SECTIONS for i in get_args(cls.model_fields["name"].annotation)), \
    "every method id needs its parameter class and its registry entry, in the same order"

__all__ = ["TARGETS_DESCRIPTION", "AdapterMethod", "BuildContext", "METHODS", "METHOD_IDS", "METHOD_SECTIONS", "Method",
           "NOT_MERGEABLE", "TargetedMethod", "get_method", "method_config", "method_problems", "method_section",
           "switch_method"]


def get_method(name: str) -> Method:
    return METHODS[name]


def method_section(name: str) -> type[AdapterMethod]:
    """The parameter class of method `name` (several LoRA variants share one)."""
    for cls in METHOD_SECTIONS:
        if name in get_args(cls.model_fields["name"].annotation):
            return cls
    raise KeyError(name)


def method_config(name: str = "lora", **values: Any) -> AdapterMethod:
    """A validated method section: `method_config("ia3")`, `method_config("lora", r=8)`."""
    return method_section(name)(name=name, **values)


def switch_method(data: dict[str, Any], name: str) -> dict[str, Any]:
    """Method data for `name` with its own defaults, keeping the settings the two methods share."""
    cls = method_section(name)
    kept = {k: v for k, v in data.items() if k in ("enabled", "target_modules") and k in cls.model_fields}
    if data.get("name") in METHOD_IDS and method_section(data["name"]) is cls:
        kept = {k: v for k, v in data.items() if k in cls.model_fields}
    try:
        return cls(**{**kept, "name": name}).model_dump(mode="json")
    except ValidationError:  # a kept value is invalid: validation reports it against the field
        return {**cls(name=name).model_dump(mode="json"), **kept, "name": name}


def method_problems(config) -> list[Problem]:
    """Invalid method settings and combinations (each method's own checks), each with the option to change."""
    problems = [p for module in MODULES if hasattr(module, "problems") for p in module.problems(config)]
    m = config.method
    if not METHODS[m.name].mergeable and config.export.enabled:
        problems.append(Problem("export.enabled", f"{m.name} tuning adds virtual tokens instead of changing "
                                "weights, so there is no merged model to export; set export.enabled=false "
                                "(and compile.enabled=false) or choose a mergeable method"))
    return problems
