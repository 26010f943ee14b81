"""GGUF for llama.cpp and Ollama: the merged model written through the `gguf` package, then read back and checked.

The writer is gguf's own (`GGUFWriter`), tensor names come from its per-architecture `TensorNameMap`, the special
tokens, merges and chat template from its `SpecialVocab`; the layout follows llama.cpp's `convert_hf_to_gguf.py`
(Llama's q/k rows permuted to GGML's rotary order). Quantization is gguf-py's numpy reference (`gguf.quantize`),
so only the types it can *write* are offered (it reads more: K-quants have no numpy quantizer).

Parity is measured with an independent reader: transformers loads the GGUF back (`gguf_file=`, de-quantized to
fp32) and its logits on fixed prompts are compared with the merged model's (relative error, top-1 agreement),
and its tokenizer, rebuilt from the GGUF vocabulary, must encode a probe text as the merged folder's does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from studio_core.digest import sha256_file
from studio_core.errors import ConfigError, Problem, StudioError

# The quant types gguf-py can write, as GGUF file types (`general.file_type`, llama.cpp's LLAMA_FTYPE_*).
QUANTS = {"f32": ("F32", 0), "f16": ("F16", 1), "bf16": ("BF16", 32), "q8_0": ("Q8_0", 7),
          "q5_1": ("Q5_1", 9), "q5_0": ("Q5_0", 8), "q4_1": ("Q4_1", 3), "q4_0": ("Q4_0", 2)}
# Bounds against the fp32 merged model, per type: largest relative logit error (max |a-b| / max |a|) and smallest
# top-1 agreement on PARITY_PROMPTS. Measured on SmolLM2-135M (f16 1.1e-3 / 1.00, q8_0 3.0e-2 / 0.97, q5_0 0.19 /
# 0.86, q4_0 0.60 / 0.72; its weights come from a Q4_1 file, so q4_1 re-quantizes losslessly there) and the tiny
# test Llama (q8_0 1.2e-2, q4_0 0.19 / 0.72; trained 2 steps at lr 0.05: q8_0 0.05 / 0.99). A layout error
# (a wrong q/k permutation) gives errors near 1 and chance top-1.
TOLERANCE = {"f32": 1e-5, "f16": 1e-2, "bf16": 0.1, "q8_0": 0.1, "q5_1": 0.3, "q5_0": 0.3, "q4_1": 0.75,
             "q4_0": 0.75}
MIN_TOP1 = {"f32": 1.0, "f16": 0.98, "bf16": 0.95, "q8_0": 0.9, "q5_1": 0.75, "q5_0": 0.75, "q4_1": 0.6,
            "q4_0": 0.6}
# llama.cpp keeps the embeddings and the output projection (often tied: one tensor) above 4-5 bits, as does the
# embedded SmolLM2 Q4_1 file (its token_embd is Q8_0): at 4 bits they alone cost SmolLM2 half its top-1 agreement.
EMBEDDING_TENSORS = ("token_embd.weight", "output.weight")
PROBE_TEXT = "Is this clause COMPLIANT? The supplier shall keep records for 7 years.\n"
PARITY_PROMPTS = ("The capital of France is", "Clause: payment within 30 days. Verdict:", PROBE_TEXT)


@dataclass(frozen=True)
class Architecture:
    """How one transformers architecture maps onto a llama.cpp one."""

    hf_class: str
    gguf_arch: str  # llama.cpp's architecture name (gguf.MODEL_ARCH_NAMES)
    permute_qk: bool  # Llama-style rotary rows: llama.cpp wants q/k in its own interleaved order


ARCHITECTURES = {
    "llama": Architecture("LlamaForCausalLM", "llama", permute_qk=True),
    "qwen2": Architecture("Qwen2ForCausalLM", "qwen2", permute_qk=False),
}


class GGUFError(StudioError):
    """The GGUF could not be written, or it does not read back as the model it was written from."""


def supported_architectures() -> list[str]:
    """The transformers model types this exporter writes (others are refused by name)."""
    return sorted(ARCHITECTURES)


def check_quants(quants: list[str]) -> None:
    """Every name in `quants` must be a type gguf-py writes; all unknown ones are reported at once."""
    bad = [q for q in quants if q not in QUANTS]
    if bad or not quants:
        raise ConfigError([Problem("compile.gguf_quants", f"{bad or 'nothing'}: choose from {', '.join(QUANTS)} "
                                   "(K-quants such as q4_k: run llama.cpp's llama-quantize on the f16 file)")])


def architecture_of(config: dict[str, Any], folder: Path) -> Architecture:
    model_type = config.get("model_type", "?")
    if model_type not in ARCHITECTURES:
        raise GGUFError(f"{folder}: GGUF export supports {', '.join(supported_architectures())}; this model is "
                        f"'{model_type}' ({', '.join(config.get('architectures') or ['?'])}), which is refused; "
                        "remove 'gguf' from compile.engines")
    if config.get("rope_parameters", {}).get("rope_type", "default") != "default" or config.get("rope_scaling"):
        raise GGUFError(f"{folder}: rope scaling {config.get('rope_parameters') or config.get('rope_scaling')} is "
                        "not written by this exporter; remove 'gguf' from compile.engines")
    return ARCHITECTURES[model_type]


def export_gguf(merged: Path, out_dir: Path, quants: list[str], pre_tokenizer: str = "default") -> dict[str, Any]:
    """One GGUF per quant type from the merged folder into `out_dir`; returns {quant: {file, bytes, sha256}}.

    `pre_tokenizer` is llama.cpp's `tokenizer.ggml.pre` (how it splits text before BPE); transformers ignores it.
    """
    check_quants(quants)
    config = json.loads((merged / "config.json").read_text(encoding="utf-8"))
    arch = architecture_of(config, merged)
    tensors = _load_state(merged)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {}
    for quant in quants:
        path = out_dir / f"model-{quant}.gguf"
        write_gguf(path, merged, config, arch, tensors, quant, pre_tokenizer)
        files[quant] = {"file": path.name, "bytes": path.stat().st_size, "sha256": sha256_file(path)}
    return files


def _load_state(folder: Path) -> dict[str, Any]:
    from safetensors.numpy import load_file

    state = {}
    for file in sorted(folder.glob("*.safetensors")):
        state.update({k: v.astype("float32") for k, v in load_file(str(file)).items()})
    if not state:
        raise GGUFError(f"{folder}: no *.safetensors weights to write")
    return state


def write_gguf(path: Path, folder: Path, config: dict, arch: Architecture, tensors: dict, quant: str,
               pre_tokenizer: str) -> None:
    """One GGUF file: hyper-parameters, vocabulary and tensors in llama.cpp's names and layout."""
    import gguf

    writer = gguf.GGUFWriter(str(path), arch.gguf_arch)
    _write_metadata(writer, config, folder.name, QUANTS[quant][1])
    _write_vocab(writer, folder, config, pre_tokenizer)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH[arch.gguf_arch.upper()], config["num_hidden_layers"])
    tied = config.get("tie_word_embeddings", False)
    for name, array in tensors.items():
        if tied and name == "lm_head.weight":
            continue  # GGUF ties by leaving `output.weight` out
        target = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if target is None:
            raise GGUFError(f"{folder}: tensor {name} has no {arch.gguf_arch} GGUF name; this model's layout is not "
                            "supported by the GGUF export")
        if arch.permute_qk and name.endswith(("q_proj.weight", "k_proj.weight")):
            heads = config["num_attention_heads"] if "q_proj" in name else config.get("num_key_value_heads") or \
                config["num_attention_heads"]
            array = _permute(array, heads)
        data, raw_type = _encode(array, quant if quant in ("f32", "f16", "bf16", "q8_0") or target not in
                                 EMBEDDING_TENSORS else "q8_0")
        writer.add_tensor(target, data, raw_dtype=raw_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _permute(weights, heads: int):
    """HF's rotary halves to GGML's interleaved pairs (llama.cpp convert_hf_to_gguf.LlamaModel.permute)."""
    return (weights.reshape(heads, 2, weights.shape[0] // heads // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def _encode(array, quant: str):
    """(data, raw dtype) of one tensor: 1-D tensors and rows not a whole number of blocks stay f32, as in
    llama.cpp; the rest in the quant type."""
    import gguf
    import numpy as np

    qtype = gguf.GGMLQuantizationType[QUANTS[quant][0]]
    if quant == "f32" or array.ndim < 2:
        return np.ascontiguousarray(array, dtype=np.float32), None
    if quant == "f16":
        return np.ascontiguousarray(array, dtype=np.float16), None
    block = gguf.GGML_QUANT_SIZES[qtype][0]
    if array.shape[-1] % block:
        return np.ascontiguousarray(array, dtype=np.float16), None
    return gguf.quantize(np.ascontiguousarray(array, dtype=np.float32), qtype), qtype


def _write_metadata(writer, config: dict, name: str, file_type: int) -> None:
    head_dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
    writer.add_name(name)
    writer.add_context_length(config.get("max_position_embeddings", 2048))
    writer.add_embedding_length(config["hidden_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(config["num_attention_heads"])
    writer.add_head_count_kv(config.get("num_key_value_heads") or config["num_attention_heads"])
    writer.add_rope_dimension_count(head_dim)
    rope = config.get("rope_parameters") or {}
    writer.add_rope_freq_base(float(rope.get("rope_theta", config.get("rope_theta", 10000.0))))
    writer.add_layer_norm_rms_eps(float(config["rms_norm_eps"]))
    writer.add_vocab_size(config["vocab_size"])
    writer.add_file_type(file_type)
    writer.add_quantization_version(2)


def _write_vocab(writer, folder: Path, config: dict, pre_tokenizer: str) -> None:
    """BPE vocabulary as llama.cpp's "gpt2" tokenizer model, as convert_hf_to_gguf's get_vocab_base does."""
    import gguf
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    if not tokenizer.is_fast or json.loads(tokenizer.backend_tokenizer.to_str())["model"]["type"] != "BPE":
        raise GGUFError(f"{folder}: only byte-level BPE tokenizers are written to GGUF (this one is "
                        f"{type(tokenizer).__name__}); remove 'gguf' from compile.engines")
    by_id = {i: t for t, i in tokenizer.get_vocab().items()}
    added = {i: t for i, t in tokenizer.added_tokens_decoder.items()}
    tokens, types = [], []
    for i in range(config["vocab_size"]):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif i in added:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.CONTROL if added[i].special else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.NORMAL)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre_tokenizer)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    special = gguf.SpecialVocab(folder, load_merges=True, n_vocab=len(tokens))
    if special.chat_template is None and tokenizer.chat_template:
        special.chat_template = tokenizer.chat_template  # chat_template.jinja beside the tokenizer
    if not special.merges:  # a byte-level vocabulary without merges: readers derive none from equal scores
        special.load_merges = False
        writer.add_token_scores([0.0] * len(tokens))
    special.add_to_gguf(writer, quiet=True)


# Parity --------------------------------------------------------------------------------------------------------


def check_gguf(merged: Path, out_dir: Path, files: dict[str, dict], tolerance: dict[str, float] | None = None
               ) -> dict[str, Any]:
    """Each GGUF loaded back by transformers against the merged model: logits, top-1 and the tokenizer.

    Raises GGUFError (its `report` attribute holds every figure) when any type is above its tolerance.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from studio_core.train.merge import relative_error

    tolerance = {**TOLERANCE, **(tolerance or {})}
    tokenizer = AutoTokenizer.from_pretrained(str(merged))
    reference_model = AutoModelForCausalLM.from_pretrained(str(merged), dtype=torch.float32).eval()
    batch = [torch.tensor([tokenizer(p)["input_ids"]]) for p in PARITY_PROMPTS]
    with torch.no_grad():
        reference = [reference_model(ids).logits for ids in batch]
    report: dict[str, Any] = {"prompts": len(batch), "reader": "transformers (gguf_file=)", "quants": {}}
    for quant, entry in files.items():
        model = AutoModelForCausalLM.from_pretrained(str(out_dir), gguf_file=entry["file"], dtype=torch.float32)
        with torch.no_grad():
            logits = [model.eval()(ids).logits for ids in batch]
        error = max(relative_error(r, c) for r, c in zip(reference, logits))
        top1 = torch.cat([(r.argmax(-1) == c.argmax(-1)).flatten() for r, c in zip(reference, logits)])
        gguf_tokenizer = AutoTokenizer.from_pretrained(str(out_dir), gguf_file=entry["file"])
        same_tokens = gguf_tokenizer(PROBE_TEXT)["input_ids"] == tokenizer(PROBE_TEXT)["input_ids"]
        agreement = float(top1.float().mean())
        report["quants"][quant] = {"relative_error": error, "tolerance": tolerance[quant], "top1_agreement": agreement,
                                   "min_top1": MIN_TOP1[quant], "tokenizer_matches": same_tokens,
                                   "passed": error <= tolerance[quant] and agreement >= MIN_TOP1[quant] and same_tokens}
    failed = [q for q, r in report["quants"].items() if not r["passed"]]
    if failed:
        error = GGUFError("GGUF read back by transformers differs from the merged model: " + "; ".join(
            _failure(q, report["quants"][q]) for q in failed))
        error.report = report
        raise error
    return report


def _failure(quant: str, figures: dict[str, Any]) -> str:
    tokenizer = "matches" if figures["tokenizer_matches"] else "differs"
    return (f"{quant}: relative error {figures['relative_error']:.3g} (tolerance {figures['tolerance']:g}), top-1 "
            f"{figures['top1_agreement']:.3f} (at least {figures['min_top1']}), tokenizer {tokenizer}")
