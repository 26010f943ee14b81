"""Does the default run learn the demo's decision? The sweep behind the defaults: setting, minutes, accuracy.

Each setting trains LoRA on the embedded model on the legal-audit demo data (2,400 rows, the run's own split and
tokenization: `prepare_data` on the rows written to a JSONL file) through the studio's `train()`, then answers
the first `--eval-rows` held-out rows by greedy generation (evaluation's `generate`, 64 new tokens) and scores
them with evaluation's verdict report: accuracy against the majority-class baseline with its binomial test,
per rule and as a confusion matrix. Every setting runs in its own process, one after another. The untrained base
is not evaluated here (the run's step 8 does that); minutes are this machine's, and they are load-dependent.

    .venv/bin/python bench/demo_learning.py [--only TAG ...] [--eval-rows 200] [--threads 2]
    .venv/bin/python bench/demo_learning.py --probe [--probe-rows 1600] [--probe-rule Confidentiality]

Writes bench/results/demo_learning.json (one record per setting, appended to the records already there for
other settings, so a sweep can be run a setting at a time).

`--probe` asks the question before any training: is the verdict there to be read in the untrained base? For each
answer format it runs the frozen base over the rows' prompts up to the verdict ("Verdict:", after the reference
reason where the reason comes first), takes the hidden state at that position from several layers, and fits a
logistic regression (scikit-learn, standardized features) on 75% of the rows, scored on the other 25%. A high
held-out accuracy says the decision is linearly readable where the model must emit it, so a run that stays at
chance is failing to learn the readout, not missing the information. Writes bench/results/demo_probe.json.
`--probe-rule WORD` probes one rule's rows (those whose policy rule contains WORD): e.g. Confidentiality, where
the decision is one digit (1 or 2 years fail, 3 to 10 pass), the easiest there is to read. Beside each layer's
logistic regression it fits the same readout as training would, AdamW on 8 random rows a step for 300 steps
from zero, once on the raw features and once on them centred (the columns "AdamW raw" and "AdamW centred").
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from child import run_child  # bench/child.py

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "demo_learning.json"

GROUPED = {"label_words": ["COMPLIANT", "NON-COMPLIANT"], "label_group": "Policy rule: (.*)"}
# tag: (answer format, training overrides). The defaults' own row is "default".
SWEEP: dict[str, tuple[str, dict]] = {
    "verdict_first-40": ("verdict_first", {"max_steps": 40}),
    "reason_first-40": ("reason_first", {"max_steps": 40}),
    "verdict_first-120": ("verdict_first", {"max_steps": 120}),
    "reason_first-120": ("reason_first", {"max_steps": 120}),
    "reason_compare-120": ("reason_compare", {"max_steps": 120}),
    "reason_first-120-lr2e-3": ("reason_first", {"max_steps": 120, "learning_rate": 2e-3}),
    "verdict_first-120-labels": ("verdict_first", {"max_steps": 120, "label_words": ["COMPLIANT", "NON-COMPLIANT"]}),
    "verdict_first-40-labels": ("verdict_first", {"max_steps": 40, "label_words": ["COMPLIANT", "NON-COMPLIANT"]}),
    # training.label_group: each pass holds pairs of one rule's rows, one of either verdict, centred within the rule
    "reason_first-60-grouped": ("reason_first", {"max_steps": 60, "per_device_batch_size": 8,
                                                 "gradient_accumulation_steps": 2, **GROUPED}),
    "verdict_first-60-grouped": ("verdict_first", {"max_steps": 60, "per_device_batch_size": 8,
                                                   "gradient_accumulation_steps": 2, **GROUPED}),
    "reason_first-90-grouped": ("reason_first", {"max_steps": 90, "per_device_batch_size": 8,
                                                 "gradient_accumulation_steps": 2, **GROUPED}),
    "reason_first-90-grouped-16x1": ("reason_first", {"max_steps": 90, "per_device_batch_size": 16,
                                                      "gradient_accumulation_steps": 1, **GROUPED}),
}

CHILD = r'''
import json, sys, tempfile, threading, time
from pathlib import Path
t0 = time.perf_counter()
import torch
from studio_core.config import validate_config
from studio_core.data.demo import generate_legal_audit, write_jsonl
from studio_core.data.prepare import prepare_data
from studio_core.evaluate.basic import generate, prompt_and_reference, _user_text
from studio_core.evaluate.verdicts import verdict_report
from studio_core.hardware import best_precision, hardware_profile
from studio_core.models.resolve import load_model, load_tokenizer, resolve_model
from studio_core.models.targets import default_target_modules
from studio_core.runs import model_cache_dir, studio_home
from studio_core.train.adapters import apply_method
from studio_core.train.precision import autocast, base_dtype
from studio_core.train.batching import supervised_rows
from studio_core.train.labels import label_parts
from studio_core.train.trainer import TrainerParts, train

answer, overrides, eval_rows, threads = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(threads)
with tempfile.TemporaryDirectory() as tmp:
    rows_file = Path(tmp) / "demo.jsonl"
    write_jsonl(generate_legal_audit(2400, seed=1234, answer=answer), rows_file)
    cfg = validate_config({"data": {"path": str(rows_file)}, "training": overrides})
    resolved = resolve_model(cfg.model.ref, model_cache_dir(studio_home()))
    tok = load_tokenizer(resolved)
    data = prepare_data(cfg.data, lambda: tok)
    torch.manual_seed(cfg.training.seed)
    precision = best_precision(hardware_profile())
    model = load_model(resolved, dtype=base_dtype(cfg, precision))  # as the run's step 4 loads it
    peft_model = apply_method(model, cfg.method, default_target_modules(model))
    train_rows, val_rows = supervised_rows(data)
    losses = []
    metric = lambda **m: losses.append(m["loss"]) if "loss" in m else None
    t1 = time.perf_counter()
    parts = label_parts(cfg.training, tok, lambda *a, **k: None) if cfg.training.label_words else TrainerParts()
    train(cfg, peft_model, train_rows, val_rows, tok.pad_token_id, Path(tmp) / "run", precision,
          lambda *a, **k: None, metric, threading.Event(), parts)
    t2 = time.perf_counter()
    prompts, refs = zip(*(prompt_and_reference(c) for c in data.val[:eval_rows]))
    with autocast(precision, "cpu"):
        answers = generate(peft_model, tok, list(prompts), 64, batch_size=16)
    t3 = time.perf_counter()
report = verdict_report([_user_text(p) for p in prompts], answers, list(refs))
print(json.dumps({"train_minutes": (t2 - t1) / 60, "eval_minutes": (t3 - t2) / 60, "setup_minutes": (t1 - t0) / 60,
                  "train_rows": len(train_rows), "precision": precision, "base_dtype": base_dtype(cfg, precision),
                  "report": report,
                  "first_losses": losses[:3], "last_losses": losses[-3:], "samples": answers[:3]}))
'''


PROBE_CHILD = r'''
import json, sys, time
import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from studio_core.config import RunConfig
from studio_core.data.demo import generate_legal_audit, NON_COMPLIANT
from studio_core.data.schemas import normalise_record
from studio_core.evaluate.basic import _prompt_ids, prompt_and_reference
from studio_core.hardware import best_precision, hardware_profile
from studio_core.models.resolve import load_model, load_tokenizer, resolve_model
from studio_core.runs import model_cache_dir, studio_home
from studio_core.train.precision import autocast


def adamw_readout(x, y, cut, steps=300, batch=8, lr=2e-2):
    """The same linear readout fitted as training fits one: AdamW from zero, 8 random rows a step, 300 steps.
    Held-out accuracy at the end. Raw features against the same features centred (the training rows' mean taken
    off) says whether the features' offset, not the information, is what minibatch training stumbles on."""
    gen = torch.Generator().manual_seed(0)
    xt, yt = torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)
    w, b = torch.zeros(xt.shape[1], requires_grad=True), torch.zeros((), requires_grad=True)
    optimizer = torch.optim.AdamW([w, b], lr=lr, weight_decay=0.0)
    for _ in range(steps):
        idx = torch.randint(0, cut, (batch,), generator=gen)
        torch.nn.functional.binary_cross_entropy_with_logits(xt[idx] @ w + b, yt[idx]).backward()
        optimizer.step()
        optimizer.zero_grad()
    with torch.no_grad():
        return round(float(((xt[cut:] @ w + b > 0).float() == yt[cut:]).float().mean()), 3)


