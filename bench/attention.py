"""Training's CPU attention (`studio_core.train.attention`) against PyTorch's SDPA: forward plus backward time
per call over batch sizes and sequence lengths, on the attention shape of a model's config.

The baseline is transformers' own `sdpa_attention_forward` (on CPU, PyTorch's flash-attention kernel), called
the way a causal LM's layer calls it in training: right-padded rows (half the batch 20 tokens shorter), sdpa's
boolean mask, bf16 where the CPU has it. The studio side is `cpu_training_attention` with its length limit
lifted, so both forms are timed at every length; the ratio column (studio / sdpa, below 1 is faster) shows where
the crossover is on this machine, which is what `EAGER_MAX_KV` is set from. Both sides run in this one process,
alternated per shape, after two warm-up calls each.

    .venv/bin/python bench/attention.py [--model REF] [--batches 4 8 16] [--lengths 64 128 192 256 320 448]
                                        [--calls 8] [--threads 2]

Writes bench/results/attention.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def timed(fn, module, shape, calls: int, dtype) -> float:
    import torch

    batch, heads, kv_heads, length, dim = shape
    torch.manual_seed(0)
    query = torch.randn(batch, heads, length, dim, dtype=dtype, requires_grad=True)
    key, value = (torch.randn(batch, kv_heads, length, dim, dtype=dtype, requires_grad=True) for _ in range(2))
    grad = torch.randn(batch, length, heads, dim, dtype=dtype)
    mask = torch.ones(length, length, dtype=torch.bool).tril()[None, None].repeat(batch, 1, 1, 1)
    mask[: batch // 2, :, :, max(length - 20, 1):] = False  # right padding on half the rows
    for _ in range(2):
        fn(module, query, key, value, mask, scaling=dim ** -0.5)[0].backward(grad)
    start = time.perf_counter()
    for _ in range(calls):
        fn(module, query, key, value, mask, scaling=dim ** -0.5)[0].backward(grad)
    return (time.perf_counter() - start) / calls * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="model ref (default: the embedded model)")
    parser.add_argument("--batches", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--lengths", type=int, nargs="+", default=[64, 128, 192, 256, 320, 448])
    parser.add_argument("--calls", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch
    from transformers import AutoConfig
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    import studio_core.train.attention as attention
    from studio_core.config import EMBEDDED_MODEL_REF
    from studio_core.hardware import best_precision, hardware_profile
    from studio_core.models.resolve import resolve_model
    from studio_core.runs import model_cache_dir, studio_home

    torch.set_num_threads(args.threads)
    ref = args.model or EMBEDDED_MODEL_REF
    config = AutoConfig.from_pretrained(resolve_model(ref, model_cache_dir(studio_home())).path)
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    precision = best_precision(hardware_profile())
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    module = SimpleNamespace(num_key_value_groups=heads // kv_heads, is_causal=True, training=True)
    limit, attention.EAGER_MAX_KV = attention.EAGER_MAX_KV, 1 << 30  # time the plain form at every length

    rows = []
    print(f"{ref}: {heads} query heads, {kv_heads} key/value heads, head dim {dim}, {precision}, "
          f"{args.threads} threads; forward + backward per call, ms")
    print(f"{'batch':>5} {'tokens':>6} {'sdpa':>8} {'studio':>8} {'ratio':>6}")
    for batch in args.batches:
        for length in args.lengths:
            shape = (batch, heads, kv_heads, length, dim)
            sdpa = timed(sdpa_attention_forward, module, shape, args.calls, dtype)
            plain = timed(attention.cpu_training_attention, module, shape, args.calls, dtype)
            rows.append({"batch": batch, "tokens": length, "sdpa_ms": round(sdpa, 2), "studio_ms": round(plain, 2),
                         "ratio": round(plain / sdpa, 3)})
            print(f"{batch:>5} {length:>6} {sdpa:>8.1f} {plain:>8.1f} {plain / sdpa:>6.2f}", flush=True)
    faster = [r["tokens"] for r in rows if r["ratio"] < 1]
    print(f"the plain form was faster at {sorted(set(faster))} tokens (batch, tokens pairs above); training uses it "
          f"up to studio_core.train.attention.EAGER_MAX_KV = {limit} tokens")
    out = ROOT / "bench" / "results" / "attention.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"model": ref, "precision": precision, "threads": args.threads, "rows": rows},
                              indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
