"""Save the adapter in stock PEFT format, and merge it into its base for one deployable artifact.

The merge is checked, not trusted: every merged weight must be finite and the merged model's logits must
match the adapter model's on a fixed batch (relative error reported; above 1e-4 in fp32 the stage fails).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from studio_core.errors import StudioError

MERGE_TOLERANCE = 1e-4


class MergeError(StudioError):
    """The merged model is not the adapter model: non-finite weights or logits that differ."""


def save_adapter(peft_model, out: Path, base_record: dict[str, Any], initial_adapter: Path | None = None) -> None:
    """`adapter_config.json` + `adapter_model.safetensors`, with the base model's reference and digests beside.

    `initial_adapter` (PiSSA, OLoRA: methods that rewrote the base at init) converts the trained adapter into a
    plain LoRA of twice the rank that applies to the original base, so stock peft loads it on the base model.
    """
    kwargs = {"path_initial_model_for_weight_conversion": str(initial_adapter)} if initial_adapter else {}
    peft_model.save_pretrained(str(out), safe_serialization=True, **kwargs)
    (out / "base_model.json").write_text(json.dumps(base_record, indent=2) + "\n")


def relative_error(reference, other) -> float:
    """max |a - b| / max |a|: scale-free, and zero only when the two agree everywhere."""
    return float((other - reference).abs().max() / reference.abs().max().clamp_min(1e-12))


def merge_adapter(load_base: Callable[[], Any], adapter_dir: Path, out: Path, tokenizer, batch: dict,
                  prepare: Callable[[Any], None] | None = None) -> dict[str, Any]:
    """Merge-and-unload into `out` (safetensors, config, tokenizer, chat template); returns the check's figures.

    `prepare(peft_model)` adjusts the loaded adapter model before both the reference and the merge (pruning:
    the masked update, so the merged model is checked against the masked trained model)."""
    import torch
    from peft import PeftModel

    model = PeftModel.from_pretrained(load_base(), str(adapter_dir)).eval()
    if prepare is not None:
        prepare(model)
    batch = {k: v for k, v in batch.items() if k != "labels"}  # logits only (AdaLoRA's loss needs training mode)
    with torch.no_grad():
        reference = model(**batch).logits.float()
        merged = model.merge_and_unload()
        logits = merged(**batch).logits.float()
    bad = [name for name, p in merged.state_dict().items() if not torch.isfinite(p).all()]
    if bad:
        raise MergeError(f"merged weights are not finite in {len(bad)} tensor(s), e.g. {bad[:3]}; not saved")
    error = relative_error(reference, logits)
    report = {"relative_error": error, "tolerance": MERGE_TOLERANCE, "batch_shape": list(batch["input_ids"].shape)}
    if error > MERGE_TOLERANCE:
        raise MergeError(f"merged logits differ from the adapter model's: relative error {error:.2e} > "
                         f"{MERGE_TOLERANCE:.0e}; the merged model was not saved")
    merged.save_pretrained(str(out), safe_serialization=True)
    tokenizer.save_pretrained(str(out))
    return report
