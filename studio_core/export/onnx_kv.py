"""A KV-cache ONNX model that generates, built by ONNX Runtime GenAI's model builder and run by its runtime.

Why the builder and not our own export with past key/values: `onnxruntime-genai` installs here beside torch 2.13
and builds, fully offline from the merged folder, what its runtime needs to generate: the decoder with
GroupQueryAttention and a KV cache shared between steps, rotary caches, int4/int8 MatMulNBits weights
(`-p int4|int8 -e cpu`), `genai_config.json` (the search settings, eos ids) and the tokenizer. A hand export
would still need its own generation loop and cache management; the runtime's is written in C++.

The builder runs in a child process (`python -m onnxruntime_genai.models.builder`): it is chatty, holds the fp32
weights while quantizing, and reads `config.json` from its input folder, which is staged here with a
`quantization_config: null` left out (the builder 0.18 calls `.get` on it). `hf_token=false`: nothing is sent.

Parity is teacher-forced: the prompt's logits from the ONNX model (`get_output("logits")` after the prefill)
against the fp32 merged model's at every position: relative error and top-1 agreement.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from studio_core.digest import sha256_file
from studio_core.errors import MissingBackendError, StudioError

PRECISIONS = ("int4", "int8", "fp32")
# Smallest teacher-forced top-1 agreement with the fp32 merged model allowed, per precision (measured: see
# the notes of issue 17); the relative logit error is reported, not bounded: int4 moves logits by ~10%.
MIN_TOP1 = {"fp32": 0.99, "int8": 0.9, "int4": 0.7}
PARITY_PROMPTS = ("The capital of France is", "Clause: the supplier shall keep records for 7 years. Verdict:",
                  "<|im_start|>user\nIs this clause compliant?<|im_end|>\n<|im_start|>assistant\n")
BUILDER_TIMEOUT_S = 1800
BUILDER_OPTIONS: dict[str, dict[str, str]] = {}


class OnnxKVError(StudioError):
    """The builder failed, or its model does not agree with the merged model."""


def require_genai():
    try:
        import onnxruntime_genai as og
    except ImportError as e:
        raise MissingBackendError("onnxruntime-genai", "pip install 'onnxruntime-genai>=0.18,<0.19'",
                                  "compile.engines has 'onnx_kv'") from e
    return og


def build_onnx_kv(merged: Path, out_dir: Path, precision: str = "int4", options: dict[str, str] | None = None
                  ) -> dict[str, Any]:
    """Run the model builder on the merged folder into `out_dir`; returns files, digests and the builder's options.

    `options` are the builder's extra options (default BUILDER_OPTIONS[precision])."""
    og = require_genai()
    if precision not in PRECISIONS:
        raise OnnxKVError(f"compile.onnx_kv_precision '{precision}': choose one of {', '.join(PRECISIONS)}")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    with tempfile.TemporaryDirectory(prefix="onnx-kv-") as scratch:
        staged = _stage_input(merged, Path(scratch) / "input")
        options = {**BUILDER_OPTIONS.get(precision, {}), **(options or {}), "hf_token": "false"}
        command = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(staged), "-o", str(out_dir),
                   "-p", precision, "-e", "cpu", "-c", str(Path(scratch) / "cache"), "--extra_options",
                   *(f"{k}={v}" for k, v in options.items())]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=BUILDER_TIMEOUT_S,
                              check=False)
    log = (done.stdout + done.stderr)[-4000:]
    if done.returncode != 0 or not (out_dir / "genai_config.json").is_file():
        raise OnnxKVError(f"onnxruntime-genai's model builder failed on {merged} (exit {done.returncode}):\n{log}")
    files = {p.name: {"bytes": p.stat().st_size, "sha256": sha256_file(p)} for p in sorted(out_dir.iterdir())
             if p.is_file()}
    return {"engine": f"onnxruntime-genai-{og.__version__}-cpu", "precision": precision, "folder": out_dir.name,
            "files": files, "builder": f"python -m onnxruntime_genai.models.builder -p {precision} -e cpu",
            "builder_options": {k: v for k, v in options.items() if k != "hf_token"}}


def _stage_input(merged: Path, staged: Path) -> Path:
    """The merged folder as links, with a config.json the builder reads (no `quantization_config: null`)."""
    staged.mkdir(parents=True)
    for item in merged.iterdir():
        if item.name != "config.json":
            (staged / item.name).symlink_to(item.resolve())
    config = json.loads((merged / "config.json").read_text(encoding="utf-8"))
    if config.get("quantization_config", 0) is None:
        config.pop("quantization_config")
    (staged / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    return staged


def prompt_logits(model, ids: list[int]):
    """The ONNX model's logits at every prompt position (one prefill through the runtime's generator)."""
    import numpy as np

    og = require_genai()
    params = og.GeneratorParams(model)
    params.set_search_options(do_sample=False, max_length=len(ids) + 1)
    generator = og.Generator(model, params)
    generator.append_tokens(np.array(ids, dtype=np.int32))
    return np.asarray(generator.get_output("logits"))[0]


def check_onnx_kv(merged: Path, out_dir: Path, precision: str, min_top1: float | None = None) -> dict[str, Any]:
    """Teacher-forced agreement of the ONNX model with the fp32 merged model on fixed prompts; raises below
    `min_top1` (default MIN_TOP1[precision]) with the figures in `error.report`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from studio_core.train.merge import relative_error

    og = require_genai()
    tokenizer = AutoTokenizer.from_pretrained(str(merged))
    reference_model = AutoModelForCausalLM.from_pretrained(str(merged), dtype=torch.float32).eval()
    model = og.Model(str(out_dir))
    errors, agree, total = [], 0, 0
    for prompt in PARITY_PROMPTS:
        ids = tokenizer(prompt)["input_ids"]
        with torch.no_grad():
            reference = reference_model(torch.tensor([ids])).logits[0]
        logits = torch.from_numpy(prompt_logits(model, ids)).float()
        errors.append(relative_error(reference, logits))
        agree += int((reference.argmax(-1) == logits.argmax(-1)).sum())
        total += len(ids)
    bound = MIN_TOP1[precision] if min_top1 is None else min_top1
    report = {"relative_error": max(errors), "top1_agreement": agree / total, "min_top1": bound,
              "positions": total, "reference": "fp32 merged model (transformers), teacher-forced"}
    report["passed"] = report["top1_agreement"] >= bound
    if not report["passed"]:
        error = OnnxKVError(f"the {precision} ONNX model agrees with the merged model on {report['top1_agreement']:.3f}"
                            f" of next tokens, below {bound}; try compile.onnx_kv_precision='int8'")
        error.report = report
        raise error
    return report


def greedy_tokens(model, ids: list[int], max_new_tokens: int, on_token=None) -> list[int]:
    """Greedy continuation of `ids` through the runtime's generator (KV cache kept between steps); stops at the
    model's eos ids (genai_config.json). `on_token(token)` after each new token (the bench times with it)."""
    import numpy as np

    og = require_genai()
    params = og.GeneratorParams(model)
    params.set_search_options(do_sample=False, max_length=len(ids) + max_new_tokens)
    generator = og.Generator(model, params)
    generator.append_tokens(np.array(ids, dtype=np.int32))
    tokens: list[int] = []
    while not generator.is_done():
        generator.generate_next_token()
        tokens.append(int(generator.get_next_tokens()[0]))
        if on_token is not None:
            on_token(tokens[-1])
    return tokens
