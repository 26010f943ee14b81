"""Chat-template tokenization with the loss on assistant tokens only, and packed raw text.

The assistant spans are found by rendering the conversation's prefixes with the tokenizer's own chat
template: tokens from the end of "everything before this turn + generation prompt" to the end of "everything
up to and including this turn" are the assistant's. This works with any template whose renderings of a
conversation's prefixes are prefixes of its full rendering (ChatML, Llama, Mistral, Gemma, ...), and is
checked for every row rather than assumed.

Tool calls (the internal form in `schemas.py`) are rendered by the model's own template, with
`apply_chat_template(..., tools=...)`, when that template renders tools, calls and replies (probed once
per tokenizer: `supports_tools`). A template that reads only each message's content (the embedded
SmolLM2's does) would drop them, so there one plain-text rendering is used instead (`plain_text_view`):

- the tool schemas go at the end of the system turn, after `TOOLS_HEADER`, one JSON object per line
  between `<tools>` and `</tools>`;
- each call is a line `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` in the assistant's turn,
  after its text if it has any;
- a tool's reply stays a turn of role `tool`, its content unchanged.

Either way the assistant's call tokens carry the loss and the tool's reply does not (it is not an
assistant turn); an assistant turn with `"weight": 0` carries none either. `text` rows (continued
pre-training) are tokenized without a template, end with the EOS token, carry the loss on every token,
and are packed in file order up to `max_length` tokens.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from studio_core.errors import ModelError

IGNORE_INDEX = -100  # label value the loss ignores (torch CrossEntropyLoss default)
TRAIN_ON = ("all_assistant", "last_assistant")
TOOLS_HEADER = (
    "You can call the tools below. To call one, write a line "
    '<tool_call>{"name": <tool name>, "arguments": <arguments object>}</tool_call>; '
    "each call's result comes back in a turn of role tool."
)
RENDERINGS = {
    "chat_template": "the model's chat template",
    "chat_template_tools": "the model's chat template, with its own tool-calling format (tools=...)",
    "plain_text_tools": "the model's chat template has no tool support: tools in the system turn, each call as "
    "<tool_call>{json}</tool_call> in the assistant turn, replies as turns of role tool (see data/tokenize.py)",
    "text": "raw text, no chat template: every token supervised, rows packed up to data.max_length",
}


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


def has_tools(messages: list[dict]) -> bool:
    """Whether a conversation defines tools or makes a tool call (or holds a tool's reply)."""
    return any("tools" in m or "tool_calls" in m or m["role"] == "tool" for m in messages)


_PROBE_TOOL = {"type": "function", "function": {
    "name": "studio_probe_tool", "description": "probe",
    "parameters": {"type": "object", "properties": {"probe_arg": {"type": "string"}}}}}
_PROBE = [
    {"role": "user", "content": "probe question"},
    {"role": "assistant", "content": "", "tool_calls": [
        {"type": "function", "function": {"name": "studio_probe_call", "arguments": {"probe_arg": "probe_value"}}}]},
    {"role": "tool", "content": "probe_reply"},
    {"role": "assistant", "content": "probe answer"},
]


def supports_tools(tokenizer) -> bool:
    """Whether the tokenizer's chat template renders the tool schemas, a call's name and arguments, and a reply."""
    try:
        text = tokenizer.apply_chat_template(_PROBE, tools=[_PROBE_TOOL], tokenize=False)
    except Exception:  # noqa: BLE001 - a template that raises on tools or tool turns does not support them
        return False
    return all(word in text for word in ("studio_probe_tool", "studio_probe_call", "probe_value", "probe_reply"))


def chat_view(messages: list[dict], native_tools: bool) -> tuple[list[dict], list[dict] | None]:
    """The messages and tools to hand `apply_chat_template` for one internal conversation."""
    tools = messages[0].get("tools") if messages else None
    if native_tools:
        view = [{k: v for k, v in m.items() if k != "tools"} for m in messages]
        if tools and not view[0]["content"]:
            view = view[1:]  # the holder of the tools, not a system prompt
        return view, tools
    return plain_text_view(messages), None


def plain_text_view(messages: list[dict]) -> list[dict]:
    """The one plain-text rendering of tools and calls for templates without tool support (module docstring)."""
    view = []
    for message in messages:
        content = message["content"]
        if message.get("tools"):
            schemas = "\n".join(json.dumps(t["function"], ensure_ascii=False) for t in message["tools"])
            block = f"{TOOLS_HEADER}\n<tools>\n{schemas}\n</tools>"
            content = f"{content}\n\n{block}" if content else block
        if message.get("tool_calls"):
            calls = "\n".join(f"<tool_call>{_call_json(c)}</tool_call>" for c in message["tool_calls"])
            content = f"{content}\n{calls}" if content else calls
        view.append({"role": message["role"], "content": content, **({"weight": 0} if message.get("weight") == 0
                                                                      else {})})
    return view


def _call_json(call: dict) -> str:
    function = call["function"]
    return json.dumps({"name": function["name"], "arguments": function["arguments"]}, ensure_ascii=False)


def _render(tokenizer, messages: list[dict], generation_prompt: bool = False, tools: list | None = None) -> list[int]:
    ids = tokenizer.apply_chat_template(
        messages, tools=tools, tokenize=True, add_generation_prompt=generation_prompt, return_dict=False
    )
    return list(ids)


def tokenize_conversation(
    tokenizer, messages: list[dict], max_length: int, train_on: str = "all_assistant",
    native_tools: bool | None = None,
) -> TokenizedExample:
    """Token ids and labels for one conversation, truncated to `max_length` tokens.

    `train_on`: loss on every assistant turn, or on the last one only. `native_tools`: render tools with
    the template's own format (None: probe the template when the conversation has tools).
    """
    if train_on not in TRAIN_ON:
        raise ValueError(f"train_on must be one of {TRAIN_ON}, got {train_on!r}")
    if native_tools is None:
        native_tools = has_tools(messages) and supports_tools(tokenizer)
    messages, tools = chat_view(messages, native_tools)
    input_ids = _render(tokenizer, messages, tools=tools)
    labels = [IGNORE_INDEX] * len(input_ids)
    last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=-1)
    for i, message in enumerate(messages):
        skipped = message.get("weight") == 0 or (train_on == "last_assistant" and i != last)
        if message["role"] != "assistant" or skipped:
            continue
        start = _turn_start(tokenizer, messages, i, tools)
        upto = _render(tokenizer, messages[: i + 1], tools=tools)
        if input_ids[: len(upto)] != upto or start > len(upto):
            raise ModelError(
                "the model's chat template renders a conversation's prefix differently from the start of "
                "the whole conversation, so assistant tokens cannot be located; use a template that is "
                "prefix-stable (e.g. ChatML)"
            )
        labels[start : len(upto)] = input_ids[start : len(upto)]
    return TokenizedExample(input_ids[:max_length], labels[:max_length], len(input_ids))


