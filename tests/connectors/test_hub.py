"""The Hub model registry with the real `huggingface_hub` client against `hub_standin.StandinHub`: a local HTTP
server standing in for the Hugging Face Hub (which this machine cannot reach), answering in the Hub API's shape
with hand-written answers, and serving a real tiny Llama's files. The cache listing runs on the cache that
huggingface_hub itself filled from it."""

from __future__ import annotations

import json
import sys
import time

import pytest

from studio_core.connectors import hub
from studio_core.errors import ModelError
from studio_core.models.resolve import resolve_model
from studio_core.models.tiny import ensure_tiny_random
from studio_core.runs import model_cache_dir
from tests.connectors.hub_standin import StandinHub, other_repos, tiny_llama_repo


def online(monkeypatch, url: str) -> None:
    """Undo the suite's HF_HUB_OFFLINE=1 (conftest) for this test, and point the client at `url`."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(sys.modules["huggingface_hub.constants"], "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_ENDPOINT", url)


@pytest.fixture
def standin(model_cache, tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "user-hf-cache"))
    with StandinHub([tiny_llama_repo(ensure_tiny_random("llama", model_cache)), *other_repos()]) as server:
        online(monkeypatch, server.url)
        yield server


def test_search_by_text_task_library_and_sort_and_popular_per_task(standin, studio_env):
    found = hub.search_models("llama", home=studio_env).data
    assert [m["id"] for m in found] == ["standin-org/tiny-llama", "standin-org/custom-code-llama"]  # by downloads
    assert found[0]["downloads"] == 5000 and found[0]["task"] == "text-generation"
    by_likes = hub.search_models("llama", sort="likes", home=studio_env).data
    assert [m["id"] for m in by_likes] == ["standin-org/custom-code-llama", "standin-org/tiny-llama"]
    classify = hub.search_models("", task="text-classification", library="transformers", home=studio_env).data
    assert [m["id"] for m in classify] == ["standin-org/tiny-bert-sentiment"]
    popular = hub.popular_models("text-generation", limit=2, home=studio_env).data
    assert [m["id"] for m in popular] == ["standin-org/pickle-only-gpt2", "standin-org/tiny-llama"]
    sent = [q for q in standin.requests if q[1] == "/api/models"]
    assert len(sent) == 4
    with pytest.raises(ModelError, match="sort 'stars'"):
        hub.search_models("x", sort="stars", home=studio_env)


def test_answers_are_cached_in_the_home_and_refreshed_after_the_interval(standin, studio_env):
    first = hub.search_models("llama", home=studio_env)
    again = hub.search_models("llama", home=studio_env)
    assert not first.from_cache and again.from_cache and again.data == first.data
    assert len([q for q in standin.requests if q[1] == "/api/models"]) == 1
    assert list((studio_env / hub.METADATA).glob("*.json"))
    hub.search_models("llama", home=studio_env, max_age_s=0)  # older than the interval: asked again
    assert len([q for q in standin.requests if q[1] == "/api/models"]) == 2


def test_details_say_what_the_studio_can_use_and_whether_it_fits(standin, studio_env):
    tiny = hub.model_details("standin-org/tiny-llama", home=studio_env).data
    assert tiny.usable and not tiny.not_usable
    assert tiny.architectures == ["LlamaForCausalLM"] and tiny.model_type == "llama" and tiny.known_architecture
    assert "q_proj" in tiny.default_targets and tiny.licence == "apache-2.0" and tiny.gated is False
    assert tiny.parameters > 0 and tiny.safetensors_bytes == next(f["size"] for f in tiny.files
                                                                  if f["name"] == "model.safetensors")
    assert tiny.fit["known"] and tiny.fit["fits"] is True and tiny.fit["method"] == "lora"
    assert tiny.fit["estimate_gib"] < tiny.fit["budget_gib"]

    pickle = hub.model_details("standin-org/pickle-only-gpt2", home=studio_env, with_fit=False).data
    assert not pickle.usable and "pytorch_model.bin" in pickle.not_usable[0] and "pickle" in pickle.not_usable[0]
    custom = hub.model_details("standin-org/custom-code-llama", home=studio_env, with_fit=False).data
    assert not custom.usable and any("trust_remote_code" in r for r in custom.not_usable)
    assert custom.gated == "manual"
    with pytest.raises(ModelError, match="no such model"):
        hub.model_details("standin-org/missing", home=studio_env)


def test_pull_fetches_only_safetensors_config_and_tokenizer_then_the_cache_lists_it(standin, studio_env):
    seen = []
    folder = hub.pull_model("standin-org/tiny-llama", home=studio_env, progress=lambda *a: seen.append(a))
    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= names
    assert "pytorch_model.bin" not in names and "README.md" not in names
    assert not [q for q in standin.requests if q[1].endswith(("pytorch_model.bin", "README.md"))]
    assert seen and seen[-1][1] > 0  # progress was reported

    cached = hub.cached_models(studio_env)  # scan_cache_dir on the cache huggingface_hub filled
    [entry] = [c for c in cached if c.repo_id == "standin-org/tiny-llama"]
    assert entry.ref == "hf:standin-org/tiny-llama" and entry.files == len(names) and entry.size_bytes > 0
    resolved = resolve_model("hf:standin-org/tiny-llama", model_cache_dir(studio_env))  # the run's own path
    assert resolved.model_type == "llama" and resolved.path == folder

    with pytest.raises(ModelError, match="cannot be used by the studio: no safetensors"):
        hub.pull_model("standin-org/pickle-only-gpt2", home=studio_env)


def test_offline_the_cache_is_listed_and_the_hub_is_said_unreachable(standin, studio_env, monkeypatch):
    hub.search_models("llama", home=studio_env)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    stale = hub.search_models("llama", home=studio_env, refresh=True)
    assert stale.from_cache and "HF_HUB_OFFLINE" in stale.offline and stale.data[0]["id"] == "standin-org/tiny-llama"
    with pytest.raises(hub.HubUnreachable, match="HF_HUB_OFFLINE"):
        hub.search_models("never asked", home=studio_env)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    standin.__exit__()  # the server goes away: no network
    with pytest.raises(hub.HubUnreachable, match="cannot be reached"):
        hub.search_models("bert", home=studio_env)
    started = time.monotonic()  # a page redrawn while offline is told at once, not after another try
    with pytest.raises(hub.HubUnreachable, match="cannot be reached"):
        hub.search_models("gpt", home=studio_env)
    assert time.monotonic() - started < 1.0


def test_cli_models_search_show_pull_and_cached(standin, studio_env, capsys):
    from studio_core.cli import main

    assert main(["models", "search", "llama", "--json"]) == 0
    assert [m["id"] for m in json.loads(capsys.readouterr().out)] == ["standin-org/tiny-llama",
                                                                      "standin-org/custom-code-llama"]
    assert main(["models", "show", "standin-org/custom-code-llama", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["usable"] is False and "trust_remote_code" in shown["not_usable"][0]
    assert main(["models", "pull", "standin-org/pickle-only-gpt2"]) == 2  # refused, naming why
    assert "no safetensors weights" in capsys.readouterr().err
    assert main(["models", "pull", "standin-org/tiny-llama"]) == 0
    assert "hf:standin-org/tiny-llama is in the model cache" in capsys.readouterr().out
    assert main(["models", "cached", "--json"]) == 0
    assert "hf:standin-org/tiny-llama" in [m["ref"] for m in json.loads(capsys.readouterr().out)]
