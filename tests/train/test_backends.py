"""studio_core.train.backends: unsloth only for LoRA/QLoRA where it is usable, and every fallback says why."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import pytest

from studio_core import catalog
from studio_core.errors import ConfigError, MissingBackendError
from studio_core.train.backends import STANDARD, UNSLOTH, BackendChoice, choose_backend, load_with_unsloth

INSTALL = "pip install 'peft-studio[unsloth]'"
NO_GPU = "no CUDA GPU usable: torch 2.13.0+cpu is a CPU-only build"


def _fake_catalog(monkeypatch: pytest.MonkeyPatch, *, usable: bool, installed: bool = True, cuda: bool = True,
                  unsloth_reason: str | None = None) -> None:
    """The catalog as it would answer on a machine with or without unsloth and a GPU."""
    reason = unsloth_reason or ("installed" if usable else "installed but needs a CUDA GPU (none is visible)")
    if not installed:
        reason = catalog.NOT_INSTALLED
    statuses = {
        "unsloth": catalog.Backend("unsloth", usable, "2026.1.4" if installed else None, reason, INSTALL),
        "cuda": catalog.Backend("cuda", cuda, "13.0" if cuda else None, "1 GPU(s)" if cuda else NO_GPU, "pip ..."),
    }
    monkeypatch.setattr(catalog, "is_unsloth_available", lambda: usable)
    monkeypatch.setattr(catalog, "backend_status", lambda name: statuses[name])


@pytest.mark.parametrize("method", ["lora", "qlora"])
def test_lora_and_qlora_use_unsloth_where_it_is_usable(monkeypatch: pytest.MonkeyPatch, method: str) -> None:
    _fake_catalog(monkeypatch, usable=True)
    choice = choose_backend(method)
    assert choice == BackendChoice(UNSLOTH, f"{method} on a CUDA GPU with unsloth 2026.1.4")
    assert choice.as_dict() == {"name": "unsloth", "reason": choice.reason}


@pytest.mark.parametrize("method", ["ia3", "prefix", "dora", "adalora", "prompt"])
def test_other_methods_fall_back_and_name_the_method(monkeypatch: pytest.MonkeyPatch, method: str) -> None:
    _fake_catalog(monkeypatch, usable=True)
    choice = choose_backend(method)
    assert choice.name == STANDARD
    assert choice.reason == (f"method '{method}' is not supported by unsloth (it supports lora, qlora); "
                             "using transformers+peft")


@pytest.mark.parametrize(("installed", "cuda", "expected"), [
    (False, False, f"unsloth is not installed (install with: {INSTALL}) and it needs a CUDA GPU: {NO_GPU}"),
    (False, True, f"unsloth is not installed; install it with: {INSTALL}"),
    (True, False, f"no CUDA GPU for unsloth (it runs on NVIDIA GPUs only): {NO_GPU}"),
], ids=["neither", "no-package", "no-gpu"])
def test_unavailable_unsloth_falls_back_and_says_why(monkeypatch: pytest.MonkeyPatch, installed: bool, cuda: bool,
                                                     expected: str) -> None:
    _fake_catalog(monkeypatch, usable=False, installed=installed, cuda=cuda)
    for method in ("lora", "qlora"):
        assert choose_backend(method) == BackendChoice(STANDARD, f"{expected}; using transformers+peft")


def test_a_broken_unsloth_install_is_reported_with_its_import_error(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_catalog(monkeypatch, usable=False, unsloth_reason="installed but fails to import: ImportError: triton")
    reason = choose_backend("lora").reason
    assert "fails to import: ImportError: triton" in reason and f"reinstall it with: {INSTALL}" in reason


def test_fp32_rules_unsloth_out(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_catalog(monkeypatch, usable=True)
    assert choose_backend("lora", precision="bf16").name == UNSLOTH
    choice = choose_backend("lora", precision="fp32")
    assert choice.name == STANDARD and "this run's precision is fp32" in choice.reason


def test_requesting_the_standard_path_always_gets_it(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_catalog(monkeypatch, usable=True)
    assert choose_backend("lora", "transformers+peft") == BackendChoice(STANDARD, "transformers+peft was requested")


def test_requesting_unsloth_where_it_cannot_run_is_an_error_not_a_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_catalog(monkeypatch, usable=False, installed=False, cuda=False)
    with pytest.raises(MissingBackendError, match=r"install it with: pip install 'peft-studio\[unsloth\]'"):
        choose_backend("lora", "unsloth")
    _fake_catalog(monkeypatch, usable=True)
    assert choose_backend("qlora", "unsloth").name == UNSLOTH
    with pytest.raises(ConfigError, match="training.backend: method 'ia3' is not supported by unsloth"):
        choose_backend("ia3", "unsloth")
    with pytest.raises(ConfigError, match="unknown backend 'fast'"):
        choose_backend("lora", "fast")  # type: ignore[arg-type]


@pytest.mark.skipif(catalog.is_unsloth_available(), reason="checks a machine without unsloth")
def test_on_this_machine_lora_falls_back_with_the_real_reason() -> None:
    choice = choose_backend("lora")
    assert choice.name == STANDARD and "using transformers+peft" in choice.reason
    assert "not installed" in choice.reason or "no CUDA GPU" in choice.reason
    with pytest.raises(MissingBackendError, match="unsloth is not available"):
        load_with_unsloth("unused", load_in_4bit=False, max_seq_length=64, dtype="bf16", r=8, alpha=16,
                          dropout=0.0, target_modules=["q_proj"], seed=0, gradient_checkpointing=False)


@pytest.fixture
def fake_unsloth(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict]]:
    """A stand-in `unsloth` module whose FastLanguageModel records the calls its documented API receives."""
    calls: list[tuple[str, dict]] = []

    def from_pretrained(**kwargs):
        calls.append(("from_pretrained", kwargs))
        return "base-model", "tokenizer"

    def get_peft_model(model, **kwargs):
        calls.append(("get_peft_model", {"model": model, **kwargs}))
        return "peft-model"

    fast = SimpleNamespace(from_pretrained=from_pretrained, get_peft_model=get_peft_model)
    _fake_catalog(monkeypatch, usable=True)
    monkeypatch.setitem(sys.modules, "unsloth", SimpleNamespace(FastLanguageModel=fast))
    return calls


@pytest.mark.parametrize(("checkpointing", "expected"), [(True, "unsloth"), (False, False)])
def test_load_with_unsloth_passes_the_run_settings(fake_unsloth, tmp_path, checkpointing, expected) -> None:
    import torch

    model, tokenizer = load_with_unsloth(tmp_path, load_in_4bit=True, max_seq_length=512, dtype="bf16", r=8,
                                         alpha=16, dropout=0.05, target_modules=("q_proj", "v_proj"), seed=7,
                                         gradient_checkpointing=checkpointing)
    assert (model, tokenizer) == ("peft-model", "tokenizer")
    assert fake_unsloth == [
        ("from_pretrained", {"model_name": str(tmp_path.resolve()), "max_seq_length": 512, "dtype": torch.bfloat16,
                             "load_in_4bit": True}),
        ("get_peft_model", {"model": "base-model", "r": 8, "lora_alpha": 16, "lora_dropout": 0.05,
                            "target_modules": ["q_proj", "v_proj"], "bias": "none",
                            "use_gradient_checkpointing": expected, "random_state": 7}),
    ]


def test_load_with_unsloth_refuses_fp32_with_the_fix(fake_unsloth) -> None:
    with pytest.raises(ConfigError, match="training.precision: unsloth trains in bf16 or fp16, not fp32"):
        load_with_unsloth("m", load_in_4bit=False, max_seq_length=64, dtype="fp32", r=8, alpha=16, dropout=0.0,
                          target_modules=["q_proj"], seed=0, gradient_checkpointing=False)
    assert fake_unsloth == []  # refused before loading anything
