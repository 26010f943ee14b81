"""GPU check for a lent device (a program, not a pytest test): multi-process training on nccl, with and without
Top-K gradient compression. NOT RUN YET: written on a CPU-only machine.

    PYTHONPATH=. python3 tests/gpu/check_distributed.py [--nproc N] [--steps 8]

Runs the studio's simulation (tiny random Llama, demo data) three times in a fresh home: 1 process with batch 2N,
N processes (one GPU each, default: every visible GPU) with batch 2 and no compression, and N processes with
comm topk k/d=0.1. Prints each run's state, the backend line of its launch event, final validation loss, the bytes
per step the hook sent and the largest relative difference between the 1-process and N-process adapters.
Exit status: 0 every run completed, the adapters agree within 1e-3 and the compressed run's loss is within 10%;
1 otherwise; 3 fewer than 2 CUDA GPUs.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def run(home: Path, nproc: int, batch: int, steps: int, comm: dict | None = None):
    from studio_core import workflow
    from studio_core.config import validate_config

    data = {"simulate": True, "model": {"ref": "tiny-random:llama"}, "data": {"demo_rows": 200, "max_length": 256},
            "preflight": {"enabled": False}, "evaluation": {"enabled": False}, "method": {"dropout": 0.0},
            "training": {"max_steps": steps, "eval_steps": steps // 2, "save_steps": steps // 2, "nproc": nproc,
                         "per_device_batch_size": batch, "gradient_accumulation_steps": 1, "precision": "fp32",
                         "learning_rate": 5e-3, "early_stopping_patience": 0}}
    if comm:
        data["comm"] = {"enabled": True, **comm}
    return workflow.run(validate_config(data), home)


def summary(run) -> dict:
    metrics = run.metrics()
    launch = [e["message"] for e in run.events() if e["type"] == "distributed_launch"]
    return {"state": run.read_status()["state"], "launch": launch[0] if launch else "one process",
            "val_loss": [m["val_loss"] for m in metrics if "val_loss" in m][-1],
            "comm_bytes": next((m["comm_bytes"] for m in metrics if "comm_bytes" in m), None)}


def main() -> int:
    import torch
    from safetensors.torch import load_file

    parser = argparse.ArgumentParser()
    parser.add_argument("--nproc", type=int, default=torch.cuda.device_count())
    parser.add_argument("--steps", type=int, default=8)
    args = parser.parse_args()
    if args.nproc < 2 or torch.cuda.device_count() < args.nproc:
        print(f"needs at least 2 CUDA GPUs (found {torch.cuda.device_count()})")
        return 3
    home = Path(tempfile.mkdtemp(prefix="check-distributed-"))
    one = run(home, 1, 2 * args.nproc, args.steps)
    many = run(home, args.nproc, 2, args.steps)
    topk = run(home, args.nproc, 2, args.steps, {"method": "topk", "ratio": 0.1})
    a, b = (load_file(str(r.artifacts / "adapter" / "adapter_model.safetensors")) for r in (one, many))
    difference = max(float((a[k] - b[k]).abs().max() / b[k].abs().max()) for k in a)
    results = {"one": summary(one), "many": summary(many), "topk": summary(topk), "adapter_difference": difference}
    print(json.dumps(results, indent=2))
    ok = all(r["state"] == "completed" for r in (results["one"], results["many"], results["topk"]))
    ok = ok and difference < 1e-3 and results["topk"]["val_loss"] <= 1.10 * results["many"]["val_loss"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
