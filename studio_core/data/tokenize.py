"""Chat-template tokenization with the loss on assistant tokens only.

The assistant spans are found by rendering the conversation's prefixes with the tokenizer's own chat
template: tokens from the end of "everything before this turn + generation prompt" to the end of "everything
up to and including this turn" are the assistant's. This works with any template whose renderings of a
conversation's prefixes are prefixes of its full rendering (ChatML, Llama, Mistral, Gemma, ...), and is
checked for every row rather than assumed.
"""

from __future__ import annotations

from dataclasses import dataclass

from studio_core.errors import ModelError

IGNORE_INDEX = -100  # label value the loss ignores (torch CrossEntropyLoss default)


@dataclass(frozen=True)
class TokenizedExample:
    input_ids: list[int]
    labels: list[int]  # IGNORE_INDEX on everything but assistant tokens
    full_length: int  # tokens before truncation

    @property
    def truncated(self) -> bool:
        return self.full_length > len(self.input_ids)

    @property
    def supervised_tokens(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE_INDEX)


def _render(tokenizer, messages: list[dict], generation_prompt: bool = False) -> list[int]:
    ids = tokenizer.apply_chat_template(
        messages, tokenize=True, add_generation_prompt=generation_prompt, return_dict=False
    )
    return list(ids)


def tokenize_conversation(tokenizer, messages: list[dict], max_length: int) -> TokenizedExample:
    """Token ids and labels for one conversation, truncated to `max_length` tokens."""
    input_ids = _render(tokenizer, messages)
    labels = [IGNORE_INDEX] * len(input_ids)
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        start = len(_render(tokenizer, messages[:i], generation_prompt=True))
        upto = _render(tokenizer, messages[: i + 1])
        if input_ids[: len(upto)] != upto or start > len(upto):
            raise ModelError(
                "the model's chat template renders a conversation's prefix differently from the start of "
                "the whole conversation, so assistant tokens cannot be located; use a template that is "
                "prefix-stable (e.g. ChatML)"
            )
        labels[start : len(upto)] = input_ids[start : len(upto)]
    return TokenizedExample(input_ids[:max_length], labels[:max_length], len(input_ids))


def length_histogram(lengths: list[int], bins: int = 20) -> dict[str, list]:
    """Equal-width histogram of token lengths: bin edges and counts (what the data page plots)."""
    if not lengths:
        return {"edges": [], "counts": []}
    low, high = min(lengths), max(lengths)
    width = max(1, -(-(high - low + 1) // bins))
    edges = [low + i * width for i in range(bins + 1)]
    counts = [0] * bins
    for n in lengths:
        counts[min((n - low) // width, bins - 1)] += 1
    return {"edges": edges, "counts": counts}