wanted, threads, rule = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
torch.set_num_threads(threads)
resolved = resolve_model(RunConfig().model.ref, model_cache_dir(studio_home()))  # the embedded model
tok = load_tokenizer(resolved)
model = load_model(resolved).eval()
precision = best_precision(hardware_profile())
layers = [4, 8, 16, 24, model.config.num_hidden_layers]
out = []
for answer in ("verdict_first", "reason_first"):
    t0 = time.perf_counter()
    rows = generate_legal_audit(wanted if not rule else 20 * wanted, seed=1234, answer=answer)
    if rule:  # one rule's rows only (e.g. "Confidentiality"): the first `wanted` whose instruction names it
        rows = [r for r in rows if rule in r["instruction"]][:wanted]
    n = len(rows)
    seqs, y = [], []
    for r in rows:
        prompt, reference = prompt_and_reference(normalise_record(r, "alpaca"))  # as the run reads the rows
        head, verdict = reference.split("Verdict:")  # verdict_first: head is ""
        seqs.append(_prompt_ids(tok, prompt) + tok(head + "Verdict:")["input_ids"])
        y.append(NON_COMPLIANT not in verdict)
    feats = {l: [] for l in layers}
    for i in range(0, n, 16):
        chunk = seqs[i:i + 16]
        w = max(len(c) for c in chunk)
        ids = torch.tensor([[tok.pad_token_id] * (w - len(c)) + c for c in chunk])
        mask = torch.tensor([[0] * (w - len(c)) + [1] * len(c) for c in chunk])
        with torch.no_grad(), autocast(precision, "cpu"):
            hidden = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
        for l in layers:
            feats[l].append(hidden[l][:, -1, :].float().numpy())
    y = np.array(y)
    cut = int(0.75 * n)
    majority = max(y[cut:].mean(), 1 - y[cut:].mean())
    for l in layers:
        raw = np.concatenate(feats[l])
        minibatch = {kind: adamw_readout(raw if kind == "raw" else raw - raw[:cut].mean(0), y, cut)
                     for kind in ("raw", "centered")}
        x = (raw - raw[:cut].mean(0)) / (raw[:cut].std(0) + 1e-6)
        for c in (0.1, 1.0):
            clf = LogisticRegression(C=c, max_iter=3000).fit(x[:cut], y[:cut])
            out.append({"answer": answer, "rule": rule or "all", "layer": l, "C": c, "train_rows": cut,
                        "test_rows": n - cut,
                        "train_accuracy": round(float(clf.score(x[:cut], y[:cut])), 3),
                        "test_accuracy": round(float(clf.score(x[cut:], y[cut:])), 3),
                        "majority_baseline": round(float(majority), 3),
                        "adamw_raw_test_accuracy": minibatch["raw"], "adamw_centered_test_accuracy": minibatch["centered"],
                        "forward_minutes": round((time.perf_counter() - t0) / 60, 2)})
