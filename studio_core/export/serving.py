"""Is the merged folder what vLLM and TGI load? Checked by loading it the way they do, with transformers.

Both read a Hugging Face folder: `config.json` with an `architectures` entry that transformers itself implements
(no `auto_map`: no custom code, `trust_remote_code` stays off), weights as safetensors only (no pickle), the
tokenizer (`tokenizer.json` + `tokenizer_config.json`, a chat template for their chat endpoints) and
`generation_config.json` (their default stop tokens and sampling). The check lists every problem at once, then
loads config, tokenizer and model with `trust_remote_code=False, use_safetensors=True` and requires that no
weight was missing or left unused. vLLM itself is not installed on any machine here, so it is not run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from studio_core.errors import StudioError

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


class ServingFolderError(StudioError):
    """The merged folder is not loadable as a serving engine loads it; the message lists why."""


def folder_problems(folder: Path) -> list[str]:
    """What keeps `folder` from loading in vLLM/TGI, by file; empty when nothing does."""
    import transformers

    problems = []
    config_path = folder / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else None
    if config is None:
        return [f"{config_path}: missing"]
    architectures = config.get("architectures") or []
    if not architectures:
        problems.append("config.json: no 'architectures' entry (vLLM picks the model class from it)")
    problems += [f"config.json: architecture {a} is not in transformers {transformers.__version__}"
                 for a in architectures if not hasattr(transformers, a)]
    if config.get("auto_map"):
        problems.append("config.json: 'auto_map' asks for custom code (trust_remote_code); serve a stock architecture")
    if config.get("quantization_config"):
        problems.append("config.json: a quantization_config; the merged model should be plain weights")
    if not list(folder.glob("*.safetensors")):
        problems.append("no *.safetensors weights")
    problems += [f"{p.name}: pickled weights; keep safetensors only" for p in sorted(folder.iterdir())
                 if p.suffix in PICKLE_SUFFIXES]
    problems += [f"{name}: missing" for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json")
                 if not (folder / name).is_file()]
    return problems


def check_serving_folder(folder: Path) -> dict[str, Any]:
    """Raise ServingFolderError listing every problem; else load it as vLLM/TGI do and report what loaded."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    problems = folder_problems(folder)
    if problems:
        raise ServingFolderError(f"{folder} is not loadable as vLLM/TGI load a model:\n" +
                                 "\n".join(f"  - {p}" for p in problems))
    config = AutoConfig.from_pretrained(str(folder), trust_remote_code=False)
    tokenizer = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=False)
    generation = GenerationConfig.from_pretrained(str(folder))
    model, info = AutoModelForCausalLM.from_pretrained(str(folder), trust_remote_code=False, use_safetensors=True,
                                                       dtype=torch.float32, output_loading_info=True)
    left = {k: sorted(v) for k, v in info.items() if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v}
    if left:
        raise ServingFolderError(f"{folder}: weights did not load cleanly: {json.dumps(left)[:500]}")
    return {"architecture": config.architectures[0], "model_class": type(model).__name__,
            "tokenizer": type(tokenizer).__name__, "chat_template": bool(tokenizer.chat_template),
            "eos_token_id": generation.eos_token_id, "weights": sorted(p.name for p in folder.glob("*.safetensors")),
            "loaded_as": "transformers, trust_remote_code=False, use_safetensors=True (as vLLM and TGI read it)",
            "vllm": "not run: vLLM is not installed on any machine of this project"}
