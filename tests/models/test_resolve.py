"""Model Resolve: references, tiny random models, digests, safe-loading refusals and target modules."""

from __future__ import annotations

import hashlib
import shutil
import time
from pathlib import Path

import pytest

from studio_core.errors import ModelError
from studio_core.models.resolve import (
    ResolvedModel,
    load_model,
    load_simulation_model,
    load_tokenizer,
    parse_ref,
    resolve_model,
)
from studio_core.models.targets import (
    ARCHITECTURE_TARGETS,
    default_target_modules,
    linear_module_names,
    missing_targets,
    module_names_by_type,
)
from studio_core.models.tiny import TINY_FAMILIES, TINY_SIZE

LLAMA_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- parse_ref -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("embedded:smollm2-135m-instruct", ("embedded", "smollm2-135m-instruct")),
        ("tiny-random:llama", ("tiny-random", "llama")),
        ("hf:HuggingFaceTB/SmolLM2-135M-Instruct", ("hf", "HuggingFaceTB/SmolLM2-135M-Instruct")),
        ("  hf:org/name  ", ("hf", "org/name")),
        ("/models/my-llama", ("local", "/models/my-llama")),
        ("./relative/folder", ("local", "./relative/folder")),
        ("org/name:with-colon-later", ("local", "org/name:with-colon-later")),
    ],
)
def test_parse_ref_kinds(ref: str, expected: tuple[str, str]) -> None:
    assert parse_ref(ref) == expected


@pytest.mark.parametrize("ref", ["s3:bucket/model", "hub:org/name", "gguf:model.gguf"])
def test_parse_ref_refuses_unknown_prefixes_and_lists_the_valid_kinds(ref: str) -> None:
    with pytest.raises(ModelError) as excinfo:
        parse_ref(ref)
    message = str(excinfo.value)
    assert ref in message and "unknown reference kind" in message
    for kind in ("embedded:", "hf:", "tiny-random:", "local folder"):
        assert kind in message


@pytest.mark.parametrize("ref", ["embedded:", "tiny-random:", "hf:"])
def test_parse_ref_refuses_a_prefix_without_a_name(ref: str) -> None:
    with pytest.raises(ModelError, match="names no model"):
        parse_ref(ref)


# --- tiny random families ------------------------------------------------------------------------------


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_tiny_random_family_resolves_loads_and_targets_its_projections(family: str, model_cache: Path) -> None:
    resolved = resolve_model(f"tiny-random:{family}", model_cache)
    assert resolved.kind == "tiny-random"
    assert resolved.model_type == family
    assert resolved.path == model_cache / "tiny-random" / family
    assert list(resolved.weight_sha256) == ["model.safetensors"]
    assert "tokenizer.json" in resolved.tokenizer_sha256
    assert not any(p.suffix in (".bin", ".pt", ".pth") for p in resolved.path.iterdir())

    model = load_model(resolved)
    assert model.config.model_type == family
    assert model.config.num_hidden_layers == TINY_SIZE["num_hidden_layers"]
    assert model.config.hidden_size == TINY_SIZE["hidden_size"]
    # Every tiny family has all of its architecture's projections, so 'auto' picks exactly those.
    assert default_target_modules(model) == ARCHITECTURE_TARGETS[family]
    assert set(ARCHITECTURE_TARGETS[family]) <= set(linear_module_names(model))
    assert "lm_head" not in linear_module_names(model)

    tokenizer = load_tokenizer(resolved)
    assert tokenizer.pad_token is not None and tokenizer.chat_template
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "héllo"}], tokenize=True, return_dict=False)
    assert max(ids) < model.config.vocab_size


def test_tiny_random_llama_and_gpt2_default_targets(model_cache: Path) -> None:
    llama = load_model(resolve_model("tiny-random:llama", model_cache))
    gpt2 = load_model(resolve_model("tiny-random:gpt2", model_cache))
    assert default_target_modules(llama) == LLAMA_PROJECTIONS
    assert default_target_modules(gpt2) == ["c_attn", "c_proj", "c_fc"]


