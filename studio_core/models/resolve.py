"""Resolve a model reference to a local safetensors folder, record its digests, and load it safely.

References: `embedded:<name>`, `tiny-random:<family>`, `hf:<org>/<name>` (Hub via huggingface_hub and
its cache) or a local Hugging Face folder. Only safetensors weights are ever loaded: pickle-based
weights (.bin/.pt/.pth/.ckpt/.pkl) can run arbitrary code when unpickled.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from studio_core.digest import sha256_files
from studio_core.errors import MissingBackendError, ModelError
from studio_core.models.embedded import SOURCE_RECORD, ensure_embedded
from studio_core.models.tiny import build_random_model, ensure_tiny_random, shrink_config

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
    "vocab.json", "merges.txt", "chat_template.jinja", "chat_template.json",
)
HUB_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja"]


@dataclass
class ResolvedModel:
    """A model reference resolved to a folder on disk, with what a reviewer needs to pin it."""

    ref: str
    kind: str  # embedded | tiny-random | hf | local
    path: Path
    model_type: str
    architectures: list[str]
    weight_sha256: dict[str, str]
    tokenizer_sha256: dict[str, str]
    source: dict[str, Any] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        return {
            "ref": self.ref, "kind": self.kind, "path": str(self.path), "model_type": self.model_type,
            "architectures": self.architectures, "weight_sha256": self.weight_sha256,
            "tokenizer_sha256": self.tokenizer_sha256, "source": self.source,
        }


def resolve_model(ref: str, cache: Path, revision: str | None = None) -> ResolvedModel:
    """Find (and if needed convert or download) the model `ref` names, check it and digest it."""
    kind, value = parse_ref(ref)
    if kind == "embedded":
        path = ensure_embedded(value, cache)
    elif kind == "tiny-random":
        path = ensure_tiny_random(value, cache)
    elif kind == "hf":
        path = _download_from_hub(value, cache, revision)
    else:
        path = Path(value).expanduser().resolve()
    return _describe_folder(ref, kind, path)


def resolve_in_home(model_cfg, home: str | Path | None = None) -> ResolvedModel:
    """`resolve_model` for a config's `model` section, outside a run: in the studio home's model cache."""
    from studio_core.runs import model_cache_dir, studio_home

    return resolve_model(model_cfg.ref, model_cache_dir(studio_home(home)), model_cfg.revision)


def load_empty_model(model: ResolvedModel):
    """The model's modules on the meta device: names, shapes and parameter counts, no weights allocated."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model.path))


def parse_ref(ref: str) -> tuple[str, str]:
    ref = ref.strip()
    for prefix in ("embedded", "tiny-random", "hf"):
        if ref.startswith(prefix + ":"):
            value = ref[len(prefix) + 1:]
            if not value:
                raise ModelError(f"model.ref '{ref}' names no model after '{prefix}:'")
            return prefix, value
    if ":" in ref.split("/")[0] and not Path(ref).exists():
        raise ModelError(
            f"model.ref '{ref}': unknown reference kind; use embedded:<name>, hf:<org>/<name>, "
            "tiny-random:<family> or a local folder path"
        )
    return "local", ref


def _download_from_hub(repo_id: str, cache: Path, revision: str | None) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    hub_cache = cache / "hub"
    try:  # the cache first: works offline for anything downloaded before
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=HUB_PATTERNS,
                                      cache_dir=hub_cache, local_files_only=True))
    except LocalEntryNotFoundError:  # not cached (yet): try the Hub below
        pass
    except HFValidationError as e:
        raise ModelError(f"model.ref 'hf:{repo_id}': not a Hub repo id ({e}); use hf:<org>/<name>") from e
    except OSError as e:  # a cache that cannot be read (permissions, disk): say so, rather than go online
        raise ModelError(f"model.ref 'hf:{repo_id}': cannot read the model cache {hub_cache} "
                         f"({type(e).__name__}: {e}); fix its permissions, or set PEFT_STUDIO_MODEL_CACHE "
                         "to a folder you can write") from e
    try:
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=HUB_PATTERNS,
                                      cache_dir=hub_cache))
    except Exception as e:  # noqa: BLE001 - network, auth, missing repo: all end in the same advice
        raise ModelError(
            f"model.ref 'hf:{repo_id}': could not get it from the Hugging Face Hub "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'no detail'}). Without network "
            "access, download the model on another machine and set model.ref to the local folder holding "
            "its config.json and *.safetensors files."
        ) from e


