"""DP-SGD (Opacus, `studio_core.privacy`) vs non-private studio training: step time, tokens/s and peak RSS.

Both sides run the studio's own `train()` on the same model, method (the default LoRA), rows, sequence length,
per-device batch and number of steps, each in its own process (so peak RSS is its own), alternated round by
round. The non-private side is the HF Trainer path; the private side is the same call with the privacy
engine's TrainerParts (Poisson batches of the same expected size, per-example clipping, noise, accounting).
Poisson batches vary in size, so tokens/s (non-padding tokens over the steps after the first) is the fair
ratio; step time is printed beside it. Target: DP time <= 1.3x. Writes bench/results/dp_overhead.json.
The default batch shape is the studio's (4 rows x 2 accumulation; see bench/README.md for what --accum 1 measures).

    .venv/bin/python bench/dp_overhead.py [--model REF] [--steps 8] [--batch 4] [--accum 2] [--seq 256] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

from child import run_child  # bench/child.py

ROOT = Path(__file__).resolve().parent.parent

CHILD = r'''
import json, resource, sys, threading, time
from pathlib import Path
from types import SimpleNamespace
import torch
from studio_core.config import validate_config
from studio_core.data.tokenize import tokenize_conversation
from studio_core.hardware import hardware_profile
from studio_core.models.resolve import load_model, load_tokenizer, resolve_model
from studio_core.models.targets import default_target_modules
from studio_core.train.adapters import apply_method
from studio_core.train.precision import resolve_precision
from studio_core.train.trainer import train

side, model_ref, cache, rows_file, steps, batch, accum, seq, precision, out_dir = sys.argv[1:11]
steps, batch, accum, seq = int(steps), int(batch), int(accum), int(seq)
cfg = validate_config({"model": {"ref": model_ref}, "data": {"max_length": seq},
    "training": {"max_steps": steps, "per_device_batch_size": batch, "gradient_accumulation_steps": accum,
                 "learning_rate": 5e-4, "warmup_ratio": 0.0, "eval_steps": steps, "save_steps": steps,
                 "early_stopping_patience": 0, "eval_rows": 1, "precision": precision},
    "privacy": {"enabled": side == "dp", "target_epsilon": 8.0}})
precision = resolve_precision(precision, hardware_profile())
resolved = resolve_model(model_ref, Path(cache))
tok = load_tokenizer(resolved)
rows = [json.loads(line)["messages"] for line in open(rows_file)]
examples = [tokenize_conversation(tok, r, seq) for r in rows]
torch.manual_seed(42)
model = load_model(resolved)
peft_model = apply_method(model, cfg.method, default_target_modules(model))
parts = None
if side == "dp":
    from studio_core.privacy import trainer_parts
    ctx = SimpleNamespace(config=cfg, emit=lambda *a, **k: None, write_artifact=lambda *a, **k: None)
    parts = trainer_parts(ctx)
lines = []
def metric(**m):
    if "loss" in m:
        lines.append((time.perf_counter(), m))
train(cfg, peft_model, examples, examples[-1:], tok.pad_token_id, Path(out_dir), precision,
      lambda *a, **k: None, metric, threading.Event(), parts)
marks = [m["elapsed_s"] for _, m in lines]
span = marks[-1] - marks[0]  # after the first (warm-up) step
tokens = [b["tokens_per_s"] * (b["elapsed_s"] - a["elapsed_s"]) for (_, a), (_, b) in zip(lines, lines[1:])]
print(json.dumps({"side": side, "precision": precision, "steps": len(lines), "seconds_per_step": span / (len(lines) - 1),
                  "tokens_per_s": sum(tokens) / span, "epsilon": lines[-1][1].get("epsilon"),
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
'''


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded:smollm2-135m-instruct")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--accum", type=int, default=2, help="gradient accumulation (the studio's default: 2)")
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--precision", default="auto")
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT))
    from studio_core.data.demo import generate_legal_audit
    from studio_core.data.load import load_records_as_conversations
    from studio_core.models.resolve import resolve_model
    from studio_core.runs import model_cache_dir, studio_home

    cache = model_cache_dir(studio_home())
    resolve_model(args.model, cache)  # converts the embedded model once, before any timing
    results: dict[str, list[dict]] = {"plain": [], "dp": []}
    with tempfile.TemporaryDirectory() as tmp:
        rows_file = Path(tmp) / "rows.jsonl"
        rows = load_records_as_conversations(generate_legal_audit(400, seed=7), "alpaca").rows
        rows_file.write_text("".join(json.dumps({"messages": r}) + "\n" for r in rows))
        for round_ in range(args.rounds):
            for side in ("plain", "dp"):
                out = Path(tmp) / f"{side}-{round_}"
                result = run_child(CHILD, [side, args.model, str(cache), str(rows_file), str(args.steps), str(args.batch),
                                           str(args.accum), str(args.seq), args.precision, str(out)])
                results[side].append(result)
                print(f"round {round_ + 1} {side:>5}: {result['seconds_per_step']:.2f} s/step, "
                      f"{result['tokens_per_s']:.1f} tokens/s, peak RSS {result['peak_rss_mb']:.0f} MB", flush=True)
    med = {side: {k: statistics.median(r[k] for r in rs) for k in ("seconds_per_step", "tokens_per_s", "peak_rss_mb")}
           for side, rs in results.items()}
    summary = {
        "model": args.model, "steps": args.steps, "batch": args.batch, "accumulation": args.accum, "seq": args.seq,
        "rounds": args.rounds,
        "precision": results["dp"][0]["precision"], "median": med, "runs": results,
        "time_ratio_per_token": med["plain"]["tokens_per_s"] / med["dp"]["tokens_per_s"],
        "step_time_ratio": med["dp"]["seconds_per_step"] / med["plain"]["seconds_per_step"],
        "peak_rss_ratio": med["dp"]["peak_rss_mb"] / med["plain"]["peak_rss_mb"], "target_time_ratio": 1.3,
    }
    print(f"\n{'':>12} {'s/step':>8} {'tokens/s':>9} {'peak RSS MB':>12}")
    for side in ("plain", "dp"):
        m = med[side]
        print(f"{side:>12} {m['seconds_per_step']:>8.2f} {m['tokens_per_s']:>9.1f} {m['peak_rss_mb']:>12.0f}")
    print(f"DP / plain: {summary['time_ratio_per_token']:.2f}x time per token, {summary['step_time_ratio']:.2f}x "
          f"time per step, {summary['peak_rss_ratio']:.2f}x peak RSS (target <= 1.3x time)")
    out = ROOT / "bench" / "results" / "dp_overhead.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
