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
(Those two ran in bf16 on a CPU that has it.)

`--loss` says what the plateau is made of. Measured 2026-12-02 on an AVX2 CPU without bf16 (so fp32), `--rule
Confidentiality --balanced --steps 60 --every 15`, the same rows, seed and batches for each; held-out accuracy / AUC
at steps 15, 30, 45, 60 (0.483 / 0.65 at step 0):
- `vocab` (cross-entropy over the vocabulary, as fine-tuning has it): 0.53/0.50, 0.43/0.43, 0.42/0.48, 0.56/0.61;
- `margin` (logistic loss on logit(' COMP') - logit(' NON')): 0.52/0.50, 0.52/0.48, 0.53/0.57, **0.96/1.00**;
- `centred` (the same, each row's margin minus the batch's mean): 0.48/0.55, 0.69/0.73, **0.90/1.00**, **1.00/1.00**.
The decision is learnt within 60 steps once the loss is on the two labels alone, a little sooner centred; with the
whole vocabulary's cross-entropy it is still at chance there. `training.label_words` adds the centred loss to a run,
beside the plain one (studio_core/train/labels.py). On every rule at once it is not enough: `--rule all --loss
centred --steps 90 --every 30` (2,880 training rows, 120 held out, majority 0.583; fp32, 11 minutes) gave held-out
accuracy 0.45, 0.42, 0.42, 0.45 and AUC 0.53, 0.56, 0.62, 0.52 at steps 0, 30, 60, 90.

What holds the eight rules back is the offset between rules. Measured 2026-12-02 (bf16 CPU), `--rule all --answer
reason_first --lr 5e-4`, 16 rows a step, held-out AUC at steps 0/15/30/45/60:
- `--loss centred --batch 16` (balanced, centred over the batch): 0.51/0.56/0.64/0.58/0.56;
- `--loss paired` (one row of either verdict per rule, centred over each rule's pair): 0.51/0.51/0.61/0.72/0.83.
Run on to `--steps 120 --every 30` (17 minutes), `paired` gave held-out AUC 0.61/0.83/0.92/0.96 at steps 30/60/90/120,
the mean of the rules' own AUCs 0.70/0.91/0.97/0.985, accuracy at the threshold fitted on training rows 0.61/0.69/
0.81/0.85 (majority 0.583). The centred loss's own margin 0 has no meaning (it leaves the overall level free: 0.73
there at step 120); in a run the plain loss sets it. So the decision of all eight rules is learnt once each step
compares rows of the same rule; a batch that mixes rules is mostly told apart by rule.

    .venv/bin/python bench/demo_readout.py [--rule Confidentiality | all] [--steps 240] [--batch 8] [--lr 2e-4]
                                           [--every 30] [--balanced] [--loss vocab|margin|centred|paired]
                                           [--answer verdict_first|reason_first|reason_compare] [--threads 2]

