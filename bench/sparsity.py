"""Quality of 2:4 pruning with an adapter: dense base, pruned base without training, pruned base + adapter and
dense base + adapter; magnitude against Wanda masks. A program, not a test.

    .venv/bin/python bench/sparsity.py [--model tiny-random:llama | embedded:smollm2-135m-instruct] [--steps 10]
    .venv/bin/python bench/sparsity.py --one-shot --model embedded:smollm2-135m-instruct   # no training, minutes

Three real runs of the studio's engine in one home, same data, seed and LoRA settings: no pruning, magnitude,
Wanda. Per model it reports the validation loss and perplexity and the task metric (step 8, greedy answers on
held-out rows), and perplexity on general text (the public-domain sample in studio_core/data/general_text/).
The headline ratio is the share of the pruning loss the adapter recovers on validation loss:
    recovery = (pruned base - pruned + adapter) / (pruned base - dense + adapter)
above 0.5 means pruned + adapter is closer to dense + adapter than to the pruned base (the issue's goal).
Results in bench/results/sparsity.json. Timings are not the point here (and this machine is shared).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def run_config(model: str, pruning: str | None, steps: int, rows: int) -> dict:
    eval_steps = max(1, steps // 2)
    return {
        "name": f"bench-{pruning or 'dense'}", "model": {"ref": model},
        "data": {"demo_rows": max(400, rows * 10), "max_length": 256}, "preflight": {"enabled": False},
        "method": {"name": "lora", "r": 16, "alpha": 32},
        "pruning": {"enabled": pruning is not None, "method": pruning or "wanda", "calibration_rows": 32},
        "training": {"max_steps": steps, "eval_steps": eval_steps, "save_steps": eval_steps * 100,
                     "per_device_batch_size": 4, "gradient_accumulation_steps": 2, "learning_rate": 1e-3,
                     "eval_rows": 16, "early_stopping_patience": 0, "seed": 42},
        "evaluation": {"max_rows": rows, "task_rows": max(8, rows // 2), "max_new_tokens": 32, "samples": 0},
    }


def general_ppl(folder: Path, tokenizer) -> float:
    from transformers import AutoModelForCausalLM

    from studio_core.evaluate.general_text import general_text_perplexity

    return general_text_perplexity(AutoModelForCausalLM.from_pretrained(folder, use_safetensors=True), tokenizer)


def measure(home: Path, model: str, pruning: str | None, steps: int, rows: int) -> dict:
    from transformers import AutoTokenizer

    from studio_core import workflow
    from studio_core.config import validate_config

    start = time.perf_counter()
    run = workflow.run(validate_config(run_config(model, pruning, steps, rows)), home)
    seconds = time.perf_counter() - start
    ev = json.loads((run.artifacts / "eval" / "metrics.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(run.artifacts / "merged")
    side = lambda s: {"val_loss": s["val_loss"], "val_perplexity": s["val_ppl"],
                      "task": s["task"]["value"]}
    out = {"run": run.run_id, "seconds": round(seconds, 1), "task_metric": ev["task_metric"],
           "base": side(ev["base"]), "tuned": side(ev["tuned"])}
    out["tuned"]["general_ppl"] = general_ppl(run.artifacts / "merged", tokenizer)
    if pruning:
        pr = json.loads((run.artifacts / "pruning.json").read_text())
        out["dense_base_general_ppl"] = pr["quality"]["dense_base"]["general_text_perplexity"]
        out["base"]["general_ppl"] = pr["quality"]["pruned_base"]["general_text_perplexity"]
        out["checks"] = {k: v["violations"] for k, v in pr["checks"].items()}
        out["compression_ratio_16bit"] = pr["compression"]["ratio_16bit"]
    return out


def table(results: dict) -> list[dict]:
    dense = results["dense"]
    rows = [{"model": "dense base", **dense["base"],
             "general_ppl": results.get("magnitude", results.get("wanda", {})).get("dense_base_general_ppl")},
            {"model": "dense base + adapter", **dense["tuned"]}]
    for method in ("magnitude", "wanda"):
        if method in results:
            rows += [{"model": f"{method} 2:4 base, no training", **results[method]["base"]},
                     {"model": f"{method} 2:4 base + adapter", **results[method]["tuned"]}]
    return rows


def recovery(results: dict, method: str) -> float | None:
    gap = results[method]["base"]["val_loss"] - results["dense"]["tuned"]["val_loss"]
    gained = results[method]["base"]["val_loss"] - results[method]["tuned"]["val_loss"]
    return gained / gap if gap > 0 else None


def one_shot(model_ref: str, rows: int, methods: tuple[str, ...] = ("dense", "magnitude", "wanda")) -> dict:
    """No training: the dense base against magnitude and Wanda 2:4 one-shot (the issue's Llama-2 reference is of
    this kind), on validation loss (demo data) and general-text perplexity. Cheap: forward passes only."""
    from studio_core.config import DataConfig
    from studio_core.data.prepare import prepare_data
    from studio_core.evaluate.basic import perplexity, validation_loss
    from studio_core.evaluate.general_text import general_text_perplexity
    from studio_core.models.resolve import load_model, load_tokenizer, resolve_model
    from studio_core.runs import model_cache_dir, studio_home
    from studio_core.sparsity.prune import apply_masks, compute_masks, target_layers
    from studio_core.train.batching import collate

    resolved = resolve_model(model_ref, model_cache_dir(studio_home()))
    tokenizer = load_tokenizer(resolved)
    data = prepare_data(DataConfig(demo_rows=400, max_length=256), lambda: tokenizer)
    val = [e for e in data.val_tokens if e.supervised_tokens][:rows]
    calibration = [collate(data.train_tokens[i:i + 4], tokenizer.pad_token_id) for i in range(0, 32, 4)]
    out = {}
    for method in methods:
        model = load_model(resolved)
        if method != "dense":
            layers = target_layers(model, "auto")
            apply_masks(layers, compute_masks(model, layers, method, calibration))
        loss = validation_loss(model, val, tokenizer.pad_token_id, batch_size=4)
        out[method] = {"val_loss": loss, "val_perplexity": perplexity(loss),
                       "general_ppl": general_text_perplexity(model, tokenizer)}
        print(method, out[method], flush=True)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-random:llama")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rows", type=int, default=32, help="validation rows measured (task rows: half)")
    parser.add_argument("--methods", default=None, help="pruning methods, comma-separated (default magnitude,wanda)")
    parser.add_argument("--home", type=Path, help="studio home for the runs (default: a temporary folder)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "sparsity.json")
    parser.add_argument("--one-shot", action="store_true", help="no training: dense vs magnitude vs Wanda only")
    args = parser.parse_args()
    args.methods_given = args.methods is not None
    args.methods = args.methods or "magnitude,wanda"

    if args.one_shot:
        results = one_shot(args.model, args.rows, ("dense", *args.methods.split(",")) if args.methods_given else
                           ("dense", "magnitude", "wanda"))
        print(f"\n{args.model}, one-shot 2:4 (no adapter), {args.rows} validation rows")
        for method, r in results.items():
            print(f"{method:10} val loss {r['val_loss']:.4f}  val ppl {r['val_perplexity']:9.2f}  "
                  f"general-text ppl {r['general_ppl']:9.2f}")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"model": args.model, "one_shot": results, "rows": args.rows}, indent=2) + "\n")
        return 0
    home = args.home or Path(tempfile.mkdtemp(prefix="bench-sparsity-"))
    results = {"dense": measure(home, args.model, None, args.steps, args.rows)}
    for method in args.methods.split(","):
        results[method] = measure(home, args.model, method, args.steps, args.rows)
    rows = table(results)
    print(f"\n{args.model}, LoRA r=16, {args.steps} steps, {args.rows} validation rows "
          f"(task: {results['dense']['task_metric']})")
    print(f"{'model':34} {'val loss':>9} {'val ppl':>9} {'task':>6} {'general ppl':>12}")
    for r in rows:
        gp = f"{r['general_ppl']:12.2f}" if r.get("general_ppl") is not None else f"{'-':>12}"
        print(f"{r['model']:34} {r['val_loss']:9.4f} {r['val_perplexity']:9.2f} {r['task']:6.3f} {gp}")
    summary = {m: recovery(results, m) for m in args.methods.split(",")}
    for method, value in summary.items():
        text = f"{value:.2f}" if value is not None else "n/a (pruning did not raise the loss above dense + adapter)"
        print(f"recovery ({method}): {text}  [share of the pruning loss the adapter recovers; > 0.5 is the goal]")
        print(f"  violations {results[method]['checks']}, pruned tensors at 16 bits: "
              f"{results[method]['compression_ratio_16bit']:.4f}x of dense")
    print("speed: none measured or claimed on this CPU (see tests/gpu/check_sparse24.py for a GPU)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"model": args.model, "steps": args.steps, "rows": args.rows, "table": rows,
                                    "recovery": summary, "runs": results}, indent=2) + "\n")
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
