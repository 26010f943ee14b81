"""Validation loss / perplexity, greedy generation, and the task metric, for base and tuned.

"Base" is the same PEFT model with its adapter truly disabled (`disable_adapter()`), so the comparison
differs only by the adapter.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

from studio_core.data.demo import DEMO_REF_PREFIX, parse_verdict, verdict_accuracy
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


def generate(model, tokenizer, prompts: list[list[dict]], max_new_tokens: int, batch_size: int = 8) -> list[str]:
    """Greedy answers to chat prompts, left-padded in batches."""
    import torch

    model.eval()
    device = next(model.parameters()).device
    answers = []
    for start in range(0, len(prompts), batch_size):
        rows = [tokenizer.apply_chat_template(p, add_generation_prompt=True, tokenize=True, return_dict=False)
                for p in prompts[start: start + batch_size]]
        width = max(len(r) for r in rows)
        ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(r)) + list(r) for r in rows], device=device)
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=device)
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        answers += tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)
    return [a.strip() for a in answers]


def task_metric(data_path: str, predictions: list[str], references: list[str]) -> dict[str, Any]:
    """Verdict accuracy on the legal-audit demo; exact match (whitespace-normalised) on any other data."""
    if data_path == f"{DEMO_REF_PREFIX}legal-audit":
        parsed = sum(parse_verdict(p) is not None for p in predictions)
        return {"name": "verdict_accuracy", "value": verdict_accuracy(predictions, references),
                "parsed_fraction": parsed / max(1, len(predictions))}
    matches = sum(" ".join(p.split()) == " ".join(r.split()) for p, r in zip(predictions, references))
    return {"name": "exact_match", "value": matches / max(1, len(predictions))}


def run_evaluation(peft_model, tokenizer, data, cfg, precision: str) -> tuple[dict[str, Any], list[dict]]:
    """Base (adapter disabled) and tuned: validation loss/perplexity and the task metric.

    Returns the report and every task row's prompt, reference and both answers (the first `samples` of them are
    the side-by-side samples).
    """
    from studio_core.train.precision import autocast

    ev = cfg.evaluation
    device = next(peft_model.parameters()).device.type
    val = data.val_tokens[: ev.max_rows]
    prompts, references = zip(*(prompt_and_reference(c) for c in data.val[: ev.task_rows]))

    def measure() -> tuple[dict[str, Any], list[str]]:
        loss = validation_loss(peft_model, val, tokenizer.pad_token_id, cfg.training.per_device_batch_size,
                               lambda: autocast(precision, device))
        with autocast(precision, device):
            answers = generate(peft_model, tokenizer, list(prompts), ev.max_new_tokens)
        return {"val_loss": loss, "val_ppl": perplexity(loss),
                "task": task_metric(cfg.data.path, answers, list(references))}, answers

    with peft_model.disable_adapter():
        base, base_answers = measure()
    tuned, tuned_answers = measure()
    report = {
        "base": base, "tuned": tuned, "task_metric": tuned["task"]["name"],
        "delta": {"val_loss": tuned["val_loss"] - base["val_loss"],
                  "task": tuned["task"]["value"] - base["task"]["value"]},
        "rows": {"val_loss": len(val), "task": len(prompts)}, "max_new_tokens": ev.max_new_tokens,
    }
    answers = [{"prompt": p, "reference": r, "base": b, "tuned": t}
               for p, r, b, t in zip(prompts, references, base_answers, tuned_answers)]
    return report, answers