def test_digests_are_stable_and_are_the_files_sha256(model_cache: Path) -> None:
    first = resolve_model("tiny-random:llama", model_cache)
    second = resolve_model("tiny-random:llama", model_cache)
    assert first.weight_sha256 == second.weight_sha256
    assert first.tokenizer_sha256 == second.tokenizer_sha256
    assert first.weight_sha256 == {"model.safetensors": _sha256(first.path / "model.safetensors")}
    for name, digest in first.tokenizer_sha256.items():
        assert digest == _sha256(first.path / name)
    record = first.record()
    assert record["weight_sha256"] == first.weight_sha256 and record["kind"] == "tiny-random"


def test_tiny_random_build_is_deterministic(model_cache: Path, tmp_path: Path) -> None:
    """A fresh cache builds byte-identical weights: the seeded build is what makes digests pinnable."""
    shared = resolve_model("tiny-random:gpt2", model_cache)
    fresh = resolve_model("tiny-random:gpt2", tmp_path / "cache")
    assert fresh.path != shared.path
    assert fresh.weight_sha256 == shared.weight_sha256


def test_a_local_copy_resolves_as_local_with_the_same_digests(model_cache: Path, tmp_path: Path) -> None:
    tiny = resolve_model("tiny-random:llama", model_cache)
    copy = tmp_path / "my-llama"
    shutil.copytree(tiny.path, copy)
    local = resolve_model(str(copy), model_cache)
    assert local.kind == "local" and local.path == copy.resolve()
    assert local.weight_sha256 == tiny.weight_sha256
    assert local.model_type == "llama" and local.architectures == ["LlamaForCausalLM"]


def test_unknown_tiny_family_lists_the_valid_ones(model_cache: Path) -> None:
    with pytest.raises(ModelError) as excinfo:
        resolve_model("tiny-random:bert", model_cache)
    message = str(excinfo.value)
    assert "'bert'" in message
    for family in TINY_FAMILIES:
        assert f"tiny-random:{family}" in message
    assert not (model_cache / "tiny-random" / "bert").exists()


# --- refusals ------------------------------------------------------------------------------------------


def test_pickle_only_folder_is_refused(model_cache: Path, tmp_path: Path) -> None:
    tiny = resolve_model("tiny-random:llama", model_cache)
    folder = tmp_path / "pickled"
    folder.mkdir()
    shutil.copy(tiny.path / "config.json", folder / "config.json")
    (folder / "pytorch_model.bin").write_bytes(b"not really a pickle, and never opened")
    with pytest.raises(ModelError) as excinfo:
        resolve_model(str(folder), model_cache)
    message = str(excinfo.value)
    assert "pickle" in message.lower() and "safetensors" in message
    assert "pytorch_model.bin" in message
    assert "save_pretrained" in message  # says how to convert


def test_folder_without_weights_is_refused(model_cache: Path, tmp_path: Path) -> None:
    tiny = resolve_model("tiny-random:llama", model_cache)
    folder = tmp_path / "no-weights"
    folder.mkdir()
    shutil.copy(tiny.path / "config.json", folder / "config.json")
    with pytest.raises(ModelError, match=r"no \*\.safetensors weight files"):
        resolve_model(str(folder), model_cache)


def test_folder_without_config_is_refused(model_cache: Path, tmp_path: Path) -> None:
    tiny = resolve_model("tiny-random:llama", model_cache)
    folder = tmp_path / "no-config"
    folder.mkdir()
    shutil.copy(tiny.path / "model.safetensors", folder / "model.safetensors")
    with pytest.raises(ModelError) as excinfo:
        resolve_model(str(folder), model_cache)
    assert "config.json" in str(excinfo.value) and str(folder) in str(excinfo.value)


def test_missing_folder_is_refused_naming_the_path(model_cache: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "model"
    with pytest.raises(ModelError) as excinfo:
        resolve_model(str(missing), model_cache)
    assert "not found" in str(excinfo.value) and str(missing) in str(excinfo.value)


def test_a_file_instead_of_a_folder_is_refused(model_cache: Path, tmp_path: Path) -> None:
    file = tmp_path / "model.safetensors"
    file.write_bytes(b"")
    with pytest.raises(ModelError, match="is a file; point model.ref at the model's folder"):
        resolve_model(str(file), model_cache)


def test_hub_reference_offline_says_how_to_use_a_local_folder(model_cache: Path) -> None:
    start = time.monotonic()
    with pytest.raises(ModelError) as excinfo:
        resolve_model("hf:peft-studio-tests/no-such-model", model_cache)
    elapsed = time.monotonic() - start
    message = str(excinfo.value)
    assert "hf:peft-studio-tests/no-such-model" in message
    assert "set model.ref to the local folder" in message and "*.safetensors" in message
    assert elapsed < 10, f"an offline Hub miss took {elapsed:.1f} s"


# --- simulation model and target helpers ---------------------------------------------------------------


def _config_folder(tmp_path: Path, config) -> ResolvedModel:
    folder = tmp_path / config.model_type
    config.save_pretrained(folder)
    return ResolvedModel(ref=str(folder), kind="local", path=folder, model_type=config.model_type,
                         architectures=[], weight_sha256={}, tokenizer_sha256={})


def _full_size_module_names(config) -> dict[str, list[str]]:
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):  # the real architecture's module tree, without allocating its weights
        return module_names_by_type(AutoModelForCausalLM.from_config(config))


