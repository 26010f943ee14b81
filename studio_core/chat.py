"""The chat playground's engine: a run's base and tuned models answering the same conversation, streamed.

The prompt is built exactly as training and evaluation build it (`evaluate.basic._prompt_ids`: the tokenizer's
chat template, tools rendered as in training) with an optional system prompt first. The tuned side is the
unmerged adapter on a fresh base (stock peft) or the merged model; the base side is the base model itself (with
the adapter, peft's `disable_adapter()`; with the merged model, the base loaded beside it). Text streams through
transformers' `TextIteratorStreamer`, `generate` running in a thread of this process.

The studio never imports this module: it talks to `peft-studio chat RUN --jsonl`, a child process that keeps the
models loaded (see `app/chat.py`), so torch stays out of the UI process and a long answer blocks no page.
JSON-lines protocol: one request per line `{"messages": [...], "system": "...", "sampling": {...}, "sides":
["tuned", "base"]}`; replies `{"ready": {...}}` once, then per side `{"side": s, "text": chunk}`... and
`{"side": s, "done": true, "chunks": n, "seconds": t}`, then `{"done": true}`; a bad request gets `{"error": msg}`;
a request's `"id"`, if given, is echoed in each of its replies; `{"id": i, "end": true}` is echoed as it is (the
studio sends it after the requests of one turn).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from studio_core.errors import InputError

SOURCES = ("adapter", "merged")
SIDES = ("tuned", "base")


@dataclass(frozen=True)
class Sampling:
    """Generation settings; temperature 0 is greedy (the default), as evaluation answers are."""

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 128
    repetition_penalty: float = 1.0
    seed: int = 0

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Sampling:
        data = data or {}
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise InputError(f"sampling: unknown setting(s) {', '.join(unknown)}; known: "
                             f"{', '.join(cls.__dataclass_fields__)}")
        sampling = cls(**{k: type(getattr(cls, k))(v) for k, v in data.items()})
        problems = [f"{name} {value} must be {rule}" for name, value, ok, rule in (
            ("temperature", sampling.temperature, sampling.temperature >= 0, ">= 0"),
            ("top_p", sampling.top_p, 0 < sampling.top_p <= 1, "in (0, 1]"),
            ("top_k", sampling.top_k, sampling.top_k >= 0, ">= 0 (0: off)"),
            ("max_new_tokens", sampling.max_new_tokens, 1 <= sampling.max_new_tokens <= 4096, "in 1..4096"),
            ("repetition_penalty", sampling.repetition_penalty, sampling.repetition_penalty > 0, "> 0")) if not ok]
        if problems:
            raise InputError("sampling: " + "; ".join(problems))
        return sampling

    def generate_kwargs(self) -> dict[str, Any]:
        if self.temperature == 0:
            return {"do_sample": False, "repetition_penalty": self.repetition_penalty}
        return {"do_sample": True, "temperature": self.temperature, "top_p": self.top_p,
                "top_k": self.top_k or None, "repetition_penalty": self.repetition_penalty}


class ChatSession:
    """A run's tokenizer with its tuned and base models, loaded once; `stream` answers one side at a time."""

    def __init__(self, run_dir: Path, source: str = "adapter"):
        if source not in SOURCES:
            raise InputError(f"chat source '{source}': choose {' or '.join(SOURCES)}")
        self.run_dir, self.source = Path(run_dir), source
        self.tokenizer, self.tuned, self.base, self.describe = load_chat_models(self.run_dir, source)
        self.lock = threading.Lock()  # one generation at a time: the adapter's on/off switch is model state

    def prompt_ids(self, messages: list[dict], system: str | None = None) -> list[int]:
        from studio_core.evaluate.basic import _prompt_ids

        check_messages(messages)
        return _prompt_ids(self.tokenizer, ([{"role": "system", "content": system}] if system else []) + messages)

    def stream(self, side: str, messages: list[dict], system: str | None = None,
               sampling: Sampling = Sampling()) -> Iterator[str]:
        """The answer of `side` ("tuned" or "base") as text chunks, as they are generated."""
        import torch
        from transformers import TextIteratorStreamer

        if side not in SIDES:
            raise InputError(f"chat side '{side}': choose {' or '.join(SIDES)}")
        ids = torch.tensor([self.prompt_ids(messages, system)])
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=600)
        model, switch = self._side(side)
        failure: list[BaseException] = []

        def work():
            try:
                with self.lock, switch(), torch.no_grad():
                    torch.manual_seed(sampling.seed)
                    model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), streamer=streamer,
                                   max_new_tokens=sampling.max_new_tokens, pad_token_id=self.tokenizer.pad_token_id,
                                   eos_token_id=self.tokenizer.eos_token_id, **sampling.generate_kwargs())
            except BaseException as e:  # noqa: BLE001 - surfaced to the reader below, after the streamer is released
                failure.append(e)
                streamer.end()

        worker = threading.Thread(target=work, name=f"chat-{side}", daemon=True)
        worker.start()
        yield from streamer
        worker.join()
        if failure:
            raise failure[0]

    def answer(self, side: str, messages: list[dict], system: str | None = None,
               sampling: Sampling = Sampling()) -> str:
        return "".join(self.stream(side, messages, system, sampling)).strip()

    def _side(self, side: str):
        if side == "tuned":
            return self.tuned, contextlib.nullcontext
        if self.base is not None:
            return self.base, contextlib.nullcontext
        return self.tuned, self.tuned.disable_adapter  # the adapter's base: the same weights, adapter off


