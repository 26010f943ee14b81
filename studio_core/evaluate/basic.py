"""Step 8, Evaluation: loss, perplexity and generation metrics for base and tuned, with the difference.

Measured on the validation split and, when `evaluation.test_path` is set, on a separate test file: loss and
perplexity over the supervised tokens, then greedy answers scored by exact match, token F1 and ROUGE-L
(`metrics.py`), plus verdict accuracy on the legal-audit demo. "Base" is the same PEFT model with its adapter
truly disabled (`disable_adapter()`), so the comparison differs only by the adapter. The side-by-side samples
are the user's own prompts (`evaluation.prompts`) first, then held-out rows; the overfitting verdict reads the
training curves (`curves.py`).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from studio_core.data.demo import DEMO_REF_PREFIX, parse_verdict, verdict_accuracy
from studio_core.evaluate.curves import overfitting_verdict
from studio_core.evaluate.metrics import exact_match, generation_metrics
from studio_core.train.batching import collate


def validation_loss(model, examples, pad_id: int, batch_size: int, autocast=contextlib.nullcontext) -> float:
    """Mean loss per supervised token over `examples` (not a mean of batch means)."""
    import torch

    total, count = 0.0, 0
    model.eval()
    device = next(model.parameters()).device
    with torch.no_grad():
        for start in range(0, len(examples), batch_size):
            batch = collate(examples[start: start + batch_size], pad_id)
            batch = {k: v.to(device) for k, v in batch.items()}
            with autocast():
                logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            logits = logits[:, -batch["input_ids"].size(1):]  # prompt tuning prepends its virtual tokens' logits
            labels = batch["labels"][:, 1:]
            losses = torch.nn.functional.cross_entropy(
                logits[:, :-1].float().reshape(-1, logits.size(-1)), labels.reshape(-1),
                ignore_index=-100, reduction="sum",
            )
            total += float(losses)
            count += int((labels != -100).sum())
    return total / max(1, count)


def perplexity(loss: float) -> float:
    return math.exp(loss) if loss < 50 else float("inf")


def prompt_and_reference(conversation: list[dict]) -> tuple[list[dict], str]:
    """The conversation up to its last assistant turn (the prompt) and that turn (the reference)."""
    last = max(i for i, m in enumerate(conversation) if m["role"] == "assistant")
    return conversation[:last], conversation[last]["content"]


GENERATION_BATCH_TOKENS = 8192  # the most prompt tokens (rows x longest prompt) one generation batch holds


def generation_batches(lengths: list[int], batch_size: int, max_tokens: int = GENERATION_BATCH_TOKENS):
    """Consecutive (start, end) batches of at most `batch_size` prompts whose rows x longest prompt stays within
    `max_tokens` (a prompt longer than that goes alone)."""
    start = 0
    while start < len(lengths):
        end, longest = start, 0
        while end < len(lengths) and end - start < batch_size:
            if end > start and (end - start + 1) * max(longest, lengths[end]) > max_tokens:
                break
            longest = max(longest, lengths[end])
            end += 1
        yield start, end
        start = end


def generate(model, tokenizer, prompts: list[list[dict]], max_new_tokens: int, batch_size: int = 8,
             on_batch: Callable[[int], None] | None = None) -> list[str]:
    """Greedy answers to chat prompts, left-padded in `generation_batches`; `on_batch(n)` after each batch of n
    answers."""
    import torch

    model.eval()
    device = next(model.parameters()).device
    answers = []
    all_rows = [_prompt_ids(tokenizer, p) for p in prompts]
    for start, end in generation_batches([len(r) for r in all_rows], batch_size):
        rows = all_rows[start:end]
        width = max(len(r) for r in rows)
        ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(r)) + list(r) for r in rows], device=device)
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=device)
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        answers += tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)
        if on_batch is not None:
            on_batch(len(rows))
    return [a.strip() for a in answers]


def _prompt_ids(tokenizer, prompt: list[dict]) -> list[int]:
    """A chat prompt's ids, tools and calls rendered as training rendered them (data/tokenize.py)."""
    from studio_core.data.tokenize import chat_view, has_tools, supports_tools

    messages, tools = chat_view(prompt, has_tools(prompt) and supports_tools(tokenizer))
    return tokenizer.apply_chat_template(messages, tools=tools, add_generation_prompt=True, tokenize=True,
                                         return_dict=False)


