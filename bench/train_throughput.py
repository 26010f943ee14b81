"""Studio training vs a plain transformers + peft loop: tokens/s and peak RSS, alternated in one run.

Both sides train LoRA (r=16, every attention and MLP projection) on the same model, the same rows, the same
sequence length, batch and number of steps, in bf16 autocast where the CPU supports it, each in its own
process (so peak RSS is its own). The baseline script uses no studio code: it reads the rows from a JSONL
file and tokenizes them itself. Throughput counts non-padding tokens over the steps after the first
(warm-up) one. `--studio-method JSON` adds a third side, the studio with those method settings (e.g.
'{"dropout": 0}'), to measure one lever against the same baseline in the same run; `--levers` adds 'studio-', the
studio without its 16-bit base levers (base held in fp32, peft casting each adapter's input to fp32:
`studio_core.train.precision`).

It also measures this machine's bf16 (or fp32) matmul peak (2048^3, the run's threads) and prints each side's
model FLOP/s against it. Model FLOPs per token: 4 x the weights a token passes (forward 2, the backward's input
gradient 2; the frozen base takes no weight gradient) outside the embedding, plus 4 x vocabulary x hidden for the
LM head at the share of positions the loss is taken at (the studio projects only those; the baseline all of
them, which this count does not credit). Targets (issue 19): studio >= 2.0x the baseline's tokens/s, peak RSS
<= 1.0x; the goal, >= 40% of the peak. Writes bench/results/train_throughput.json.

    .venv/bin/python bench/train_throughput.py [--model REF] [--steps 12] [--batch 4] [--seq 256] [--rounds 2]
                                               [--studio-method '{"dropout": 0}'] [--levers]
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

BASELINE = r'''
import json, resource, sys, time
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

model_dir, rows_file, steps, batch, seq, precision = sys.argv[1:7]
steps, batch, seq = int(steps), int(batch), int(seq)
torch.manual_seed(42)
tok = AutoTokenizer.from_pretrained(model_dir)
pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
rows = [json.loads(line)["messages"] for line in open(rows_file)]
ids = [tok.apply_chat_template(r, tokenize=True, return_dict=False)[:seq] for r in rows]
model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, use_safetensors=True)
targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules=targets,
                                         task_type="CAUSAL_LM"))
opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-4)
model.train()
marks, tokens = [], []
for step in range(steps):
    chunk = ids[step * batch:(step + 1) * batch]
    width = max(len(r) for r in chunk)
    input_ids = torch.tensor([r + [pad] * (width - len(r)) for r in chunk])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in chunk])
    labels = input_ids.masked_fill(mask == 0, -100)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    marks.append(time.perf_counter())
    tokens.append(int(mask.sum()))
span = marks[-1] - marks[0]
print(json.dumps({"tokens_per_s": sum(tokens[1:]) / span, "steps": steps, "final_loss": float(loss),
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
'''

STUDIO = r'''
import json, resource, sys, threading, time
from pathlib import Path
import torch
from studio_core.config import validate_config
from studio_core.data.tokenize import tokenize_conversation
from studio_core.models.resolve import load_model, load_tokenizer, resolve_model
from studio_core.models.targets import default_target_modules
from studio_core.train import precision as precision_module
from studio_core.train.adapters import apply_method
from studio_core.train.trainer import train

model_ref, cache, rows_file, steps, batch, seq, precision, out_dir, method, levers = sys.argv[1:11]
steps, batch, seq = int(steps), int(batch), int(seq)
if levers == "off":  # the studio before the 16-bit base levers: an fp32 base, peft casting adapter inputs to fp32
    import contextlib
    precision_module.autocast_adapter_inputs = lambda model, precision: contextlib.nullcontext()
    precision_module.base_dtype = lambda cfg, precision: "fp32"
cfg = validate_config({"model": {"ref": model_ref}, "data": {"max_length": seq}, "method": json.loads(method),
    "training": {"max_steps": steps, "per_device_batch_size": batch, "gradient_accumulation_steps": 1,
                 "learning_rate": 5e-4, "warmup_ratio": 0.0, "eval_steps": steps, "save_steps": steps,
                 "early_stopping_patience": 0, "eval_rows": 1, "precision": precision}})
resolved = resolve_model(model_ref, Path(cache))
tok = load_tokenizer(resolved)
rows = [json.loads(line)["messages"] for line in open(rows_file)]
examples = [tokenize_conversation(tok, r, seq) for r in rows]
torch.manual_seed(42)
model = load_model(resolved, dtype=precision_module.base_dtype(cfg, precision))  # as the run's step 4 loads it
peft_model = apply_method(model, cfg.method, default_target_modules(model))
marks, tokens = [], []
def metric(**m):
    if "loss" in m:
        marks.append(time.perf_counter())
train(cfg, peft_model, examples[: steps * batch], examples[-1:], tok.pad_token_id, Path(out_dir), precision,
      lambda *a, **k: None, metric, threading.Event())
lengths = [len(e.input_ids) for e in examples[: steps * batch]]
# Trainer shuffles with its seed, so count tokens as the mean per step times the steps measured.
per_step = sum(lengths) / steps
span = marks[-1] - marks[0]
used = examples[: steps * batch]
print(json.dumps({"tokens_per_s": per_step * (steps - 1) / span, "steps": steps,
                  "supervised_share": sum(e.supervised_tokens for e in used) / sum(lengths),
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
'''

PEAK = r'''
import json, sys, time
import torch
torch.set_num_threads(int(sys.argv[2]))
dtype = torch.bfloat16 if sys.argv[1] == "bf16" else torch.float32
a, b = torch.randn(2048, 2048, dtype=dtype), torch.randn(2048, 2048, dtype=dtype)
for _ in range(3):
    a @ b
best = 0.0
for _ in range(10):
    t = time.perf_counter()
    a @ b
    best = max(best, 2 * 2048 ** 3 / (time.perf_counter() - t))
print(json.dumps({"gflop_per_s": best / 1e9}))
'''


def flops_per_token(model_dir: str, supervised_share: float) -> float:
    """Model FLOPs per trained token (see the module docstring), from the model's config."""
    from transformers import AutoConfig

    c = AutoConfig.from_pretrained(model_dir)
    head = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    attention = c.hidden_size * head * (2 * c.num_attention_heads + 2 * c.num_key_value_heads)
    mlp = 3 * c.hidden_size * c.intermediate_size
    return 4 * c.num_hidden_layers * (attention + mlp) + 4 * c.vocab_size * c.hidden_size * supervised_share


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded:smollm2-135m-instruct")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--studio-method", default=None, help="JSON method settings for a third side, 'studio+'")
    parser.add_argument("--levers", action="store_true", help="add 'studio-': the studio with an fp32 base and "
                        "peft's adapter-input casts (train/precision.py: base_dtype, autocast_adapter_inputs)")
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT))
    from studio_core.data.demo import generate_legal_audit
    from studio_core.data.load import load_records_as_conversations
    from studio_core.hardware import best_precision, hardware_profile
    from studio_core.models.resolve import resolve_model
    from studio_core.runs import model_cache_dir, studio_home

    cache = model_cache_dir(studio_home())
    resolved = resolve_model(args.model, cache)
    precision = best_precision(hardware_profile())
    rows = load_records_as_conversations(generate_legal_audit(args.steps * args.batch), "alpaca").rows
    sides = ["baseline", "studio"] + (["studio-"] if args.levers else []) + (["studio+"] if args.studio_method else [])
    results: dict[str, list[dict]] = {side: [] for side in sides}
    with tempfile.TemporaryDirectory() as tmp:
        rows_file = Path(tmp) / "rows.jsonl"
        rows_file.write_text("".join(json.dumps({"messages": r}) + "\n" for r in rows))
        common = [str(rows_file), str(args.steps), str(args.batch), str(args.seq), precision]
        for i in range(args.rounds):  # alternate, so drift on the machine hits both sides alike
            results["baseline"].append(run_child(BASELINE, [str(resolved.path), *common]))
            results["studio"].append(run_child(STUDIO, [args.model, str(cache), *common, f"{tmp}/studio-{i}", "{}",
                                                        "on"]))
            if args.levers:
                results["studio-"].append(run_child(STUDIO, [args.model, str(cache), *common, f"{tmp}/studio--{i}",
                                                             "{}", "off"]))
            if args.studio_method:
                results["studio+"].append(run_child(STUDIO, [args.model, str(cache), *common, f"{tmp}/studio+-{i}",
                                                             args.studio_method, "on"]))
        import torch

        peak = run_child(PEAK, [precision, str(torch.get_num_threads())])["gflop_per_s"]
    share = statistics.median(r["supervised_share"] for r in results["studio"])
    per_token = flops_per_token(str(resolved.path), share)
    summary = {side: {"tokens_per_s": statistics.median(r["tokens_per_s"] for r in runs),
                      "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in runs)}
               for side, runs in results.items()}
    for side in summary.values():
        side["model_gflop_per_s"] = side["tokens_per_s"] * per_token / 1e9
        side["share_of_peak"] = side["model_gflop_per_s"] / peak
    base = summary["baseline"]
    ratios = {side: {"throughput": v["tokens_per_s"] / base["tokens_per_s"],
                     "peak_rss": v["peak_rss_mb"] / base["peak_rss_mb"]} for side, v in summary.items()}
    print(f"model {args.model}, {args.steps} steps x batch {args.batch} x seq <= {args.seq}, {precision}, "
          f"{args.rounds} alternated rounds (medians); {precision} matmul peak {peak:.0f} GFLOP/s; "
          f"{per_token / 1e6:.0f} MFLOP per token (supervised share {share:.2f})")
    if args.levers:
        print("studio- = the studio with its base in fp32 and peft casting adapter inputs to fp32")
    if args.studio_method:
        print(f"studio+ = the studio with method {args.studio_method}")
    print(f"{'':10}{'tokens/s':>10}{'x baseline':>12}{'peak RSS MB':>13}{'x baseline':>12}{'GFLOP/s':>9}{'of peak':>9}")
    for side, v in summary.items():
        print(f"{side:10}{v['tokens_per_s']:10.1f}{ratios[side]['throughput']:11.3f}x{v['peak_rss_mb']:13.0f}"
              f"{ratios[side]['peak_rss']:11.3f}x{v['model_gflop_per_s']:9.1f}{v['share_of_peak']:9.1%}")
    print("targets: studio >= 2.0x the baseline's tokens/s, peak RSS <= 1.0x; goal: >= 40% of the peak")
    out = ROOT / "bench" / "results" / "train_throughput.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "precision": precision, "peak_gflop_per_s": peak,
                               "model_flop_per_token": per_token, "runs": results, "median": summary,
                               "ratios": ratios}, indent=2))


if __name__ == "__main__":
    main()
