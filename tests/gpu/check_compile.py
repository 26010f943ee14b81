"""GPU check for a lent device (a program, not a pytest test): export, TensorRT engine, logits, timings.

    PYTHONPATH=. python3 tests/gpu/check_compile.py [--merged FOLDER] [--precision fp16|bf16|fp32]

Without --merged it builds a tiny random Llama (2 layers, hidden 64) with plain transformers, so it needs
no studio model cache and no gguf. Steps: export to ONNX (dynamo) and check parity on CPU ONNX Runtime;
build a TensorRT engine through studio_core.export.compile (only if the catalog finds tensorrt and a CUDA
GPU); compare the engine's logits with PyTorch's on the GPU (relative error, top-1 agreement) and time both.
Exit status: 0 all checks passed; 1 a check failed; 3 TensorRT is not usable here (the reason is printed:
its wheels are over a gigabyte, too big to carry to a device that cannot download).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

TOP1_MIN = {"fp32": 0.999, "fp16": 0.98, "bf16": 0.95}


def tiny_llama(folder: Path) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024)
    LlamaForCausalLM(config).save_pretrained(folder, safe_serialization=True)
    return folder


def timed(fn, repeats: int = 20) -> float:
    """Median milliseconds of `fn()` after a warm-up, CUDA-synchronised."""
    import torch

    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(1000 * (time.perf_counter() - start))
    return sorted(times)[len(times) // 2]


def compare_on_gpu(merged: Path, engine: Path, shapes, top1_min: float) -> list[dict]:
    import torch

    from studio_core.export.compile import tensorrt_runner
    from studio_core.export.onnx import load_merged
    from studio_core.train.merge import relative_error

    model, engine_run = load_merged(merged).cuda(), tensorrt_runner(engine)
    rows = []
    for batch, seq in shapes:
        ids = torch.randint(0, model.config.vocab_size, (batch, seq), device="cuda")
        mask = torch.ones_like(ids)
        with torch.inference_mode():
            reference = model(input_ids=ids, attention_mask=mask, use_cache=False).logits.float()
            torch_ms = timed(lambda ids=ids, mask=mask: model(input_ids=ids, attention_mask=mask, use_cache=False))
        logits = engine_run(ids, mask).float()
        agreement = float((logits.argmax(-1) == reference.argmax(-1)).float().mean())
        rows.append({"shape": [batch, seq], "relative_error": relative_error(reference, logits),
                     "top1_agreement": agreement, "passed": agreement >= top1_min, "torch_ms": torch_ms,
                     "tensorrt_ms": timed(lambda ids=ids, mask=mask: engine_run(ids, mask))})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description="Export + TensorRT check on a lent GPU")
    parser.add_argument("--merged", type=Path, help="a merged HF model folder (default: a tiny random Llama)")
    parser.add_argument("--precision", default="fp16", choices=list(TOP1_MIN))
    args = parser.parse_args()
    from studio_core.catalog import backend_status
    from studio_core.export.compile import compile_model
    from studio_core.export.onnx import check_parity, export_onnx

    work = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    merged = args.merged or tiny_llama(work / "merged")
    start = time.perf_counter()
    export = export_onnx(merged, work / "onnx")
    parity = check_parity(merged, work / "onnx" / "model.onnx")
    print(json.dumps({"export_s": round(time.perf_counter() - start, 1), "opset": export["opset"],
                      "cpu_parity": parity["max_relative_error"]}))
    status = {name: backend_status(name) for name in ("cuda", "tensorrt")}
    print(json.dumps({name: {"available": s.available, "version": s.version, "reason": s.reason}
                      for name, s in status.items()}))
    if not status["tensorrt"].available:
        print(f"TensorRT not usable here: {status['tensorrt'].reason}; install with {status['tensorrt'].install}")
        return 3
    report = compile_model(work / "onnx", work / "engine", backend="tensorrt", precision=args.precision,
                           batch_range=(1, 2, 8), sequence_range=(2, 64, 256))
    print(json.dumps({k: report[k] for k in ("engine", "precision", "sparse_weights", "compile_seconds", "files")}))
    rows = compare_on_gpu(merged, work / "engine" / "model.engine", [(1, 16), (4, 64), (8, 256)],
                          TOP1_MIN[report["precision"]])
    for row in rows:
        print(json.dumps(row))
    return 0 if all(r["passed"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
