"""Tokenized examples as a torch dataset, and the padding collator every training path shares."""

from __future__ import annotations

from studio_core.data.tokenize import IGNORE_INDEX, TokenizedExample


class TokenizedDataset:
    """A map-style dataset over tokenized examples (what Trainer and a DataLoader index)."""

    def __init__(self, examples: list[TokenizedExample]):
        self.examples = examples

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> TokenizedExample:
        return self.examples[index]


def collate(examples: list[TokenizedExample], pad_id: int, answer_logits_only: bool = False):
    """Right-padded tensors: input_ids, attention_mask, labels (IGNORE_INDEX on padding).

    `answer_logits_only`: also `logits_to_keep`, a (batch, seq) mask of the positions whose next token carries
    loss, and `shift_labels`, those next tokens, flattened. A transformers causal LM then projects only those
    positions onto the vocabulary and takes the loss from them: the same loss as from every position (the
    others are ignored by the loss anyway), without the LM head and the fp32 log-softmax over the prompt and
    the padding. See `answer_logits_work`.
    """
    import torch

    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e.input_ids)
        ids[row, :n] = torch.tensor(e.input_ids)
        labels[row, :n] = torch.tensor(e.labels)
        mask[row, :n] = 1
    batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    if answer_logits_only:
        shifted = torch.nn.functional.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)
        keep = shifted != IGNORE_INDEX
        if not keep.any():  # nothing supervised: keep one (ignored) position so no tensor is empty; the loss
            # is then 0/0, as it is with full logits (training's batches never get here: supervised_rows)
            keep[0, 0] = True
        batch["logits_to_keep"], batch["shift_labels"] = keep, shifted[keep]
    return batch


class Collator:
    """Picklable collator bound to a pad id (DataLoader workers need a top-level callable)."""

    def __init__(self, pad_id: int, answer_logits_only: bool = False):
        self.pad_id, self.answer_logits_only = pad_id, answer_logits_only

    def __call__(self, examples: list[TokenizedExample]):
        return collate(examples, self.pad_id, self.answer_logits_only)


def answer_logits_work(peft_model, examples: list[TokenizedExample], pad_id: int) -> bool:
    """Whether `collate(..., answer_logits_only=True)` gives this model the same loss as full logits.

    Checked, not assumed: a model's forward must take a (batch, seq) boolean `logits_to_keep` and pass
    `shift_labels` to its loss (transformers' own causal LMs do; custom code may not), and prompt-learning
    methods prepend virtual tokens, which moves every position. One no-grad forward each way on two rows.
    """
    import inspect

    import torch

    config = getattr(peft_model, "peft_config", {}).get("default")
    if config is not None and getattr(config, "is_prompt_learning", False):
        return False
    base = peft_model.get_base_model() if hasattr(peft_model, "get_base_model") else peft_model
    if "logits_to_keep" not in inspect.signature(base.forward).parameters:
        return False
    rows = [e for e in examples if e.supervised_tokens][:2]
    if not rows:
        return False
    device = next(peft_model.parameters()).device
    was_training = peft_model.training
    peft_model.eval()
    try:
        with torch.no_grad():
            full = collate(rows, pad_id)
            sliced = collate(rows, pad_id, answer_logits_only=True)
            loss_full = peft_model(**{k: v.to(device) for k, v in full.items()}).loss
            out = peft_model(**{k: v.to(device) for k, v in sliced.items()})
    except (TypeError, ValueError, RuntimeError, IndexError):
        return False
    finally:
        peft_model.train(was_training)
    flat = out.logits.dim() == 2 and out.logits.shape[0] == int(sliced["logits_to_keep"].sum())
    return flat and out.loss is not None and bool(torch.allclose(out.loss.float(), loss_full.float(), rtol=1e-4,
                                                                 atol=1e-5))


def supervised_rows(data) -> tuple[list, list]:
    """The train and validation rows of prepared data that carry loss: a row whose assistant tokens were all
    truncated away has nothing to learn from (and a batch of them is NaN)."""
    return ([e for e in data.train_tokens if e.supervised_tokens], [e for e in data.val_tokens if e.supervised_tokens])
