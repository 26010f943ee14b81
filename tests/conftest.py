"""Shared fixtures: a fresh studio home per test, no network, and one model cache per test session.

The model cache is shared across the session so the embedded model (a ~25 s GGUF conversion) and the
tiny-random models are built once, not once per test.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# huggingface_hub reads HF_HUB_OFFLINE once, at import: set it before any test module imports it.
os.environ["HF_HUB_OFFLINE"] = "1"


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's model cache ($PEFT_STUDIO_MODEL_CACHE in every test)."""
    return tmp_path_factory.mktemp("model-cache")


@pytest.fixture(autouse=True)
def studio_env(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> Path:
    """A fresh studio home for each test, the shared model cache, and the Hugging Face Hub offline."""
    home = tmp_path_factory.mktemp("studio-home")
    monkeypatch.setenv("PEFT_STUDIO_HOME", str(home))
    monkeypatch.setenv("PEFT_STUDIO_MODEL_CACHE", str(model_cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    if "huggingface_hub.constants" in sys.modules:  # imported earlier, with whatever the env said then
        monkeypatch.setattr(sys.modules["huggingface_hub.constants"], "HF_HUB_OFFLINE", True)
    return home


@pytest.fixture(scope="session")
def embedded_model_dir(model_cache: Path) -> Path:
    """The embedded SmolLM2-135M-Instruct, converted to safetensors once per session."""
    from studio_core.models.embedded import ensure_embedded

    return ensure_embedded("smollm2-135m-instruct", model_cache)


TINY_COMPILED_RUN = {"simulate": True, "model": {"ref": "tiny-random:llama"}, "data": {"demo_rows": 100},
                     "preflight": {"enabled": False}, "evaluation": {"enabled": False},
                     "training": {"max_steps": 2, "eval_steps": 2, "learning_rate": 0.05},
                     "compile": {"enabled": True, "engines": ["onnx_kv", "gguf"], "onnx_kv_precision": "int8",
                                 "gguf_quants": ["f16", "q8_0"]},
                     "package": {"enabled": True}}


@pytest.fixture(scope="session")
def tiny_compiled_run(tmp_path_factory: pytest.TempPathFactory):
    """A simulated tiny Llama run: 2 training steps (lr 0.05, so tuned differs from base), then step 10's engines
    (onnx_kv at int8, GGUF f16 and q8_0 without step 9) and the package. Built once; chat, compile and package
    tests read it."""
    from studio_core import workflow
    from studio_core.config import validate_config

    return workflow.run(validate_config(TINY_COMPILED_RUN), tmp_path_factory.mktemp("tiny-run-home"))


@pytest.fixture
def step7_unavailable():
    """Every stage runs in this version; the refusal of one that cannot is tested on step 7 made unavailable (its
    `run` set to None in place, so every module holding the STAGES list sees it), restored afterwards."""
    from dataclasses import replace

    from studio_core.workflow import STAGES

    kept = STAGES[6]
    STAGES[6] = replace(kept, run=None)
    yield kept
    STAGES[6] = kept
