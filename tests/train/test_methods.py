"""Every PEFT method through the registry: valid configs train, save and reload; invalid ones say what to change."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from studio_core.config import METHOD_IDS, RunConfig, validate_config
from studio_core.methods import method_config, switch_method
from studio_core.errors import ConfigError
from studio_core.models.targets import default_target_modules
from studio_core.models.tiny import _family_config, build_random_model
from studio_core.methods import BuildContext, METHODS
from studio_core.train.adapters import apply_method, count_parameters, fit_problems
from studio_core.train.presets import PRESET_IDS, apply_preset

FAMILIES = ("llama", "gpt2", "qwen2", "gpt_neox")
VOCAB = 300
_BASES: dict[str, object] = {}


def tiny_base(family: str):
    if family not in _BASES:
        _BASES[family] = build_random_model(_family_config(family, VOCAB))
    return copy.deepcopy(_BASES[family])


def preset_config(preset: str, method: str) -> RunConfig:
    """The preset's full method and training settings, then the method switched (keeping what it shares)."""
    data, _ = apply_preset(RunConfig().model_dump(mode="json"), preset)
    data["method"] = switch_method(data["method"], method)
    data["export"] = {"enabled": False}
    data["compile"] = {"enabled": False}
    return validate_config(data)


def build(config: RunConfig, family: str):
    base = tiny_base(family)
    section = config.method
    targets = default_target_modules(base, section.name) if METHODS[section.name].targeted else []
    return base, section, targets


def one_step(model, lr: float) -> tuple[float, float]:
    torch.manual_seed(0)
    ids = torch.randint(0, VOCAB, (2, 12))
    params = [p for p in model.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in params]
    optimizer = torch.optim.AdamW(params, lr=lr)
    model.train()
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    optimizer.step()
    changed = max(float((p.detach() - b).abs().max()) for p, b in zip(params, before))
    return float(loss), changed