Prints one JSON line per evaluation (accuracy at margin 0; at the threshold that best splits 80 training rows, which
says whether the rows are ranked right even where the overall bias is off; held-out AUC, and its mean over the rules'
own AUCs); writes bench/results/demo_readout-<rule>-<loss>-<answer>.json.
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
    sys.path.insert(0, str(ROOT))
    from studio_core.data.demo import ANSWER_FORMATS, DEFAULT_ANSWER, generate_legal_audit, rule_of

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rule", default="Confidentiality", help="a word of the rule's policy text, or 'all'")
    parser.add_argument("--steps", type=int, default=240)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--every", type=int, default=30)
    parser.add_argument("--balanced", action="store_true", help="half of each batch of either verdict")
    parser.add_argument("--loss", choices=("vocab", "margin", "centred", "paired"), default="vocab",
                        help="vocab: cross-entropy over the whole vocabulary (the default, as fine-tuning has it); "
                        "margin: logistic loss on the margin logit(' COMP') - logit(' NON'); centred: the same on each "
                        "row's margin minus the batch's mean margin, so no step is rewarded for moving every row's "
                        "verdict at once (implies --balanced); paired: each batch one row of either verdict per "
                        "rule (--batch is ignored), each margin centred over its own rule's pair, so neither a "
                        "shift shared by all rows nor one shared by a rule's rows lowers it")
    parser.add_argument("--answer", choices=ANSWER_FORMATS, default=DEFAULT_ANSWER,
                        help="the demo's answer format (studio_core.data.demo.ANSWER_FORMATS); with the reason first, "
                        "each row is cut at \"Verdict:\" after the reference reason, as the model sees it once it "
                        "has written the reason")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    args.balanced = args.balanced or args.loss == "centred"

    import torch
    from peft import LoraConfig, get_peft_model

    from studio_core.config import RunConfig
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
    records = [r for r in generate_legal_audit(3000, seed=1234, answer=args.answer)
               if args.rule == "all" or args.rule in r["instruction"]]
    if len(records) < HELD_OUT + args.batch:
        raise SystemExit(f"only {len(records)} rows of 3,000 name {args.rule!r}: pick a word of one rule's text")
    items = []  # (prompt ids up to and including "Verdict:", the verdict is COMPLIANT)
    rules = [rule_of(r["instruction"]) for r in records]
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

    def margins(split) -> list[tuple[float, bool]]:
        """(logit(' COMP') - logit(' NON'), the verdict is COMPLIANT) per row."""
        peft_model.eval()
        out = []
        with torch.no_grad():
            for i in range(0, len(split), 24):
                chunk = split[i:i + 24]
                logits = last_logits(chunk)
                out += [(float(d), gold) for d, (_, gold) in zip(logits[:, comp] - logits[:, non], chunk)]
        peft_model.train()
        return out

    rng, start, lines = random.Random(0), time.perf_counter(), []
    positives, negatives = [x for x in train if x[1]], [x for x in train if not x[1]]
    by_rule: dict[str, tuple[list, list]] = {}
    for item, rule in zip(train, rules[HELD_OUT:]):
        by_rule.setdefault(rule, ([], []))[0 if item[1] else 1].append(item)

    def report(step: int, loss: float | None) -> None:
        held, seen = margins(test), margins(train[:80])
        # The threshold that best splits the training rows' margins: accuracy at it says whether the rows are ranked
        # right even where the verdict's overall bias is off (as it is, by construction, under --loss centred).
        cut = max((m for m, _ in seen), key=lambda t: sum((m >= t) == g for m, g in seen))
        line = {"step": step, "loss": loss, "minutes": round((time.perf_counter() - start) / 60, 2),
                "held_out_accuracy": round(_accuracy(held, 0.0), 3), "train_accuracy": round(_accuracy(seen, 0.0), 3),
                "held_out_accuracy_calibrated": round(_accuracy(held, cut), 3), "held_out_auc": round(_auc(held), 3),
                "held_out_auc_within_rule": round(_within_rule_auc(held, rules[:HELD_OUT]), 3)}
        lines.append(line)
        print(json.dumps(line), flush=True)

    print(json.dumps({"rule": args.rule, "train_rows": len(train), "held_out_rows": len(test),
                      "held_out_majority": round(max(sum(g for _, g in test), sum(not g for _, g in test)) / len(test),
                                                 3), "precision": precision}), flush=True)
    report(0, None)
    for step in range(1, args.steps + 1):
        if args.loss == "paired":
            chunk = [x for pos, neg in by_rule.values() for x in (rng.choice(pos), rng.choice(neg))]
        else:
            chunk = (rng.sample(positives, args.batch // 2) + rng.sample(negatives, args.batch - args.batch // 2)
                     if args.balanced else rng.sample(train, args.batch))
        logits = last_logits(chunk)
        if args.loss == "vocab":
            loss = torch.nn.functional.cross_entropy(logits, torch.tensor([comp if gold else non for _, gold in chunk]))
        else:
            margin = logits[:, comp] - logits[:, non]
            if args.loss == "centred":
                margin = margin - margin.mean()
            elif args.loss == "paired":  # rows 2i, 2i+1: one rule's COMPLIANT and NON-COMPLIANT row
                margin = margin - margin.view(-1, 2).mean(1).repeat_interleave(2)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                margin, torch.tensor([float(gold) for _, gold in chunk]))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if step % args.every == 0 or step == args.steps:
            report(step, round(loss.item(), 4))
    out = ROOT / "bench" / "results" / f"demo_readout-{args.rule.lower()}-{args.loss}-{args.answer}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "curve": lines}, indent=2) + "\n")
    return 0


def _accuracy(rows: list[tuple[float, bool]], threshold: float) -> float:
    return sum((m >= threshold) == gold for m, gold in rows) / len(rows)


def _within_rule_auc(rows: list[tuple[float, bool]], rules: list[str]) -> float:
    """The mean over rules of the AUC among one rule's rows: whether each rule's rows are ranked right, whatever the
    offset between rules (which a loss centred per rule leaves free)."""
    groups: dict[str, list[tuple[float, bool]]] = {}
    for row, rule in zip(rows, rules):
        groups.setdefault(rule, []).append(row)
    aucs = [_auc(g) for g in groups.values() if 0 < sum(gold for _, gold in g) < len(g)]
    return sum(aucs) / len(aucs)


def _auc(rows: list[tuple[float, bool]]) -> float:
    """The chance that a COMPLIANT row's margin is above a NON-COMPLIANT one's (ties count half)."""
    pos, neg = [m for m, g in rows if g], [m for m, g in rows if not g]
    return sum((p > n) + 0.5 * (p == n) for p in pos for n in neg) / max(len(pos) * len(neg), 1)


if __name__ == "__main__":
    raise SystemExit(main())