def _turn_start(tokenizer, messages: list[dict], i: int, tools: list | None) -> int:
    """Where assistant turn `i`'s own tokens start: after the prefix and the generation prompt."""
    if i:
        return len(_render(tokenizer, messages[:i], generation_prompt=True, tools=tools))
    # The assistant speaks first: there is no prefix to render, so the start is where this turn's rendering
    # stops agreeing with the same turn emptied (everything before its content is the template's).
    full = _render(tokenizer, messages[:1], tools=tools)
    empty = _render(tokenizer, [{"role": "assistant", "content": ""}], tools=tools)
    same = 0
    while same < min(len(full), len(empty)) and full[same] == empty[same]:
        same += 1
    return same


def tokenize_text(tokenizer, text: str) -> list[int]:
    """A raw-text row's token ids (the tokenizer's own special tokens), ending with EOS."""
    ids = list(tokenizer(text, add_special_tokens=True)["input_ids"])
    eos = tokenizer.eos_token_id
    return ids + [eos] if eos is not None and (not ids or ids[-1] != eos) else ids


def pack_texts(rows: list[list[int]], max_length: int) -> list[TokenizedExample]:
    """Rows packed in order into examples of at most `max_length` tokens, every token supervised.

    A row never straddles two examples; a row longer than `max_length` is an example of its own,
    truncated (its `full_length` says how many tokens it had).
    """
    examples: list[TokenizedExample] = []
    current: list[int] = []
    for ids in rows:
        if current and len(current) + len(ids) > max_length:
            examples.append(TokenizedExample(current, list(current), len(current)))
            current = []
        if len(ids) > max_length:
            examples.append(TokenizedExample(ids[:max_length], ids[:max_length], len(ids)))
            continue
        current = current + ids
    if current:
        examples.append(TokenizedExample(current, list(current), len(current)))
    return examples


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