print(json.dumps(out))
'''


def run_probe(rows: int, threads: int, rule: str) -> int:
    records = run_child(PROBE_CHILD, [str(rows), str(threads), rule], what="probe")
    name = "demo_probe.json" if not rule else f"demo_probe-{rule.lower()}.json"
    (RESULTS.parent / name).write_text(json.dumps(records, indent=2) + "\n")
    print(f"rule: {rule or 'all'}, {records[0]['train_rows'] + records[0]['test_rows']} rows")
    print(f"{'answer':15}{'layer':>6}{'C':>5}{'train acc':>10}{'held-out acc':>13}{'majority':>9}"
          f"{'AdamW raw':>10}{'AdamW centred':>14}")
    for r in records:
        print(f"{r['answer']:15}{r['layer']:6}{r['C']:5}{r['train_accuracy']:10.3f}{r['test_accuracy']:13.3f}"
              f"{r['majority_baseline']:9.3f}{r['adamw_raw_test_accuracy']:10.3f}"
              f"{r['adamw_centered_test_accuracy']:14.3f}")
    return 0


def run_setting(tag: str, eval_rows: int, threads: int) -> dict:
    answer, overrides = SWEEP[tag]
    start = time.perf_counter()
    record = run_child(CHILD, [answer, json.dumps(overrides), str(eval_rows), str(threads)], what=tag)
    return {"tag": tag, "answer": answer, "training": overrides, "eval_rows": eval_rows,
            "wall_minutes": (time.perf_counter() - start) / 60, **record}


def worst_rule(report: dict) -> str:
    rule, figures = min(report["per_rule"].items(), key=lambda kv: kv[1]["accuracy"] - kv[1]["majority_baseline"])
    return f"{rule} {figures['accuracy']:.2f} (baseline {figures['majority_baseline']:.2f})"


def print_table(records: list[dict]) -> None:
    print(f"{'setting':30}{'base':>5}{'train min':>10}{'eval min':>9}{'accuracy':>9}{'baseline':>9}{'p':>9}"
          "  worst rule vs its baseline")
    for r in records:
        rep = r["report"]
        base = r.get("base_dtype", "fp32")  # records from before the bf16 base (train/precision.py) held it in fp32
        print(f"{r['tag']:30}{base:>5}{r['train_minutes']:10.1f}{r['eval_minutes']:9.1f}{rep['accuracy']:9.3f}"
              f"{rep['majority_baseline']:9.3f}{rep['p_value_vs_baseline']:9.1e}  {worst_rule(rep)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", choices=list(SWEEP), help="Run these settings (default: all).")
    parser.add_argument("--eval-rows", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--probe", action="store_true", help="Linear probe of the frozen base (see above).")
    parser.add_argument("--probe-rows", type=int, default=1600)
    parser.add_argument("--probe-rule", default="", help="probe one rule's rows only: a word of its policy rule, "
                        "e.g. Confidentiality (bench/results/demo_probe-<word>.json)")
    args = parser.parse_args()
    if args.probe:
        return run_probe(args.probe_rows, args.threads, args.probe_rule)
    kept = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
    for tag in args.only or list(SWEEP):
        record = run_setting(tag, args.eval_rows, args.threads)
        kept = [r for r in kept if r["tag"] != tag] + [record]
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(kept, indent=2) + "\n")
        print_table([record])
    print()
    print_table(sorted(kept, key=lambda r: list(SWEEP).index(r["tag"]) if r["tag"] in SWEEP else 99))
    return 0


if __name__ == "__main__":
    sys.exit(main())
