"""What every method shares: the section fields all methods have, the registry entry's shape, the build context."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import Field

from studio_core.errors import Problem
from studio_core.sections import Section

LINEAR = ("Linear",)
LINEAR_CONV1D = ("Linear", "Conv1D")  # GPT-2 style transposed linear layers
LINEAR_4BIT = ("Linear4bit",)

TARGETS_DESCRIPTION = (
    "Modules to adapt: 'auto' (the method's defaults for the architecture), or module names such as "
    '["q_proj", "v_proj"], or ["all-linear"] for every linear layer but the output head (also the default '
    "for an architecture the studio does not know)."
)


class AdapterMethod(Section):
    """Fields every method shares; each method's own parameters follow in its class."""

    enabled: bool = Field(True, description="Run step 4, Training Init (build the PEFT model).")


class TargetedMethod(AdapterMethod):
    target_modules: list[str] | Literal["auto"] = Field("auto", description=TARGETS_DESCRIPTION)


@dataclass(frozen=True)
class BuildContext:
    """What a peft config needs beyond the method section: the run's steps and the base model's folder."""

    max_steps: int = 40
    model_dir: str | None = None  # tokenizer (prompt init text) and, for loftq, the original weights
    feedforward: tuple[str, ...] = ()
    loftq: bool = True  # False on a stand-in that is not 4-bit (simulation): loftq init is skipped


@dataclass(frozen=True)
class Method:
    """A method's registry entry: how its section becomes a peft config, what it can wrap, what it promises."""

    id: str
    title: str
    summary: str  # one line for the method table: what it trains
    build: Callable[[Any, list[str], BuildContext], object]  # (method section, targets, context) -> peft config
    layer_types: tuple[str, ...] = LINEAR_CONV1D + LINEAR_4BIT  # module classes it can wrap
    loads_in_4bit: bool = False
    mergeable: bool = True
    quantized_base: bool = True  # works on a base already in 4-bit
    under_1_percent: bool = False  # trains under 1% of a real-size model's parameters at its defaults
    rewrites_base: bool = False  # initialisation changes the base weights (saved converted; see train/adapters.py)
    bf16_base: bool = True  # the frozen base may be held in bf16 under bf16 compute (train/precision.py: base_dtype)
    targeted: bool = True  # adapts named modules (prefix/prompt add virtual tokens instead)
    notes: tuple[str, ...] = field(default_factory=tuple)
    # Checks of the module's own shapes against the model's matched (path, module) pairs, with the fix.
    fit_problems: Callable[[Any, list[tuple[str, Any]]], list[Problem]] | None = None
    # Hooks into the training loop (TrainerCallbacks) the method needs, from its section.
    callbacks: Callable[[Any], list] | None = None


def task_type():
    from peft import TaskType

    return TaskType.CAUSAL_LM


def in_features(module) -> int:
    if type(module).__name__ == "Conv1D":
        return module.weight.shape[0]
    return getattr(module, "in_features", 0)