@settings(max_examples=120, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(method=st.sampled_from([m for m in METHOD_IDS if m != "qlora"]), preset=st.sampled_from(PRESET_IDS),
       family=st.sampled_from(FAMILIES))
def test_every_method_and_preset_builds_a_valid_config_that_trains_and_reloads_identically(method, preset, family,
                                                                                          tmp_path_factory):
    from peft import PeftModel

    config = preset_config(preset, method)
    assert config.method.name == method
    base, section, targets = build(config, family)
    problems = fit_problems(base, section, targets)
    if problems:  # e.g. LoHa on GPT-2's Conv1D: refused before peft, naming the option and the alternatives
        with pytest.raises(ConfigError) as e:
            apply_method(base, section, targets, BuildContext(max_steps=config.training.max_steps))
        problem = e.value.problems[0]
        assert problem.field.startswith("method.") and any(w in problem.message for w in ("Use ", "divide", "butterfl"))
        return
    model = apply_method(base, section, targets, BuildContext(max_steps=config.training.max_steps))
    loss, changed = one_step(model, config.training.learning_rate)
    assert torch.isfinite(torch.tensor(loss)) and changed > 0, "the step did not move the adapter"
    model.eval()
    ids = torch.randint(0, VOCAB, (1, 10), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model(input_ids=ids).logits
    folder = tmp_path_factory.mktemp("adapter")
    model.save_pretrained(str(folder))
    if METHODS[method].rewrites_base:
        return  # saved converted against the original base: tests/train/test_method_runs.py checks those
    reloaded = PeftModel.from_pretrained(tiny_base(family), str(folder)).eval()
    with torch.no_grad():
        assert torch.allclose(reloaded(input_ids=ids).logits, expected, atol=1e-5)


@pytest.mark.parametrize("method", [m for m in METHOD_IDS if METHODS[m].under_1_percent])
@pytest.mark.parametrize("preset", PRESET_IDS)
def test_methods_that_promise_under_one_percent_keep_it_on_a_real_size_model(method, preset):
    """Counted on SmolLM2-135M's architecture at full size, built on the meta device (no weights allocated)."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = preset_config(preset, method)
    real = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                       num_attention_heads=9, num_key_value_heads=3, tie_word_embeddings=True)
    with torch.device("meta"):
        base = AutoModelForCausalLM.from_config(real)
    targets = default_target_modules(base, method) if METHODS[method].targeted else []
    model = apply_method(base, config.method, targets, BuildContext(max_steps=config.training.max_steps))
    trainable, total = count_parameters(model)
    assert trainable / total < 0.01, f"{method}: {trainable:,} of {total:,}"


@pytest.mark.parametrize("family,expected", [
    ("llama", ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]),
    ("gpt2", ["c_attn", "c_proj", "c_fc"]),
    ("gpt_neox", ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"]),
    ("phi3", ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"]),
])
def test_default_targets_follow_the_architecture(family, expected):
    assert default_target_modules(tiny_base(family)) == expected


@pytest.mark.parametrize("model_type,expected", [("bert", ["query", "value"]), ("roberta", ["query", "value"]),
                                                 ("t5", ["q", "v"])])
def test_encoder_architectures_get_their_attention_projections(model_type, expected):
    from transformers import AutoConfig, AutoModel

    config = AutoConfig.for_model(model_type)
    for key, value in {"hidden_size": 32, "d_model": 32, "num_hidden_layers": 1, "num_layers": 1,
                       "num_attention_heads": 2, "num_heads": 2, "intermediate_size": 64, "d_ff": 64,
                       "d_kv": 16}.items():
        if hasattr(config, key):
            setattr(config, key, value)
    assert default_target_modules(AutoModel.from_config(config)) == expected


def test_an_unknown_architecture_gets_every_linear_layer_but_the_head():
    class Odd(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.config = type("C", (), {"model_type": "odd"})()
            self.mixer = torch.nn.Linear(8, 8)
            self.ffn = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.Linear(16, 8))
            self.lm_head = torch.nn.Linear(8, 100)

    assert default_target_modules(Odd()) == ["0", "2", "mixer"]


def test_ia3_defaults_scale_keys_values_and_the_mlp_output():
    base = tiny_base("llama")
    targets = default_target_modules(base, "ia3")
    assert targets == ["k_proj", "v_proj", "down_proj"]
    model = apply_method(base, method_config("ia3"), targets)
    assert model.peft_config["default"].feedforward_modules == {"down_proj"}


@pytest.mark.parametrize("method", ["loha", "lokr", "oft", "boft"])
def test_methods_that_cannot_wrap_gpt2_conv1d_say_so_and_name_the_ones_that_can(method):
    base = tiny_base("gpt2")
    with pytest.raises(ConfigError) as e:
        apply_method(base, method_config(method), default_target_modules(base))
    problem = e.value.problems[0]
    assert problem.field == "method.name" and "c_attn (Conv1D)" in problem.message
    assert "lora" in problem.message.split("Use ")[1]


def test_oft_block_size_that_does_not_divide_the_features_names_the_modules():
    base = tiny_base("llama")  # hidden 64, intermediate 128
    with pytest.raises(ConfigError) as e:
        apply_method(base, method_config("oft", block_size=48), default_target_modules(base))
    assert e.value.problems[0].field == "method.block_size" and "q_proj (64)" in e.value.problems[0].message


@pytest.mark.parametrize("data,field,words", [
    ({"method": {"name": "lora", "init": "loftq"}}, "method.init", "needs method.name=qlora"),
    ({"method": {"name": "qlora", "init": "olora"}}, "method.init", "4-bit base"),
    ({"method": {"name": "adalora", "init_r": 4, "target_r": 8}}, "method.target_r", "set target_r <= init_r"),
    ({"method": {"name": "adalora", "warmup_fraction": 0.6, "final_fraction": 0.5}}, "method.final_fraction",
     "no step"),
    ({"method": {"name": "ia3", "target_modules": ["k_proj"], "feedforward_modules": ["down_proj"]}},
     "method.feedforward_modules", "subset"),
    ({"method": {"name": "prompt", "init": "text"}}, "method.init_text", "set init_text"),
    ({"method": {"name": "prefix"}, "export": {"enabled": True}}, "export.enabled", "no merged model"),
    ({"method": {"name": "ia3", "r": 8}}, "method.r", "not a parameter of method ia3"),
    ({"method": {"name": "dropout"}}, "method.name", "choose one of: lora, qlora"),
])
def test_invalid_combinations_name_the_option_and_the_fix(data, field, words):
    with pytest.raises(ConfigError) as e:
        validate_config(data)
    assert any(p.field == field and words in p.message for p in e.value.problems), e.value.problems


def test_switching_method_starts_from_its_defaults_and_keeps_shared_settings():
    data = RunConfig().model_dump(mode="json")["method"]
    data.update(r=64, target_modules=["q_proj"])
    assert switch_method(data, "dora")["r"] == 64  # same parameter class: all kept
    vera = switch_method(data, "vera")
    assert vera["r"] == 256 and vera["target_modules"] == ["q_proj"] and "alpha" not in vera
    assert "target_modules" not in switch_method(data, "prompt")


def test_the_registry_and_the_config_agree_on_every_method():
    assert tuple(METHODS) == METHOD_IDS == ("lora", "qlora", "dora", "rslora", "pissa", "adalora", "ia3", "loha",
                                            "lokr", "oft", "boft", "vera", "prefix", "prompt")
    assert [m for m in METHOD_IDS if not METHODS[m].mergeable] == ["prefix", "prompt"]
