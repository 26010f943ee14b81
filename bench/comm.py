"""Gradient compression on 2 training processes: bytes sent per step and final validation loss, same run.

Variants, each the same training (data, model, seed, steps) on 2 gloo processes launched by torchrun, the hook
being the only difference: no compression (PyTorch's dense all-reduce hook, counted), PyTorch's fp16 hook, PyTorch's
PowerSGD hook (rank 1, compressing from step 2), and the studio's Rand-K and Top-K (error feedback) at k/d=--ratio.
Bytes are the payload each process hands to the collectives per optimizer step (PowerSGD's P and Q factors plus the
tensors it leaves dense). Prints a table with each variant's compression and loss against no compression, and
writes bench/results/comm.json.

    .venv/bin/python bench/comm.py [--model tiny-random:llama] [--steps 30] [--ratio 0.1]

Time figures are not reported: on a shared machine they say nothing (the point here is bytes and loss).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = ("none", "fp16", "powersgd", "randk", "topk")


def prepare(home: Path, model: str, steps: int, ratio: float) -> str:
    """One one-process run of 1 step: its run dir holds the tokenized data and the config the workers train."""
    sys.path.insert(0, str(ROOT))
    from studio_core import workflow
    from studio_core.config import validate_config

    config = validate_config({
        "name": "bench-comm", "model": {"ref": model}, "data": {"demo_rows": 400, "max_length": 256},
        "preflight": {"enabled": False}, "evaluation": {"enabled": False},
        "method": {"name": "lora", "dropout": 0.0},
        "training": {"max_steps": 1, "eval_steps": 1, "save_steps": 1, "per_device_batch_size": 4,
                     "gradient_accumulation_steps": 1, "learning_rate": 5e-3, "eval_rows": 32, "precision": "fp32",
                     "early_stopping_patience": 0},
        "comm": {"ratio": ratio},
    })
    run = workflow.run(config, home)
    data = config.model_dump(mode="json")
    data["training"].update(max_steps=steps, eval_steps=steps, save_steps=steps, nproc=2)
    (run.path / "bench-config.json").write_text(json.dumps(data))
    return run.run_id


def worker(home: str, run_id: str, variant: str, out: str) -> None:
    """One torchrun worker: the run's model and data, the variant's hook, the studio's `train`."""
    import torch.distributed as dist
    from transformers import set_seed

    from studio_core.comm.hooks import HOOKS, CommState, CountingState, counting_hook
    from studio_core.config import validate_config
    from studio_core.context import CancelSignal, RunContext
    from studio_core.runs import RunStore
    from studio_core.train.batching import supervised_rows
    from studio_core.train.lifecycle import build_peft_model, load_training_model
    from studio_core.train.trainer import TrainerParts, train

    run = RunStore(home).get(run_id)
    cfg = validate_config(json.loads((run.path / "bench-config.json").read_text()))
    ctx = RunContext(cfg, run, RunStore(home).home, CancelSignal())
    set_seed(cfg.training.seed)
    peft_model, _ = build_peft_model(ctx, load_training_model(ctx, "fp32"))
    if variant in HOOKS:
        state = CommState(variant, cfg.comm.ratio, cfg.comm.seed)
        hook = HOOKS[variant]
    else:
        inner = None
        if variant == "powersgd":
            from torch.distributed.algorithms.ddp_comm_hooks.powerSGD_hook import PowerSGDState

            inner = PowerSGDState(process_group=None, matrix_approximation_rank=1, start_powerSGD_iter=2)
        state, hook = CountingState(variant, inner), counting_hook
    lines: list[dict] = []
    parts = TrainerParts(comm_hook=(state, hook), metric_fields=[lambda _s: state.take()])
    train_rows, val_rows = supervised_rows(ctx.prepared_data())
    outcome = train(cfg, peft_model, train_rows, val_rows, ctx.tokenizer().pad_token_id, Path(out).parent / variant,
                    "fp32", lambda *a, **k: None, lambda **m: lines.append(m), CancelSignal(), parts)
    if dist.get_rank() == 0:
        sent = [m["comm_bytes"] for m in lines if "comm_bytes" in m]
        dense = [m["comm_dense_bytes"] for m in lines if "comm_dense_bytes" in m]
        val = [h["eval_loss"] for h in outcome.history if "eval_loss" in h]
        Path(out).write_text(json.dumps({"variant": variant, "bytes_per_step": sum(sent) / len(sent),
                                         "dense_bytes_per_step": sum(dense) / len(dense), "val_loss": val[-1],
                                         "val_loss_start": val[0], "steps": outcome.steps}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny-random:llama")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--ratio", type=float, default=0.1)
    parser.add_argument("--worker", nargs=4, metavar=("HOME", "RUN_ID", "VARIANT", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        sys.path.insert(0, str(ROOT))
        worker(*args.worker)
        return 0
    home = Path(tempfile.mkdtemp(prefix="bench-comm-"))
    run_id = prepare(home, args.model, args.steps, args.ratio)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    results = []
    for variant in VARIANTS:
        out = home / f"{variant}.json"
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                   str(Path(__file__).resolve()), "--worker", str(home), run_id, variant, str(out)]
        subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
        results.append(json.loads(out.read_text()))
    base = results[0]
    print(f"{args.model}, LoRA, {args.steps} steps, 2 gloo processes x batch 4, k/d={args.ratio} for Rand-K/Top-K "
          "(machine shared with other work: no timings)")
    print(f"{'variant':<10} {'bytes/step':>12} {'vs dense':>9} {'val loss':>10} {'vs none':>9}")
    for r in results:
        r["compression"] = r["dense_bytes_per_step"] / r["bytes_per_step"]
        r["val_loss_vs_none"] = r["val_loss"] / base["val_loss"]
        print(f"{r['variant']:<10} {r['bytes_per_step']:>12,.0f} {r['compression']:>8.1f}x {r['val_loss']:>10.4f} "
              f"{r['val_loss_vs_none']:>8.3f}x")
    print(f"validation loss before training: {base['val_loss_start']:.4f}")
    out_dir = ROOT / "bench" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "comm.json").write_text(json.dumps({"model": args.model, "steps": args.steps, "ratio": args.ratio,
                                                   "processes": 2, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
