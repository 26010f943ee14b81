"""Pruning refuses, with the reason, the methods and targets where 2:4 cannot survive training and merge."""

import pytest

from studio_core.config import validate_config
from studio_core.errors import ConfigError


def problems(**sections):
    data = {"pruning": {"enabled": True, **sections.pop("pruning", {})}, **sections}
    with pytest.raises(ConfigError) as e:
        validate_config(data)
    return {p.field: p.message for p in e.value.problems}


@pytest.mark.parametrize(("method", "reason"), [
    ({"name": "pissa"}, "dense residual"), ({"name": "lora", "init": "olora"}, "dense residual"),
    ({"name": "prefix"}, "never merges"), ({"name": "prompt"}, "never merges"), ({"name": "ia3"}, "only lora"),
])
def test_methods_that_cannot_keep_two_four_are_refused(method, reason):
    found = problems(method=method)
    assert reason in found["pruning.enabled"]


def test_embeddings_norms_and_head_are_never_targets():
    found = problems(pruning={"targets": ["q_proj", "lm_head", "embed_tokens", "input_layernorm"]})
    assert "lm_head, embed_tokens, input_layernorm" in found["pruning.targets"]


def test_adapted_layers_must_be_pruned_too():
    found = problems(pruning={"targets": ["q_proj"]}, method={"name": "lora", "target_modules": ["q_proj", "v_proj"]})
    assert "v_proj" in found["pruning.targets"]


def test_lora_family_with_pruning_is_accepted():
    for name in ("lora", "dora", "rslora", "qlora"):
        assert validate_config({"pruning": {"enabled": True}, "method": {"name": name}}).pruning.method == "wanda"