@pytest.mark.parametrize("model_type", ["llama", "qwen2", "phi3", "gpt2"])
def test_simulation_model_keeps_module_names_at_tiny_size(model_type: str, tmp_path: Path) -> None:
    from transformers import AutoConfig

    real_sizes = {"llama": {"hidden_size": 576, "num_hidden_layers": 30, "intermediate_size": 1536,
                            "num_attention_heads": 9, "num_key_value_heads": 3},
                  "qwen2": {"hidden_size": 896, "num_hidden_layers": 24, "intermediate_size": 4864,
                            "num_attention_heads": 14, "num_key_value_heads": 2},
                  "phi3": {"hidden_size": 512, "num_hidden_layers": 6, "intermediate_size": 1024,
                           "num_attention_heads": 8},
                  "gpt2": {"n_embd": 768, "n_layer": 12, "n_head": 12}}[model_type]
    real = AutoConfig.for_model(model_type, vocab_size=32064, **real_sizes)
    resolved = _config_folder(tmp_path, real)

    sim = load_simulation_model(resolved, vocab_size=300)
    assert sim.config.model_type == model_type
    assert sim.config.num_hidden_layers == 2 and sim.config.hidden_size == 64
    assert sim.get_input_embeddings().num_embeddings == 300
    assert module_names_by_type(sim) == _full_size_module_names(real)
    assert default_target_modules(sim) == ARCHITECTURE_TARGETS[model_type]
    assert sum(p.numel() for p in sim.parameters()) < 1_000_000


def test_missing_targets_reports_only_names_absent_from_the_model(model_cache: Path) -> None:
    model = load_model(resolve_model("tiny-random:llama", model_cache))
    assert missing_targets(model, LLAMA_PROJECTIONS) == []
    assert missing_targets(model, ["q_proj", "nope_proj", "c_attn"]) == ["nope_proj", "c_attn"]
    # Non-leaf modules count too: peft matches any module whose name ends with the target.
    assert missing_targets(model, ["self_attn", "mlp"]) == []
    assert missing_targets(model, []) == []


def test_module_names_by_type_groups_leaf_modules(model_cache: Path) -> None:
    llama = module_names_by_type(load_model(resolve_model("tiny-random:llama", model_cache)))
    assert llama["Linear"] == sorted([*LLAMA_PROJECTIONS, "lm_head"])
    assert llama["Embedding"] == ["embed_tokens"]
    assert llama["LlamaRMSNorm"] == ["input_layernorm", "norm", "post_attention_layernorm"]
    assert "LlamaDecoderLayer" not in llama and "LlamaAttention" not in llama  # containers are not listed
    gpt2 = module_names_by_type(load_model(resolve_model("tiny-random:gpt2", model_cache)))
    assert gpt2["Conv1D"] == ["c_attn", "c_fc", "c_proj"]
    assert list(gpt2) == sorted(gpt2)


def test_an_unreadable_hub_cache_is_reported_not_hidden_behind_a_download(tmp_path, monkeypatch):
    import huggingface_hub

    calls = []

    def snapshot_download(repo_id, local_files_only=False, **kwargs):
        calls.append(local_files_only)
        raise PermissionError(13, "Permission denied", str(kwargs["cache_dir"]))

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    with pytest.raises(ModelError, match=r"cannot read the model cache .*hub \(PermissionError.*fix its permissions"):
        resolve_model("hf:org/name", tmp_path)
    assert calls == [True]  # the cache error stopped it: no download attempt on top
