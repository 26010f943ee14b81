"""Step 8's answering at several batch sizes: seconds per held-out row and the verdicts, against batch 8.

Loads a run's adapter on the embedded model (bf16 base, as training holds it; the run's own precision), takes the
first `--rows` held-out rows of the demo data (the run's split: `prepare_data` on the 2,400 rows), and answers
them greedily with evaluation's `generate` (48 new tokens, `evaluation.max_new_tokens`' default) once per batch
size, in the order given, in this one process. Prints seconds, seconds per row, the speed-up against the first
batch size, and how many answers end in the reference's verdict and are identical to the first batch size's
answers (left padding differs between batch sizes, which can move a bf16 greedy answer).

    .venv/bin/python bench/eval_batch.py RUN_DIR [--rows 48] [--batches 8 16 32] [--threads 2]

Writes bench/results/eval_batch.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def verdict(text: str) -> str:
    return text.rsplit("Verdict:", 1)[-1].strip().split()[0] if "Verdict:" in text else ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="a completed run on the demo data (its artifacts/adapter)")
    parser.add_argument("--rows", type=int, default=48)
    parser.add_argument("--batches", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch
    from peft import PeftModel

    from studio_core.config import EMBEDDED_MODEL_REF, validate_config
    from studio_core.data.demo import generate_legal_audit, write_jsonl
    from studio_core.data.prepare import prepare_data
    from studio_core.evaluate.basic import generate, prompt_and_reference
    from studio_core.hardware import best_precision, hardware_profile
    from studio_core.models.resolve import load_model, load_tokenizer, resolve_model
    from studio_core.runs import model_cache_dir, studio_home
    from studio_core.train.precision import autocast

    torch.set_num_threads(args.threads)
    config = json.loads((args.run_dir / "config.json").read_text())
    resolved = resolve_model(EMBEDDED_MODEL_REF, model_cache_dir(studio_home()))
    tokenizer = load_tokenizer(resolved)
    precision = best_precision(hardware_profile())
    base = load_model(resolved, dtype="bf16" if precision == "bf16" else "fp32")
    model = PeftModel.from_pretrained(base, str(args.run_dir / "artifacts" / "adapter"))
    answer = config.get("data", {}).get("demo_answer", "reason_first")
    rows_file = Path(tempfile.mkdtemp()) / "demo.jsonl"
    write_jsonl(generate_legal_audit(2400, seed=1234, answer=answer), rows_file)
    data = prepare_data(validate_config({"data": {"path": str(rows_file), "demo_answer": answer}}).data,
                        lambda: tokenizer)
    prompts, references = zip(*[prompt_and_reference(c) for c in data.val[: args.rows]])

    results, first = [], None
    print(f"{len(prompts)} held-out rows, 48 new tokens, {precision}, {args.threads} threads")
    print(f"{'batch':>5} {'s':>7} {'s/row':>6} {'speed-up':>8} {'verdict right':>13} {'same as first':>13}")
    for batch in args.batches:
        start = time.perf_counter()
        with autocast(precision, "cpu"):
            answers = generate(model, tokenizer, list(prompts), 48, batch_size=batch)
        seconds = time.perf_counter() - start
        first = first or (seconds, answers)
        right = sum(verdict(a) == verdict(r) for a, r in zip(answers, references))
        same = sum(a == b for a, b in zip(answers, first[1]))
        results.append({"batch": batch, "seconds": round(seconds, 1),
                        "seconds_per_row": round(seconds / len(prompts), 3), "speedup": round(first[0] / seconds, 2), "verdict_right": right, "same_as_first": same})
        print(f"{batch:>5} {seconds:>7.1f} {seconds / len(prompts):>6.3f} {first[0] / seconds:>7.2f}x "
              f"{right:>13} {same:>13}", flush=True)
    out = ROOT / "bench" / "results" / "eval_batch.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"run": str(args.run_dir), "rows": len(prompts), "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
