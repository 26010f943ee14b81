"""An Ollama `Modelfile` beside the GGUF: FROM, a Go TEMPLATE derived from the model's Jinja chat template, the
stop tokens and the sampling parameters.

Ollama templates are Go templates, not Jinja, so the chat template is not copied: it is rendered on marker
messages to find each role's text before and after the content and the generation prompt, those pieces are
written as one `range .Messages` template, and the pair is checked: the Go template's output for a sample
conversation (rendered by the same concatenation Go performs) must equal the Jinja template's, or no Modelfile
is written and the error says why (a template that is not a per-message concatenation, e.g. one that moves the
system prompt or numbers turns).

A default system prompt the Jinja template inserts when the conversation has none (SmolLM2's does) becomes the
Modelfile's SYSTEM, which Ollama sends as the first system message.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from studio_core.errors import StudioError

MODELFILE = "Modelfile"
MARK = "\x00MARK\x00"
ROLES = ("system", "user", "assistant")
SAMPLE = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Is clause 4 compliant?"},
          {"role": "assistant", "content": "COMPLIANT: it names a term."}, {"role": "user", "content": "And 5?"}]


class TemplateError(StudioError):
    """The chat template cannot be written as an Ollama TEMPLATE that renders the same text."""


def _render(tokenizer, messages, generation: bool = False) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation)


def template_pieces(tokenizer) -> dict[str, Any]:
    """Each role's (before, after) the content, the generation prompt and a default system prompt, if any."""
    if not tokenizer.chat_template:
        raise TemplateError("the tokenizer has no chat template: Ollama needs one to chat; train with a model that "
                            "has one or set the tokenizer's chat_template")
    anchor = [{"role": "system", "content": "S"}]
    head = _render(tokenizer, anchor)
    pieces = {}
    for role in ROLES:
        messages = [{"role": role, "content": MARK}] if role == "system" else [*anchor, {"role": role, "content": MARK}]
        text = _render(tokenizer, messages)
        text = text if role == "system" else text.removeprefix(head)
        before, _, after = text.partition(MARK)
        pieces[role] = (before, after)
    user = [*anchor, {"role": "user", "content": "U"}]
    pieces["generation"] = _render(tokenizer, user, True).removeprefix(_render(tokenizer, user))
    pieces["default_system"] = _default_system(tokenizer, pieces)
    return pieces


def _default_system(tokenizer, pieces) -> str | None:
    text = _render(tokenizer, [{"role": "user", "content": "U"}])
    before, after = pieces["system"]
    if before and text.startswith(before) and after in text:
        return text[len(before):text.index(after, len(before))]
    return None


def render_like_go(pieces: dict[str, Any], messages: list[dict]) -> str:
    """What Ollama's Go template renders for `messages` (a plain concatenation, as `go_template` writes it)."""
    return "".join(pieces[m["role"]][0] + m["content"] + pieces[m["role"]][1] for m in messages) + pieces["generation"]


def go_template(pieces: dict[str, Any]) -> str:
    """The Ollama TEMPLATE: one branch per role inside `range .Messages`, then the generation prompt. No `{{-`
    trimming: the pieces' own newlines are part of the prompt the model was trained on."""
    branches = "".join(f'{{{{ {"if" if i == 0 else "else if"} eq .Role "{role}" }}}}{before}{{{{ .Content }}}}{after}'
                       for i, (role, (before, after)) in enumerate((r, pieces[r]) for r in ROLES))
    return f"{{{{ range .Messages }}}}{branches}{{{{ end }}}}{{{{ end }}}}{pieces['generation']}"


def check_template(tokenizer, pieces) -> None:
    expected = _render(tokenizer, SAMPLE, True)
    got = render_like_go(pieces, SAMPLE)
    if got != expected:
        raise TemplateError("the chat template is not a per-message concatenation, so no Ollama TEMPLATE renders it "
                            f"the same: Jinja gives {expected[:200]!r}, the derived template {got[:200]!r}")
    if any('"""' in p for pair in (pieces[r] for r in ROLES) for p in pair) or '"""' in pieces["generation"]:
        raise TemplateError('the chat template contains """, which a Modelfile cannot quote')


def stop_tokens(tokenizer, generation_config: dict) -> list[str]:
    """The end-of-turn strings: the eos token(s) of the generation config and the tokenizer that are special
    tokens (a plain text piece as a stop string would cut answers that contain it)."""
    ids = generation_config.get("eos_token_id")
    ids = ids if isinstance(ids, list) else [ids] if ids is not None else []
    special = {t.content for t in tokenizer.added_tokens_decoder.values() if t.special}
    tokens = [tokenizer.convert_ids_to_tokens(int(i)) for i in ids] + [tokenizer.eos_token]
    return list(dict.fromkeys(t for t in tokens if t and t in special))


def write_modelfile(out_dir: Path, gguf_file: str, tokenizer, generation_config: dict,
                    parameters: dict[str, Any], system: str | None = None) -> dict[str, Any]:
    """`out_dir/Modelfile` naming `gguf_file` (beside it); returns what it wrote (template checked)."""
    pieces = template_pieces(tokenizer)
    check_template(tokenizer, pieces)
    system = system or pieces["default_system"]
    stops = stop_tokens(tokenizer, generation_config)
    lines = [f"# Ollama: ollama create <name> -f {MODELFILE}   (written by PEFT Studio beside {gguf_file})",
             f"FROM ./{gguf_file}", f'TEMPLATE """{go_template(pieces)}"""']
    if system:
        lines.append(f'SYSTEM """{system}"""')
    lines += [f'PARAMETER stop "{s}"' for s in stops]
    lines += [f"PARAMETER {k} {v}" for k, v in parameters.items()]
    (out_dir / MODELFILE).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {"file": MODELFILE, "from": gguf_file, "stop": stops, "system": system, "parameters": parameters,
            "template_checked": "Go TEMPLATE renders the sample conversation exactly as the Jinja chat template"}