def task_metric(data_path: str, predictions: list[str], references: list[str],
                prompts: list[str] | None = None) -> dict[str, Any]:
    """Verdict accuracy on the legal-audit demo (with its majority baseline, per-rule figures and confusion
    matrix when the prompts are given: evaluate/verdicts.py); exact match (normalised, see metrics.py) on any
    other data."""
    if data_path == f"{DEMO_REF_PREFIX}legal-audit":
        parsed = sum(parse_verdict(p) is not None for p in predictions)
        metric = {"name": "verdict_accuracy", "value": verdict_accuracy(predictions, references),
                  "parsed_fraction": parsed / max(1, len(predictions))}
        if prompts is not None:
            from studio_core.evaluate.verdicts import verdict_report

            metric["verdicts"] = verdict_report(prompts, predictions, references)
        return metric
    matches = sum(exact_match(p, r) for p, r in zip(predictions, references))
    return {"name": "exact_match", "value": matches / max(1, len(predictions))}


def _user_text(prompt: list[dict]) -> str:
    return "\n".join(m["content"] for m in prompt if m["role"] == "user" and isinstance(m.get("content"), str))


@dataclass
class EvalSplit:
    """Rows to measure: tokenized examples for the loss, prompts and references for the generation metrics."""

    name: str
    tokens: list
    prompts: list[list[dict]]
    references: list[str]


def make_split(name: str, rows: list[list[dict]], tokens: list, max_rows: int, task_rows: int) -> EvalSplit:
    rows = [c for c in rows if any(m["role"] == "assistant" for m in c)]  # raw-text rows have no answer
    prompts, references = zip(*(prompt_and_reference(c) for c in rows[:task_rows])) if rows else ((), ())
    return EvalSplit(name, tokens[:max_rows], list(prompts), list(references))


def load_test_split(cfg, tokenizer) -> EvalSplit:
    """`evaluation.test_path` read and tokenized as the data step reads and tokenizes `data.path`."""
    from studio_core.data.load import load_conversations
    from studio_core.data.tokenize import tokenize_conversation

    data_cfg, ev = cfg.data, cfg.evaluation
    loaded = load_conversations(ev.test_path, "auto", data_cfg.row_schema, data_cfg.columns, data_cfg.on_bad_rows)
    rows = loaded.rows[: max(ev.max_rows, ev.task_rows)]
    tokens = [tokenize_conversation(tokenizer, r, data_cfg.max_length, data_cfg.train_on) for r in rows[: ev.max_rows]]
    return make_split("test", rows, tokens, ev.max_rows, ev.task_rows)


def measure_split(model, tokenizer, split: EvalSplit, cfg, precision: str,
                  on_batch: Callable[[int], None] | None = None) -> tuple[dict[str, Any], list[str]]:
    """Loss, perplexity, task metric and generation metrics on one split, plus the answers."""
    from studio_core.train.precision import autocast

    device = next(model.parameters()).device.type
    loss = validation_loss(model, split.tokens, tokenizer.pad_token_id, cfg.training.per_device_batch_size,
                           lambda: autocast(precision, device))
    with autocast(precision, device):
        answers = generate(model, tokenizer, split.prompts, cfg.evaluation.max_new_tokens,
                           batch_size=cfg.evaluation.batch_size, on_batch=on_batch)
    return {"loss": loss, "ppl": perplexity(loss), "task": task_metric(cfg.data.path, answers, split.references,
                                                           [_user_text(p) for p in split.prompts]),
            "generation": generation_metrics(answers, split.references, cfg.evaluation.metrics)}, answers


def measure_model(model, tokenizer, splits: list[EvalSplit], user_prompts: list, cfg, precision: str,
                  on_batch: Callable[[int], None] | None = None):
    """Every split measured, and the user's prompts answered: (figures per split, answers per split)."""
    from studio_core.train.precision import autocast

    figures, answers = {}, {}
    for split in splits:
        figures[split.name], answers[split.name] = measure_split(model, tokenizer, split, cfg, precision, on_batch)
    with autocast(precision, next(model.parameters()).device.type):
        answers["prompts"] = generate(model, tokenizer, user_prompts, cfg.evaluation.max_new_tokens,
                                      batch_size=cfg.evaluation.batch_size, on_batch=on_batch)
    return figures, answers


def _side(figures: dict[str, dict]) -> dict[str, Any]:
    """One model's report: the validation figures at top level (as the first version had them), test nested."""
    val = figures["val"]
    side = {"val_loss": val["loss"], "val_ppl": val["ppl"], "task": val["task"], "generation": val["generation"]}
    if "test" in figures:
        side["test"] = figures["test"]
    return side


