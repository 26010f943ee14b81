"""Step 9, Export ONNX: the merged model's logits as an ONNX graph, checked against PyTorch.

The graph is exported with `torch.onnx.export(..., dynamo=True)` from a wrapper that returns the logits
only (`use_cache=False`), with a dynamic batch and sequence, weights as external data beside it.

No KV-cache variant: with the dynamo exporter the cache is a transformers `DynamicCache` object, whose
inputs and outputs change with the model family and transformers version (a list of per-layer key/value
pairs that the exporter must flatten through registered pytree nodes). A variant that exports today can
silently break on the next transformers release, and the parity check would have to drive a multi-step
decode loop to mean anything. The logits graph is the artifact the studio can check end to end; a
deployment that needs incremental decoding can re-export with its runtime's own tool (optimum, TensorRT-LLM).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from studio_core.errors import StudioError

ONNX_FILE = "model.onnx"
DEFAULT_SHAPES = ((1, 8), (2, 17), (3, 33))
PARITY_TOLERANCE = 1e-4
KV_CACHE_NOTE = ("not exported: the dynamo exporter sees transformers' DynamicCache, whose flattened inputs change "
                 "with model family and version; only the logits graph is exported and checked")


class ExportError(StudioError):
    """The model cannot be exported as it is (non-finite weights, a failed trace)."""


class ParityError(StudioError):
    """ONNX Runtime's logits differ from PyTorch's by more than the tolerance; carries the figures."""

    def __init__(self, message: str, report: dict[str, Any]):
        super().__init__(message)
        self.report = report


def load_merged(merged_dir: Path):
    """The merged Hugging Face model in fp32 and eval mode (safetensors only)."""
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(merged_dir, use_safetensors=True, dtype=torch.float32).eval()


def non_finite_tensors(model) -> list[str]:
    """Names of the parameters and buffers holding NaN or infinity."""
    import torch

    return [name for name, t in model.state_dict().items() if t.is_floating_point() and not torch.isfinite(t).all()]


def check_finite(model, merged_dir: Path) -> None:
    """Refuse a model with NaN or infinite weights before spending minutes exporting it."""
    bad = non_finite_tensors(model)
    if bad:
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise ExportError(f"{merged_dir}: {len(bad)} weight tensor(s) hold NaN or infinity ({shown}); the exported "
                          "model would produce garbage. Retrain with a lower learning rate or fp32 precision, or "
                          "merge again from a finite adapter checkpoint.")


def logits_only(model):
    """The export wrapper: forward(input_ids, attention_mask) -> logits, without the KV cache."""
    import torch

    class LogitsOnly(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits

    return LogitsOnly(model).eval()


def _example_inputs(vocab_size: int, batch: int, seq: int, seed: int):
    import torch

    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab_size, (batch, seq), generator=generator)
    return ids, torch.ones_like(ids)


def export_onnx(merged_dir: Path, out_dir: Path, opset: int = 18) -> dict[str, Any]:
    """Export `merged_dir` to `out_dir/model.onnx` (+ `model.onnx.data`); returns the export report.

    Raises ExportError naming the tensors when a weight is NaN or infinite, before any tracing starts.
    """
    import torch

    model = load_merged(merged_dir)
    check_finite(model, merged_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    batch, seq = torch.export.Dim("batch", min=1, max=1024), torch.export.Dim("sequence", min=2, max=_max_positions(model))
    shapes = {"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq}}
    start = time.perf_counter()
    try:
        with torch.no_grad():
            program = torch.onnx.export(
                logits_only(model), _example_inputs(model.config.vocab_size, 2, 8, 0), dynamo=True,
                dynamic_shapes=shapes, input_names=["input_ids", "attention_mask"], output_names=["logits"],
                opset_version=opset, external_data=True, verbose=False,
            )
            program.save(str(out_dir / ONNX_FILE), external_data=True)
    except Exception as e:  # any exporter failure becomes one stage error, its cause kept
        raise ExportError(f"torch.onnx.export failed for {merged_dir}: {type(e).__name__}: {str(e)[:500]}") from e
    return _export_report(out_dir, opset, time.perf_counter() - start, model)


def _max_positions(model) -> int:
    return int(getattr(model.config, "max_position_embeddings", 4096) or 4096)


def _export_report(out_dir: Path, opset: int, seconds: float, model) -> dict[str, Any]:
    import onnx

    graph = onnx.load(str(out_dir / ONNX_FILE), load_external_data=False)
    opsets = {o.domain or "ai.onnx": o.version for o in graph.opset_import}
    files = {p.name: p.stat().st_size for p in sorted(out_dir.iterdir()) if p.is_file()}
    return {
        "onnx_file": ONNX_FILE, "files": files, "size_bytes": sum(files.values()), "opset": opsets.get("ai.onnx", opset),
        "opset_requested": opset, "inputs": [i.name for i in graph.graph.input],
        "outputs": [o.name for o in graph.graph.output], "dynamic_axes": {"batch": [1, 1024],
        "sequence": [2, _max_positions(model)]}, "external_data": any(n.endswith(".data") for n in files),
        "export_seconds": round(seconds, 2), "kv_cache": KV_CACHE_NOTE, "vocab_size": model.config.vocab_size,
    }


def ort_session(onnx_path: Path, providers: list[str] | None = None):
    """A plain ONNX Runtime session on `onnx_path` (CPU unless `providers` says otherwise)."""
    import onnxruntime as ort

    return ort.InferenceSession(str(onnx_path), providers=providers or ["CPUExecutionProvider"])


def check_parity(merged_dir: Path, onnx_path: Path, shapes=DEFAULT_SHAPES, seed: int = 0,
                 tolerance: float = PARITY_TOLERANCE) -> dict[str, Any]:
    """ONNX Runtime against PyTorch on fresh random token batches of each (batch, sequence) shape.

    Returns the relative error per shape; raises ParityError with every figure when one exceeds `tolerance`.
    """
    import torch

    from studio_core.train.merge import relative_error

    model, session = load_merged(merged_dir), ort_session(onnx_path)
    rows = []
    for i, (batch, seq) in enumerate(shapes):
        ids, mask = _example_inputs(model.config.vocab_size, batch, seq, seed + i)
        with torch.no_grad():
            reference = model(input_ids=ids, attention_mask=mask, use_cache=False).logits.float()
        (logits,) = session.run(["logits"], {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})
        rows.append({"shape": [batch, seq], "relative_error": relative_error(reference, torch.from_numpy(logits))})
    worst = max(r["relative_error"] for r in rows)
    report = {"shapes": rows, "max_relative_error": worst, "tolerance": tolerance, "seed": seed,
              "runtime": f"onnxruntime-{_ort_version()}", "passed": worst <= tolerance}
    if worst > tolerance:
        detail = "; ".join(f"{r['shape']}: {r['relative_error']:.2e}" for r in rows)
        raise ParityError(f"ONNX Runtime logits differ from PyTorch's: max relative error {worst:.2e} > "
                          f"{tolerance:.0e} ({detail}); the export is not trusted", report)
    return report


def _ort_version() -> str:
    import onnxruntime as ort

    return ort.__version__