def check_messages(messages: list[dict]) -> None:
    if not messages or messages[-1].get("role") != "user":
        raise InputError("chat: the conversation must end with a user message")
    bad = [i for i, m in enumerate(messages) if m.get("role") not in ("user", "assistant")
           or not isinstance(m.get("content"), str)]
    if bad:
        raise InputError(f"chat: message(s) {bad} need a role 'user' or 'assistant' and text content")


def load_chat_models(run_dir: Path, source: str):
    """(tokenizer, tuned, base or None, description) of a run: from its adapter or its merged folder."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from studio_core.runs import RunDir

    run = RunDir(run_dir)
    artifacts = run.artifacts
    folder = artifacts / ("adapter" if source == "adapter" else "merged")
    if not (folder / ("adapter_config.json" if source == "adapter" else "config.json")).is_file():
        raise InputError(f"{folder}: run {run.run_id} has no {source} (did step 6 finish? prefix and prompt tuning "
                         "have no merged model: use --source adapter)")
    tokenizer, base_loader, base_path = _run_base(run)
    if source == "adapter":
        tuned = PeftModel.from_pretrained(base_loader(), str(folder)).eval()
        return tokenizer, tuned, None, f"adapter {folder.relative_to(run.path)} on {base_path}"
    tuned = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32, use_safetensors=True).eval()
    return tokenizer, tuned, base_loader().eval(), f"merged model {folder.relative_to(run.path)}; base {base_path}"


def _run_base(run):
    """The run's tokenizer and a loader of its base model (a simulation's tiny stand-in where it ran one)."""
    import torch
    from transformers import AutoModelForCausalLM

    from studio_core.config import validate_config
    from studio_core.models.resolve import load_model, load_tokenizer, resolve_in_home
    from studio_core.runs import studio_home

    config = validate_config(run.config_data())
    home = studio_home(run.path.parent.parent)
    resolved = resolve_in_home(config.model, home)
    tokenizer = load_tokenizer(resolved)
    stand_in = run.artifacts / "simulation-base"
    if stand_in.is_dir():
        return tokenizer, lambda: AutoModelForCausalLM.from_pretrained(
            str(stand_in), dtype=torch.float32, use_safetensors=True), "the simulation's tiny base"
    return tokenizer, lambda: load_model(resolved), resolved.ref


def serve_jsonl(session: ChatSession, lines, write) -> None:
    """The studio's protocol (module docstring): read requests from `lines`, `write(dict)` the replies."""
    write({"ready": {"run": session.run_dir.name, "source": session.source, "models": session.describe}})
    for line in lines:
        if not line.strip():
            continue
        tag: dict[str, Any] = {}
        try:
            request = json.loads(line)
            tag = {"id": request["id"]} if "id" in request else {}
            if request.get("end"):  # the client's marker after a group of requests: echoed when they are done
                write({**tag, "end": True})
                continue
            sampling = Sampling.from_dict(request.get("sampling"))
            for side in request.get("sides") or list(SIDES):
                start, chunks = time.perf_counter(), 0
                for text in session.stream(side, request["messages"], request.get("system"), sampling):
                    chunks += 1
                    write({**tag, "side": side, "text": text})
                write({**tag, "side": side, "done": True, "chunks": chunks,
                       "seconds": round(time.perf_counter() - start, 3), "sampling": asdict(sampling)})
            write({**tag, "done": True})
        except (InputError, KeyError, ValueError, TypeError) as e:
            write({**tag, "error": f"{type(e).__name__}: {e}"})