def _describe_folder(ref: str, kind: str, path: Path) -> ResolvedModel:
    if not path.exists():
        raise ModelError(f"model.ref '{ref}': folder not found: {path}")
    if not path.is_dir():
        raise ModelError(f"model.ref '{ref}': {path} is a file; point model.ref at the model's folder")
    config_path = path / "config.json"
    if not config_path.is_file():
        raise ModelError(f"model.ref '{ref}': {path} has no config.json, so it is not a Hugging Face model folder")
    weights = safetensors_weights(path, ref)
    config = json.loads(config_path.read_text(encoding="utf-8"))
    source_file = path / SOURCE_RECORD
    return ResolvedModel(
        ref=ref, kind=kind, path=path, model_type=config.get("model_type", "unknown"),
        architectures=config.get("architectures") or [],
        weight_sha256=sha256_files(weights, path),
        tokenizer_sha256=sha256_files([path / n for n in TOKENIZER_FILES if (path / n).is_file()], path),
        source=json.loads(source_file.read_text()) if source_file.is_file() else {},
    )


def safetensors_weights(path: Path, ref: str = "") -> list[Path]:
    """The folder's safetensors weight files; refuses a folder whose weights are pickle-based only."""
    weights = sorted(path.glob("*.safetensors"))
    if weights:
        return weights
    pickled = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickled:
        raise ModelError(
            f"model.ref '{ref or path}': {path} holds only pickle-based weights ({', '.join(pickled[:5])}). "
            "Pickle files can run arbitrary code when loaded, so PEFT Studio loads safetensors only. Convert "
            "them once in an environment you trust: AutoModelForCausalLM.from_pretrained(folder)"
            ".save_pretrained(new_folder, safe_serialization=True), then point model.ref at new_folder."
        )
    raise ModelError(f"model.ref '{ref or path}': {path} has no *.safetensors weight files")


def load_tokenizer(model: ResolvedModel):
    """The model's tokenizer, with a pad token (the EOS token where the model defines none)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model.path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not tokenizer.chat_template:
        raise ModelError(
            f"model.ref '{model.ref}': the tokenizer has no chat template, so conversations cannot be "
            "formatted; use an instruct/chat model or add chat_template to its tokenizer_config.json"
        )
    return tokenizer


def load_model(model: ResolvedModel, quantize_4bit: bool = False, compute_dtype: str = "fp32", dtype: str = "fp32"):
    """Load the weights (safetensors only) in `dtype` (fp32 or bf16); `quantize_4bit` is the QLoRA nf4 path
    (bitsandbytes), computing in `compute_dtype`."""
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"use_safetensors": True, "dtype": torch_dtype(dtype)}
    if quantize_4bit:
        kwargs.update(quantization_config=nf4_config(compute_dtype), device_map=_default_device())
    return AutoModelForCausalLM.from_pretrained(model.path, **kwargs)


def torch_dtype(name: str):
    """The torch dtype of a precision's name: fp32, bf16 or fp16."""
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[name]


def nf4_config(compute_dtype: str):
    """bitsandbytes nf4 with double quantization, computing in `compute_dtype` (fp32/bf16/fp16)."""
    from transformers import BitsAndBytesConfig

    from studio_core.catalog import is_bitsandbytes_available

    if not is_bitsandbytes_available():
        raise MissingBackendError("bitsandbytes", "pip install bitsandbytes", "QLoRA loads the base in 4-bit")
    return BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch_dtype(compute_dtype),
    )


def _default_device() -> str:
    from studio_core.catalog import is_cuda_available

    return "cuda:0" if is_cuda_available() else "cpu"


def load_simulation_model(model: ResolvedModel, vocab_size: int):
    """A tiny random model of the resolved model's architecture (same module names, 2 layers)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model.path)
    return build_random_model(shrink_config(config, vocab_size))
