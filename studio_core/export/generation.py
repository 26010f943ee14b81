"""Step 10's engines that generate, built from the merged model: `onnx_kv` (ONNX Runtime GenAI) and `gguf`
(llama.cpp / Ollama), each checked against the merged model before it is reported as built.

Layout under `artifacts/engine/`: `onnx_kv-<precision>/` (genai_config.json, model.onnx + data, tokenizer) and
`gguf/` (model-<quant>.gguf, Modelfile). The report lists each engine with its files, digests and parity figures;
the package copies the folder, so the engines, their digests and parity travel with it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

GGUF_DIR = "gguf"
MODELFILE_PREFERENCE = ("q8_0", "f16", "bf16", "f32", "q5_1", "q5_0", "q4_1", "q4_0")


def onnx_kv_dir(precision: str) -> str:
    return f"onnx_kv-{precision}"


def build_engines(merged: Path, out_dir: Path, engines: list[str], onnx_kv_precision: str = "int8",
                  gguf_quants: tuple[str, ...] = ("f16", "q8_0"), pre_tokenizer: str = "default",
                  system_prompt: str | None = None) -> dict[str, Any]:
    """Build and check every engine in `engines` into `out_dir`; {engine: report}. A failed check raises."""
    report = {}
    for engine in engines:
        start = time.perf_counter()
        if engine == "onnx_kv":
            report[engine] = _onnx_kv(merged, out_dir, onnx_kv_precision)
        elif engine == "gguf":
            report[engine] = _gguf(merged, out_dir / GGUF_DIR, list(gguf_quants), pre_tokenizer, system_prompt)
        report[engine]["seconds"] = round(time.perf_counter() - start, 2)
    return report


def _onnx_kv(merged: Path, out_dir: Path, precision: str) -> dict[str, Any]:
    from studio_core.export.onnx_kv import build_onnx_kv, check_onnx_kv

    folder = out_dir / onnx_kv_dir(precision)
    built = build_onnx_kv(merged, folder, precision)
    return {**built, "parity": check_onnx_kv(merged, folder, precision)}


def _gguf(merged: Path, folder: Path, quants: list[str], pre_tokenizer: str, system_prompt: str | None
          ) -> dict[str, Any]:
    from transformers import AutoTokenizer

    from studio_core.export.gguf import check_gguf, export_gguf
    from studio_core.export.ollama import write_modelfile

    files = export_gguf(merged, folder, quants, pre_tokenizer)
    parity = check_gguf(merged, folder, files)
    chosen = next(q for q in MODELFILE_PREFERENCE if q in files)
    generation = merged / "generation_config.json"
    generation_config = json.loads(generation.read_text(encoding="utf-8")) if generation.is_file() else {}
    modelfile = write_modelfile(folder, files[chosen]["file"], AutoTokenizer.from_pretrained(str(merged)),
                                generation_config, {"temperature": 0, "num_ctx": 2048}, system_prompt)
    return {"engine": f"gguf-{_gguf_version()}", "folder": folder.name, "files": files,
            "pre_tokenizer": pre_tokenizer, "parity": parity, "modelfile": modelfile}


def _gguf_version() -> str:
    from importlib.metadata import version

    return version("gguf")


def pre_tokenizer_for(model_ref: str) -> str:
    """llama.cpp's `tokenizer.ggml.pre` for a base model: the embedded model's GGUF says it; else 'default'."""
    if not model_ref.startswith("embedded:"):
        return "default"
    import gguf

    from studio_core.models.embedded import embedded_model, gguf_path

    field = gguf.GGUFReader(gguf_path(embedded_model(model_ref.split(":", 1)[1]))).fields.get("tokenizer.ggml.pre")
    return field.contents() if field is not None else "default"
