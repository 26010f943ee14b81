"""GPU check for a lent device (a program, not a pytest test): dense against 2:4 semi-structured linears.

    PYTHONPATH=. python3 tests/gpu/check_sparse24.py [--merged FOLDER] [--dtype fp16|bf16] [--tokens 2048]

NOT RUN YET: written in a session without a GPU. For each pruned linear of a step 5 merged model (`--merged`,
e.g. a run's artifacts/merged), or of a tiny random Llama pruned here by magnitude when none is given, it checks
that the weight is exactly 2:4, converts it with `torch.sparse.to_sparse_semi_structured` and compares, on CUDA:
the outputs (relative error) and the median latency of `F.linear` dense against sparse over `--tokens` rows.
Shapes the sparse kernels refuse (too small, not a multiple of 64/128) are reported as skipped, not failed.
Exit status: 0 every converted layer matched; 1 a layer's output differed or a weight was not 2:4; 3 no usable
CUDA GPU with semi-structured sparsity support (compute capability 8.0 or newer).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

TOLERANCE = {"fp16": 2e-2, "bf16": 4e-2}


def pruned_weights(merged: Path | None) -> dict:
    """{name: weight} of the 2:4 linears: from a merged model's safetensors, or a tiny Llama pruned here."""
    import torch

    from studio_core.sparsity.pattern import mask_from_scores, violations

    if merged is not None:
        from safetensors.torch import load_file

        state = {}
        for file in sorted(merged.glob("*.safetensors")):
            state.update(load_file(str(file)))
        weights = {n: w for n, w in state.items() if w.ndim == 2 and "proj" in n}
        return {n: w for n, w in weights.items() if violations(w) == 0 and float((w == 0).float().mean()) >= 0.5}
    torch.manual_seed(0)
    shapes = {"q_proj": (2048, 2048), "up_proj": (5632, 2048), "down_proj": (2048, 5632)}
    out = {}
    for name, shape in shapes.items():
        w = torch.randn(shape)
        out[name] = w * mask_from_scores(w.abs())
    return out


def median_ms(fn, repeats: int = 50) -> float:
    import torch

    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1000)
    return sorted(times)[len(times) // 2]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--merged", type=Path)
    parser.add_argument("--dtype", choices=["fp16", "bf16"], default="fp16")
    parser.add_argument("--tokens", type=int, default=2048)
    parser.add_argument("--out", type=Path, default=Path("bench/results/sparse24_gpu.json"))
    args = parser.parse_args()

    import torch
    import torch.nn.functional as F

    if not torch.cuda.is_available() or torch.cuda.get_device_capability() < (8, 0):
        print("no CUDA GPU with compute capability >= 8.0: semi-structured 2:4 kernels need Ampere or newer")
        return 3
    from torch.sparse import to_sparse_semi_structured

    from studio_core.sparsity.pattern import violations

    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
    rows, failed = [], False
    for name, weight in pruned_weights(args.merged).items():
        w = weight.to("cuda", dtype)
        if violations(w):
            print(f"{name}: not 2:4 after the cast to {args.dtype}")
            failed = True
            continue
        x = torch.randn(args.tokens, w.shape[1], device="cuda", dtype=dtype)
        try:
            sparse = to_sparse_semi_structured(w)
            got = F.linear(x, sparse)
        except (RuntimeError, ValueError) as e:
            rows.append({"layer": name, "shape": list(w.shape), "skipped": str(e)[:200]})
            continue
        want = F.linear(x, w)
        error = float((got.float() - want.float()).abs().max() / want.float().abs().max())
        dense_ms = median_ms(lambda x=x, w=w: F.linear(x, w))
        sparse_ms = median_ms(lambda x=x, sparse=sparse: F.linear(x, sparse))
        ok = error <= TOLERANCE[args.dtype]
        failed |= not ok
        rows.append({"layer": name, "shape": list(w.shape), "relative_error": error, "dense_ms": dense_ms,
                     "sparse_ms": sparse_ms, "speedup": dense_ms / sparse_ms, "ok": ok})
    for row in rows:
        print(json.dumps(row))
    measured = [r for r in rows if "speedup" in r]
    summary = {"device": torch.cuda.get_device_name(), "dtype": args.dtype, "tokens": args.tokens, "layers": rows,
               "median_speedup": sorted(r["speedup"] for r in measured)[len(measured) // 2] if measured else None}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"median speed-up of the sparse linears: {summary['median_speedup']}; written {args.out}")
    return 1 if failed or not measured else 0


if __name__ == "__main__":
    sys.exit(main())