def _delta(base: dict[str, Any], tuned: dict[str, Any]) -> dict[str, Any]:
    """Tuned minus base on one split: loss, task metric and each generation metric."""
    return {"loss": tuned["loss"] - base["loss"], "task": tuned["task"]["value"] - base["task"]["value"],
            "generation": {k: tuned["generation"][k] - v for k, v in base["generation"].items()}}


def _row_counts(splits: list[EvalSplit], prompts: int) -> dict[str, Any]:
    """Rows per split, plus the first version's top-level val_loss/task counts (the stage's message reads them)."""
    counts: dict[str, Any] = {s.name: {"loss": len(s.tokens), "task": len(s.prompts)} for s in splits}
    return {"val_loss": counts["val"]["loss"], "task": counts["val"]["task"], "prompts": prompts, **counts}


def _answer_rows(splits, user_prompts, base_answers, tuned_answers) -> list[dict]:
    """User prompts first (they are always among the saved samples), then each split's held-out rows."""
    rows = [{"split": "prompts", "prompt": p, "reference": None, "base": b, "tuned": t}
            for p, b, t in zip(user_prompts, base_answers["prompts"], tuned_answers["prompts"])]
    for split in splits:
        rows += [{"split": split.name, "prompt": p, "reference": r, "base": b, "tuned": t} for p, r, b, t in
                 zip(split.prompts, split.references, base_answers[split.name], tuned_answers[split.name])]
    return rows


GENERAL_TEXT_NAME = "sqlite3.h prose, public domain (studio_core/data/general_text/)"


def _general_text_ppl(model, tokenizer, precision: str) -> float:
    """Perplexity on general text that is not the task: what the tuning costs the model's plain language."""
    from studio_core.evaluate.general_text import general_text_perplexity
    from studio_core.train.precision import autocast

    with autocast(precision, next(model.parameters()).device.type):
        return general_text_perplexity(model, tokenizer)


def run_evaluation(peft_model, tokenizer, data, cfg, precision: str, metrics: list[dict] | None = None,
                   progress: Callable[[int, int], None] | None = None) -> tuple[dict[str, Any], list[dict]]:
    """Base (adapter disabled) and tuned on the validation split and the optional test file, with the difference,
    and each one's perplexity on general text that is not the task (does the tuned model forget?).

    `metrics` are the run's metrics.jsonl records; when given, the report carries the overfitting verdict.
    `progress(done, total)` is called after each batch of answers (base and tuned together make `total`).
    Returns the report and every answered row (user prompts first, then held-out rows with their reference):
    the first `evaluation.samples` of them are the side-by-side samples.
    """
    from peft.helpers import DoraCaching

    ev = cfg.evaluation
    splits = [make_split("val", data.val, data.val_tokens, ev.max_rows, ev.task_rows)]
    if ev.test_path:
        splits.append(load_test_split(cfg, tokenizer))
    user_prompts = [[{"role": "user", "content": p}] for p in ev.prompts]
    total = 2 * (sum(len(s.prompts) for s in splits) + len(user_prompts))  # base and tuned each answer them all
    done = [0]

    def on_batch(n: int) -> None:
        done[0] += n
        if progress is not None:
            progress(done[0], total)

    with peft_model.disable_adapter():
        base, base_answers = measure_model(peft_model, tokenizer, splits, user_prompts, cfg, precision, on_batch)
        base_general = _general_text_ppl(peft_model, tokenizer, precision)
    with DoraCaching():  # DoRA recomputes each weight's norm at every decoding step unless cached (eval mode only)
        tuned, tuned_answers = measure_model(peft_model, tokenizer, splits, user_prompts, cfg, precision, on_batch)
        tuned_general = _general_text_ppl(peft_model, tokenizer, precision)
    val_delta = _delta(base["val"], tuned["val"])
    delta = {"val_loss": val_delta.pop("loss"), **val_delta}
    if ev.test_path:
        delta["test"] = _delta(base["test"], tuned["test"])
    report = {
        "base": _side(base), "tuned": _side(tuned), "delta": delta, "task_metric": tuned["val"]["task"]["name"],
        "generation_metrics": list(ev.metrics), "test_path": ev.test_path, "max_new_tokens": ev.max_new_tokens,
        "rows": _row_counts(splits, len(ev.prompts)),
        "general_text": {"base_ppl": base_general, "tuned_ppl": tuned_general, "ratio": tuned_general / base_general,
                         "text": GENERAL_TEXT_NAME},
    }
    if metrics is not None:
        report["overfitting"] = overfitting_verdict(metrics)
    return report, _answer_rows(splits, ev.prompts, base_answers, tuned_answers)
