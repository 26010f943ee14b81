"""The chat playground's engine: a tiny run's answers, streamed, equal evaluation's `generate` on the same prompt."""

import json
import subprocess
import sys

import pytest

from studio_core.chat import ChatSession, Sampling, serve_jsonl
from studio_core.errors import InputError
from studio_core.evaluate.basic import generate

PROMPT = [{"role": "user", "content": "Clause: payment within 30 days. Verdict?"}]


@pytest.fixture
def tiny_run(tiny_compiled_run):
    return tiny_compiled_run


@pytest.mark.parametrize("source", ["adapter", "merged"])
def test_chat_answers_equal_generate_on_the_same_prompt(tiny_run, source):
    session = ChatSession(tiny_run.path, source)
    chunks = list(session.stream("tuned", PROMPT, sampling=Sampling(max_new_tokens=24)))
    expected = generate(session.tuned, session.tokenizer, [PROMPT], max_new_tokens=24)[0]
    assert "".join(chunks).strip() == expected and len(chunks) > 1  # streamed in pieces, same text
    base_model = session.base if session.base is not None else session.tuned.get_base_model()
    if session.base is None:
        with session.tuned.disable_adapter():
            base_expected = generate(session.tuned, session.tokenizer, [PROMPT], max_new_tokens=24)[0]
    else:
        base_expected = generate(base_model, session.tokenizer, [PROMPT], max_new_tokens=24)[0]
    assert session.answer("base", PROMPT, sampling=Sampling(max_new_tokens=24)) == base_expected
    assert base_expected != expected  # the adapter (lr 0.05) changed the answer: base and tuned really differ


def test_system_prompt_goes_through_the_chat_template(tiny_run):
    session = ChatSession(tiny_run.path, "adapter")
    ids = session.prompt_ids(PROMPT, system="Answer in one word.")
    text = session.tokenizer.decode(ids)
    assert text.startswith("<|im_start|>system\nAnswer in one word.<|im_end|>") and text.endswith("assistant\n")


def test_jsonl_protocol_streams_each_side_then_done(tiny_run):
    session = ChatSession(tiny_run.path, "adapter")
    replies = []
    request = {"messages": PROMPT, "sampling": {"max_new_tokens": 8}, "sides": ["tuned", "base"]}
    serve_jsonl(session, [json.dumps(request), json.dumps({"messages": [], "sampling": {"nope": 1}})], replies.append)
    assert "ready" in replies[0]
    sides = [r["side"] for r in replies if r.get("done") and "side" in r]
    assert sides == ["tuned", "base"] and replies[-2] == {"done": True}
    text = "".join(r["text"] for r in replies if r.get("side") == "tuned" and "text" in r)
    assert text.strip() == session.answer("tuned", PROMPT, sampling=Sampling(max_new_tokens=8))
    assert "unknown setting(s) nope" in replies[-1]["error"]


def test_bad_sampling_and_conversation_are_refused_by_name():
    with pytest.raises(InputError, match="top_p 1.5 must be in"):
        Sampling.from_dict({"top_p": 1.5})
    from studio_core.chat import check_messages
    with pytest.raises(InputError, match="must end with a user message"):
        check_messages([{"role": "assistant", "content": "hi"}])


def test_cli_chat_answers_a_prompt(tiny_run):
    done = subprocess.run([sys.executable, "-m", "studio_core.cli", "chat", str(tiny_run.path), "--side", "tuned",
                           "--prompt", PROMPT[0]["content"], "--max-new-tokens", "12"],
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    expected = ChatSession(tiny_run.path).answer("tuned", PROMPT, sampling=Sampling(max_new_tokens=12))
    assert done.stdout.strip() == f"tuned> {expected}".strip()
