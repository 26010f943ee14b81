"""Perplexity on general text that is not the training task: a small public-domain sample shipped with the
studio (`studio_core/data/general_text/`, source and licence in its README)."""

from __future__ import annotations

from pathlib import Path

GENERAL_TEXT = Path(__file__).resolve().parent.parent / "data" / "general_text" / "sqlite3_h_prose.txt"


def general_text_perplexity(model, tokenizer, window: int = 128, max_windows: int = 32) -> float:
    """Perplexity on the shipped public-domain text sample (`data/general_text/`), windows of `window` tokens."""
    import math

    import torch

    ids = tokenizer(GENERAL_TEXT.read_text(encoding="utf-8"), add_special_tokens=False)["input_ids"]
    chunks = [ids[i:i + window] for i in range(0, len(ids) - 1, window)][:max_windows]
    device = next(model.parameters()).device
    total, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for chunk in (c for c in chunks if len(c) > 1):
            x = torch.tensor([chunk], device=device)
            # the last len(chunk) positions: prompt tuning puts its virtual tokens' logits first
            logits = model(input_ids=x).logits[0, -len(chunk):-1].float()
            total += float(torch.nn.functional.cross_entropy(logits, x[0, 1:], reduction="sum"))
            count += len(chunk) - 1
    loss = total / max(1, count)
    return math.exp(loss) if loss < 50 else float("inf")


def base_quality(model, tokenizer, val_tokens: list) -> dict[str, float]:
    """Validation loss and perplexity on `val_tokens`, and general-text perplexity, of `model` as it is now."""
    from studio_core.evaluate.basic import perplexity, validation_loss

    loss = validation_loss(model, val_tokens, tokenizer.pad_token_id, batch_size=4)
    return {"val_loss": loss, "val_perplexity": perplexity(loss),
            "general_text_perplexity": general_text_perplexity(model, tokenizer)}
