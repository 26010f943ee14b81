"""GGUF for llama.cpp/Ollama: written from a tiny model, read back by transformers (an independent reader) with the
same logits and tokenizer; the Modelfile beside it; refusals that name what is refused."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from studio_core.errors import ConfigError
from studio_core.export.gguf import TOLERANCE, GGUFError, check_gguf, export_gguf
from studio_core.export.ollama import MODELFILE, render_like_go, template_pieces, write_modelfile
from studio_core.models.resolve import resolve_model


@pytest.fixture(scope="module")
def tiny_llama(model_cache):
    return resolve_model("tiny-random:llama", model_cache).path


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_gguf_loads_in_transformers_with_the_models_logits(model_cache, tmp_path, family):
    folder = resolve_model(f"tiny-random:{family}", model_cache).path
    files = export_gguf(folder, tmp_path, ["f32", "f16", "q8_0", "q4_0"])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f["file"] for f in files.values())
    reference = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    back = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=files["f32"]["file"], dtype=torch.float32)
    assert type(back) is type(reference)
    ids = torch.arange(3, 40).unsqueeze(0)
    with torch.no_grad():
        assert torch.allclose(back(ids).logits, reference(ids).logits, atol=1e-5)  # q/k permutation undone exactly
    report = check_gguf(folder, tmp_path, files)
    assert all(r["passed"] and r["tokenizer_matches"] for r in report["quants"].values())
    errors = {q: r["relative_error"] for q, r in report["quants"].items()}
    assert errors["f32"] < 1e-5 < errors["f16"] < errors["q8_0"] < errors["q4_0"] <= TOLERANCE["q4_0"]
    assert files["q4_0"]["bytes"] < files["q8_0"]["bytes"] < files["f16"]["bytes"] < files["f32"]["bytes"]


def test_a_gguf_that_differs_from_the_model_fails_the_check(tiny_llama, tmp_path):
    files = export_gguf(tiny_llama, tmp_path, ["q4_0"])
    with pytest.raises(GGUFError, match=r"q4_0: relative error .* \(tolerance 1e-06\)") as caught:
        check_gguf(tiny_llama, tmp_path, files, tolerance={"q4_0": 1e-6})
    assert caught.value.report["quants"]["q4_0"]["passed"] is False


def test_refused_architecture_names_itself(model_cache, tmp_path):
    folder = resolve_model("tiny-random:gpt2", model_cache).path
    with pytest.raises(GGUFError, match=r"this model is 'gpt2' \(GPT2LMHeadModel\), which is refused") as caught:
        export_gguf(folder, tmp_path, ["f16"])
    assert "supports llama, qwen2" in str(caught.value)


def test_unknown_quant_type_is_refused_naming_the_field(tiny_llama, tmp_path):
    with pytest.raises(ConfigError, match=r"compile.gguf_quants: \['q4_k'\]: choose from f32, f16"):
        export_gguf(tiny_llama, tmp_path, ["q8_0", "q4_k"])


def test_modelfile_names_the_gguf_and_the_chat_template(tiny_llama, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    generation = json.loads((tiny_llama / "generation_config.json").read_text())
    report = write_modelfile(tmp_path, "model-q8_0.gguf", tokenizer, generation, {"temperature": 0})
    text = (tmp_path / MODELFILE).read_text()
    assert "FROM ./model-q8_0.gguf\n" in text
    assert ('TEMPLATE """{{ range .Messages }}{{ if eq .Role "system" }}<|im_start|>system\n{{ .Content }}'
            '<|im_end|>\n{{ else if eq .Role "user" }}<|im_start|>user\n{{ .Content }}<|im_end|>\n') in text
    assert text.count('PARAMETER stop "') == 1 and 'PARAMETER stop "<|im_end|>"' in text  # not the byte "#" (id 2)
    assert "PARAMETER temperature 0" in text and report["stop"] == ["<|im_end|>"]
    conversation = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"},
                    {"role": "user", "content": "again"}]
    assert render_like_go(template_pieces(tokenizer), conversation) == tokenizer.apply_chat_template(
        conversation, tokenize=False, add_generation_prompt=True)


def test_a_template_ollama_cannot_render_the_same_is_refused(tiny_llama, tmp_path):
    from studio_core.export.ollama import TemplateError

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    tokenizer.chat_template = ("{% for m in messages %}[{{ loop.index }}] {{ m['content'] }}\n{% endfor %}"
                               "{% if add_generation_prompt %}>{% endif %}")  # numbers the turns
    with pytest.raises(TemplateError, match="not a per-message concatenation"):
        write_modelfile(tmp_path, "model-f16.gguf", tokenizer, {}, {})
    assert not (tmp_path / MODELFILE).exists()
