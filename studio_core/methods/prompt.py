"""Prompt tuning: trained soft-prompt embeddings prepended to the input; nothing merges."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from studio_core.errors import Problem
from studio_core.methods.base import AdapterMethod, BuildContext, Method, task_type


class PromptMethod(AdapterMethod):
    name: Literal["prompt"] = Field("prompt", description="PEFT method.")
    virtual_tokens: int = Field(20, ge=1, le=512, description="Trained soft-prompt tokens prepended to the input.")
    init: Literal["random", "text"] = Field(
        "random", description="Start the soft prompt from random vectors or from the embeddings of init_text."
    )
    init_text: str | None = Field(
        None,
        description="Text whose token embeddings initialise the soft prompt (init='text'), e.g. a short "
        "task instruction.",
    )


SECTIONS = (PromptMethod,)


def build_prompt(m, targets, ctx: BuildContext):
    from peft import PromptTuningConfig, PromptTuningInit

    if m.init == "text":
        return PromptTuningConfig(
            num_virtual_tokens=m.virtual_tokens,
            prompt_tuning_init=PromptTuningInit.TEXT,
            prompt_tuning_init_text=m.init_text,
            tokenizer_name_or_path=ctx.model_dir,
            task_type=task_type(),
        )
    return PromptTuningConfig(num_virtual_tokens=m.virtual_tokens, task_type=task_type())


def problems(config) -> list[Problem]:
    m, found = config.method, []
    if isinstance(m, PromptMethod):
        if m.init == "text" and not m.init_text:
            found.append(
                Problem(
                    "method.init_text",
                    "init=text needs the text to start from; set init_text (e.g. a "
                    "one-line task instruction) or use init=random",
                )
            )
        if m.init == "random" and m.init_text:
            found.append(Problem("method.init", "init_text is set but init=random ignores it; set init=text"))
    return found


METHODS = (
    Method(
        "prompt",
        "Prompt tuning",
        "trained soft-prompt embeddings prepended to the input",
        build_prompt,
        under_1_percent=True,
        targeted=False,
        mergeable=False,
    ),
)
