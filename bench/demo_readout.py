"""How long until LoRA learns one demo rule's verdict? A plain loop on the verdict token alone, scored as it goes.

Not the studio's training path, on purpose. It uses peft LoRA (r 16, alpha 32, dropout 0, the default target
modules) on the embedded model, bf16 autocast where the machine has it, and AdamW at a constant rate. Each row is
cut at "Verdict:", and the loss is the next token's cross-entropy: " COMP" (COMPLIANT) or " NON" (NON-COMPLIANT).
So neither the Trainer, the collator, the schedule nor the other answer tokens take part. Every `--every` steps it
prints the accuracy on held-out rows of the same rule and on training rows, by the logit of " COMP" against
" NON".

Measured on this 2-core machine with the same loop as a scratch script (bench/README.md), `--rule Confidentiality
--lr 2e-4 --steps 240 --every 30`:
the verdict stays at chance for about 180 steps, then reaches 0.80 held-out at step 210 and 1.00 at 240. A run that
stops in that plateau looks as if it cannot learn the rule. `--rule all` trains on every rule's rows (2,880, 120
held out): at the same settings, held-out 0.44-0.59 to step 210 and 0.658 at 240 (majority 0.583), training rows 0.525.

    .venv/bin/python bench/demo_readout.py [--rule Confidentiality | all] [--steps 240] [--batch 8] [--lr 2e-4]
                                           [--every 30] [--balanced] [--threads 2]

Prints one JSON line per evaluation; writes bench/results/demo_readout-<rule>.json.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HELD_OUT = 120


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rule", default="Confidentiality", help="a word of the rule's policy text, or 'all'")
    parser.add_argument("--steps", type=int, default=240)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--every", type=int, default=30)
    parser.add_argument("--balanced", action="store_true", help="half of each batch of either verdict")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT))
    import torch
    from peft import LoraConfig, get_peft_model

    from studio_core.config import RunConfig
    from studio_core.data.demo import generate_legal_audit
    from studio_core.data.load import load_records_as_conversations
    from studio_core.data.tokenize import tokenize_conversation
    from studio_core.hardware import best_precision, hardware_profile
    from studio_core.models.resolve import load_model, load_tokenizer, resolve_model
    from studio_core.models.targets import default_target_modules
    from studio_core.runs import model_cache_dir, studio_home
    from studio_core.train.precision import autocast

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    resolved = resolve_model(RunConfig().model.ref, model_cache_dir(studio_home()))  # the embedded model
    tok = load_tokenizer(resolved)
    comp, non = tok(" COMP")["input_ids"][0], tok(" NON")["input_ids"][0]
    records = [r for r in generate_legal_audit(3000, seed=1234) if args.rule == "all" or args.rule in r["instruction"]]
    if len(records) < HELD_OUT + args.batch:
        raise SystemExit(f"only {len(records)} rows of 3,000 name {args.rule!r}: pick a word of one rule's text")
    items = []  # (prompt ids up to and including "Verdict:", the verdict is COMPLIANT)
    for conv in load_records_as_conversations(records, "alpaca").rows:
        example = tokenize_conversation(tok, conv, 256)
        pos = next(i for i, label in enumerate(example.labels) if label in (comp, non))
        items.append((example.input_ids[:pos], example.labels[pos] == comp))
    test, train = items[:HELD_OUT], items[HELD_OUT:]
    model = load_model(resolved)
    peft_model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0,
                                                  target_modules=default_target_modules(model)))
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=args.lr,
                                  weight_decay=0.0)
    precision = best_precision(hardware_profile())

    def last_logits(chunk):
        """Left-padded, so the last position of every row is its "Verdict:"; only that position's logits."""
        width = max(len(ids) for ids, _ in chunk)
        ids = torch.full((len(chunk), width), tok.pad_token_id)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, (seq, _) in enumerate(chunk):
            ids[row, width - len(seq):], mask[row, width - len(seq):] = torch.tensor(seq), 1
        with autocast(precision, "cpu"):
            out = peft_model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(1) - 1).clamp(min=0),
                             logits_to_keep=1)
        return out.logits[:, -1, :].float()

    def accuracy(split) -> float:
        peft_model.eval()
        right = 0
        with torch.no_grad():
            for i in range(0, len(split), 24):
                chunk = split[i:i + 24]
                logits = last_logits(chunk)
                right += sum(int(bool(d > 0) == gold) for d, (_, gold) in zip(logits[:, comp] - logits[:, non], chunk))
        peft_model.train()
        return right / len(split)

    rng, start, lines = random.Random(0), time.perf_counter(), []
    positives, negatives = [x for x in train if x[1]], [x for x in train if not x[1]]

    def report(step: int, loss: float | None) -> None:
        line = {"step": step, "loss": loss, "minutes": round((time.perf_counter() - start) / 60, 2),
                "held_out_accuracy": round(accuracy(test), 3), "train_accuracy": round(accuracy(train[:80]), 3)}
        lines.append(line)
        print(json.dumps(line), flush=True)

    print(json.dumps({"rule": args.rule, "train_rows": len(train), "held_out_rows": len(test),
                      "held_out_majority": round(max(sum(g for _, g in test), sum(not g for _, g in test)) / len(test),
                                                 3), "precision": precision}), flush=True)
    report(0, None)
    for step in range(1, args.steps + 1):
        chunk = (rng.sample(positives, args.batch // 2) + rng.sample(negatives, args.batch - args.batch // 2)
                 if args.balanced else rng.sample(train, args.batch))
        targets = torch.tensor([comp if gold else non for _, gold in chunk])
        loss = torch.nn.functional.cross_entropy(last_logits(chunk), targets)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if step % args.every == 0 or step == args.steps:
            report(step, round(loss.item(), 4))
    out = ROOT / "bench" / "results" / f"demo_readout-{args.rule.lower()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "curve": lines}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
