"""Generation prompts render tool calls the way training rendered them (data/tokenize.py)."""

from __future__ import annotations

from studio_core.data.schemas import normalise_record
from studio_core.evaluate.basic import _prompt_ids, prompt_and_reference
from studio_core.models.tiny import build_byte_tokenizer


def test_a_tool_conversation_prompt_keeps_its_tools_and_calls() -> None:
    call = '{"name": "weather", "arguments": {"city": "Oslo"}}'
    record = {"conversations": [{"from": "human", "value": "Weather in Oslo?"},
                                {"from": "function_call", "value": call},
                                {"from": "observation", "value": "rain"}, {"from": "gpt", "value": "It rains."}],
              "tools": '[{"name": "weather", "description": "Weather now"}]'}
    prompt, reference = prompt_and_reference(normalise_record(record, "sharegpt"))
    tokenizer = build_byte_tokenizer()
    text = tokenizer.decode(_prompt_ids(tokenizer, prompt))
    assert reference == "It rains."
    assert '"description": "Weather now"' in text  # the schema, in the system turn
    assert '<tool_call>{"name": "weather", "arguments": {"city": "Oslo"}}</tool_call>' in text
    assert text.endswith("<|im_start|>assistant\n")
