"""Rendering and tokenization: history reaches the tokens, tool calls carry the loss, replies do not, text packs.

The byte-level tokenizer of the tiny models (ChatML, content only, like the embedded SmolLM2 template) needs
no download; a second template with tool support checks the `apply_chat_template(..., tools=...)` path.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from studio_core.data.load import load_conversations
from studio_core.data.schemas import normalise_record
from studio_core.data.tokenize import (
    IGNORE_INDEX,
    TOOLS_HEADER,
    chat_view,
    pack_texts,
    supports_tools,
    tokenize_conversation,
    tokenize_text,
)
from studio_core.models.tiny import build_byte_tokenizer

FIXTURES = Path(__file__).parent / "fixtures"

TOOL_TEMPLATE = (
    "{%- if tools %}<|im_start|>system\n{% for t in tools %}{{ t | tojson }}\n{% endfor %}<|im_end|>\n{% endif %}"
    "{%- for m in messages %}<|im_start|>{{ m.role }}\n{% if m.content %}{{ m.content }}{% endif %}"
    "{% if m.tool_calls %}{% for c in m.tool_calls %}<call>{{ c.function | tojson }}</call>{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture(scope="module")
def tokenizer():
    return build_byte_tokenizer()


@pytest.fixture(scope="module")
def tool_tokenizer():
    tok = build_byte_tokenizer()
    tok.chat_template = TOOL_TEMPLATE
    return tok


def supervised(tok, example) -> str:
    return tok.decode([t for t, label in zip(example.input_ids, example.labels) if label != IGNORE_INDEX])


def unsupervised(tok, example) -> str:
    return tok.decode([t for t, label in zip(example.input_ids, example.labels) if label == IGNORE_INDEX])


def test_history_turns_reach_the_tokenized_example(tokenizer) -> None:
    conversation = load_conversations(FIXTURES / "alpaca_history.json").rows[0]
    example = tokenize_conversation(tokenizer, conversation, 4096)
    text = tokenizer.decode(example.input_ids)
    for turn in ("Say hello in French.", "Bonjour.", "And in German?", "Hallo.", "And in Spanish?", "Hola."):
        assert turn in text
    assert all(answer in supervised(tokenizer, example) for answer in ("Bonjour.", "Hallo.", "Hola."))
    last = tokenize_conversation(tokenizer, conversation, 4096, train_on="last_assistant")
    assert "Hola." in supervised(tokenizer, last) and "Bonjour." not in supervised(tokenizer, last)


def test_assistant_first_turn_trains_on_its_content_only(tokenizer) -> None:
    conversation = [{"role": "assistant", "content": "Welcome."}, {"role": "user", "content": "Hi"},
                    {"role": "assistant", "content": "Hello."}]
    text = supervised(tokenizer, tokenize_conversation(tokenizer, conversation, 256))
    assert text.startswith("Welcome.") and "Hello." in text and "Hi" not in text


def test_embedded_style_template_has_no_tool_support(tokenizer, tool_tokenizer) -> None:
    assert not supports_tools(tokenizer)
    assert supports_tools(tool_tokenizer)


def test_plain_text_tool_call_carries_loss_and_reply_does_not(tokenizer) -> None:
    conversation = load_conversations(FIXTURES / "sharegpt_tools.json").rows[0]
    example = tokenize_conversation(tokenizer, conversation, 4096)
    text = tokenizer.decode(example.input_ids)
    assert TOOLS_HEADER in text and '"name": "get_weather", "description"' in text  # the schema, system turn
    call = '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'
    assert call in supervised(tokenizer, example)
    assert '{"temperature_c": 18, "sky": "cloudy"}' in unsupervised(tokenizer, example)
    assert "temperature_c" not in supervised(tokenizer, example)
    assert "It is 18 degrees" in supervised(tokenizer, example)


def test_native_tool_template_gets_tools_and_calls(tool_tokenizer) -> None:
    conversation = load_conversations(FIXTURES / "openai_tools.jsonl").rows[1]
    example = tokenize_conversation(tool_tokenizer, conversation, 4096)
    text = tool_tokenizer.decode(example.input_ids)
    assert '"name": "convert"' in text.split("<|im_start|>user")[0]  # tools passed as tools=...
    assert TOOLS_HEADER not in text
    sup = supervised(tool_tokenizer, example)
    assert sup.count("<call>") == 2 and '"value": 5' in sup  # both parallel calls trained on
    assert "11.02 lb" in unsupervised(tool_tokenizer, example) and "11.02 lb" not in sup.split("</call>")[-2]
    assert "3 km is 1.86 miles" in sup


def test_chat_view_drops_only_the_tools_holder(tool_tokenizer) -> None:
    conversation = load_conversations(FIXTURES / "sharegpt_tools.json").rows[0]
    view, tools = chat_view(conversation, native_tools=True)
    assert tools == conversation[0]["tools"] and view[0]["role"] == "user"
    assert all("tools" not in m for m in view)


# Hypothesis: any conversation, in either tool dialect, keeps every turn's text through normalise + render.
text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=30).filter(
    lambda s: s.strip() and "{{" not in s)
name = st.from_regex(r"[a-z][a-z_]{0,8}", fullmatch=True)
arguments = st.dictionaries(name, st.one_of(st.integers(), text), max_size=3)


@st.composite
def conversations(draw):
    turns = []
    for _ in range(draw(st.integers(1, 3))):
        turns.append(("user", draw(text)))
        if draw(st.booleans()):
            turns.append(("call", (draw(name), draw(arguments))))
            turns.append(("tool", draw(text)))
        turns.append(("assistant", draw(text)))
    return draw(st.one_of(st.none(), text)), turns


def as_openai(system, turns) -> dict:
    messages = [{"role": "system", "content": system}] if system else []
    for kind, value in turns:
        if kind == "call":
            messages.append({"role": "assistant", "content": None, "tool_calls": [
                {"type": "function", "function": {"name": value[0], "arguments": json.dumps(value[1])}}]})
        else:
            messages.append({"role": kind, "content": value})
    return {"messages": messages, "tools": [{"type": "function", "function": {"name": "tool_x"}}]}


def as_sharegpt(system, turns) -> dict:
    roles = {"user": "human", "assistant": "gpt", "tool": "observation"}
    conversation = [
        {"from": "function_call", "value": json.dumps({"name": v[0], "arguments": v[1]})} if kind == "call"
        else {"from": roles[kind], "value": v} for kind, v in turns
    ]
    return {"conversations": conversation, "system": system or "", "tools": '[{"name": "tool_x"}]'}


@settings(max_examples=60, deadline=None)
@given(conversations(), st.sampled_from(["messages", "sharegpt"]), st.booleans())
def test_normalise_then_render_keeps_every_turns_text(tokenizer, tool_tokenizer, drawn, schema: str,
                                                      native: bool) -> None:
    system, turns = drawn
    record = as_openai(system, turns) if schema == "messages" else as_sharegpt(system, turns)
    conversation = normalise_record(record, schema)
    tokenizer = tool_tokenizer if native else tokenizer
    messages, tools = chat_view(conversation, native)
    rendered = tokenizer.apply_chat_template(messages, tools=tools, tokenize=False)
    pos = 0
    for kind, value in [("system", system)] * bool(system) + turns:
        piece = json.dumps({"name": value[0], "arguments": value[1]}, ensure_ascii=False) if kind == "call" \
            else value
        found = rendered.find(piece, pos)
        assert found >= 0, (kind, piece)
        pos = found + len(piece)  # and in order
    example = tokenize_conversation(tokenizer, conversation, 100_000, native_tools=native)
    assert tokenizer.decode(example.input_ids) == rendered
    answers = supervised(tokenizer, example)
    assert all(str(v) in answers for k, v in turns if k == "assistant")


def test_text_rows_end_with_eos_and_pack_without_straddling(tokenizer) -> None:
    ids = [tokenize_text(tokenizer, t) for t in ("aaaa", "bbbbbb", "cc", "d" * 30)]
    assert all(row[-1] == tokenizer.eos_token_id for row in ids)
    packed = pack_texts(ids, max_length=12)
    assert [len(e.input_ids) for e in packed] == [12, 3, 12]  # 5 + 7 | 3 | 31 cut to 12
    assert all(e.labels == e.input_ids for e in packed)  # every token trained on
    assert packed[2].full_length == 31 and packed[2].truncated
    assert sum(len(e.input_ids) for e in packed[:2]) == sum(len(r) for r in ids[:3])  # no token lost


def test_openai_weight_zero_keeps_a_turn_out_of_the_loss(tokenizer) -> None:
    record = {"messages": [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "bad", "weight": 0},
                           {"role": "user", "content": "q2"}, {"role": "assistant", "content": "good", "weight": 1}]}
    text = supervised(tokenizer, tokenize_conversation(tokenizer, normalise_record(record, "messages"), 256))
    assert "good" in text and "bad" not in text
