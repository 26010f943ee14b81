"""The label loss (`training.label_words`): for answers that carry a class label, learn the label against the batch.

Measured on the demo (bench/demo_readout.py, README): with the usual next-token loss, the label token's logits
move mostly by a shift shared by every row, so whole batches flip between one label and the other while the
decision stays at chance for a long plateau (about 180 steps of 8 rows on the demo's easiest rule). The same loop
with the label's logits centred over the batch, each row's logit for each label minus the batch's mean for it,
learnt that rule by step 45. A centred loss cannot be lowered by moving every row's label at once, so each step
goes into telling the rows apart. The ordinary loss on every answer token, the label's included, stays as it is
and sets the labels' overall level.

Each training row's label is the first label word its answer holds whole (its tokens with or without a leading
space); rows whose answer holds none take no label loss and are counted. The loss is taken over the rows
of each forward pass (per-device batch), weighted by `training.label_loss_weight`, and only in training:
validation loss stays the plain next-token loss, comparable with runs without it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from studio_core.data.tokenize import IGNORE_INDEX, TokenizedExample
from studio_core.errors import ConfigError, Problem

LABEL_KEYS = ("label_index", "label_alternatives", "label_target")


@dataclass(frozen=True)
class LabelTokens:
    """The label words' tokens in two forms (0: after a space, 1: bare, as at the start of an answer): `seqs[f][j]`
    word j's tokens in form f, `part[f]` the index of the token where the words part (often 0; 1 where a tokenizer
    makes the space a token of its own), `forms[f][j]` word j's token there, the one that decides."""

    words: tuple[str, ...]
    seqs: tuple[tuple[tuple[int, ...], ...], ...]
    part: tuple[int, ...]
    forms: tuple[tuple[int, ...], ...]

    def find(self, labels: list[int]) -> tuple[int, int, int] | None:
        """(position of the deciding token, form, word) of the first label word, whole, among the supervised tokens."""
        for position, token in enumerate(labels):
            if token == IGNORE_INDEX:
                continue
            for form, ids in enumerate(self.forms):
                if token not in ids:
                    continue
                word = ids.index(token)
                start, seq = position - self.part[form], self.seqs[form][word]
                if start >= 0 and tuple(labels[start:start + len(seq)]) == seq:
                    return position, form, word
        return None


def label_tokens(tokenizer, words: list[str]) -> LabelTokens:
    """The label words' tokens, with and without a leading space; refused, naming the words, where two of them
    cannot be told apart at the token where they part."""
    all_seqs, parts, forms = [], [], []
    for prefix in (" ", ""):
        seqs = [tuple(tokenizer(prefix + word, add_special_tokens=False)["input_ids"]) for word in words]
        common = 0
        while all(len(seq) > common for seq in seqs) and len({seq[common] for seq in seqs}) == 1:
            common += 1
        ids = tuple(seq[common] if len(seq) > common else None for seq in seqs)
        clash = [(a, b) for i, a in enumerate(words) for j, b in enumerate(words)
                 if i < j and (ids[i] is None or ids[j] is None or ids[i] == ids[j])]
        if clash:
            a, b = clash[0]
            raise ConfigError([Problem("training.label_words", f"'{a}' and '{b}' tokenize alike up to the token "
                                       "where the labels part, so the label loss cannot tell them apart; use words "
                                       "that differ from their first letters")])
        all_seqs.append(tuple(seqs))
        parts.append(common)
        forms.append(ids)
    return LabelTokens(tuple(words), tuple(all_seqs), tuple(parts), tuple(forms))


def count_labels(tokens: LabelTokens, examples: list[TokenizedExample]) -> dict[str, int]:
    """How many rows carry each label word, and how many carry none (`(none)`)."""
    counts: Counter = Counter()
    for example in examples:
        found = tokens.find(example.labels)
        counts[tokens.words[found[2]] if found else "(none)"] += 1
    return {word: counts[word] for word in (*tokens.words, "(none)")}


class LabelCollator:
    """Wraps the padding collator: adds, for the rows of the batch that carry a label, where the logits predicting
    it are (`label_index`, a row of the logits flattened over batch x positions, or over the kept positions when
    the collator keeps only answer logits), the labels' alternatives and which one is right."""

    def __init__(self, collator, tokens: LabelTokens):
        self.collator, self.tokens = collator, tokens
        self.answer_logits_only = getattr(collator, "answer_logits_only", False)

    def __call__(self, examples: list[TokenizedExample]) -> dict[str, Any]:
        import torch

        batch = self.collator(examples)
        width = batch["input_ids"].shape[1]
        kept = batch.get("logits_to_keep")
        rank = kept.flatten().cumsum(0) - 1 if kept is not None else None  # flat kept position -> logits row
        index, alternatives, target = [], [], []
        for row, example in enumerate(examples):
            found = self.tokens.find(example.labels)
            if found is None or found[0] == 0:
                continue
            position, form, word = found
            flat = row * width + position - 1  # the logits at the position before predict the label's token
            index.append(int(rank[flat]) if rank is not None else flat)
            alternatives.append(list(self.tokens.forms[form]))
            target.append(word)
        k = len(self.tokens.words)
        batch["label_index"] = torch.tensor(index, dtype=torch.long)
        batch["label_alternatives"] = torch.tensor(alternatives, dtype=torch.long).reshape(-1, k)
        batch["label_target"] = torch.tensor(target, dtype=torch.long)
        return batch


def centred_label_loss(logits, label_index, label_alternatives, label_target):
    """Cross-entropy over the label words of each row's label logits minus the batch's mean label logits."""
    import torch

    if label_index.numel() < 2:  # one row has nothing to be compared with: no loss, no gradient
        return logits.sum() * 0.0
    flat = logits.reshape(-1, logits.shape[-1])[label_index].float()
    chosen = flat.gather(1, label_alternatives)
    centred = chosen - chosen.mean(0, keepdim=True)
    return torch.nn.functional.cross_entropy(centred, label_target)


def label_trainer(trainer, weight: float):
    """The built Trainer, its `compute_loss` adding the centred label loss in training (a `TrainerParts.wrap`)."""
    plain = trainer.compute_loss

    def compute_loss(model, inputs, return_outputs=False, num_items_in_batch=None):
        picked = {key: inputs.pop(key) for key in LABEL_KEYS if key in inputs}
        if not model.training or not picked:
            return plain(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
        loss, outputs = plain(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        extra = weight * centred_label_loss(outputs.logits, **picked)
        # The plain loss comes already divided over the accumulated forward passes where the model normalises it by
        # the items of the whole logical batch; then this term is divided here, else the Trainer divides the sum.
        scaled = trainer.loss_is_scaled_for_ga if getattr(trainer, "loss_is_scaled_for_ga", None) is not None else (
            trainer.model_accepts_loss_kwargs and num_items_in_batch is not None)
        if scaled:
            extra = extra / trainer.current_gradient_accumulation_steps
        loss = loss + extra
        return (loss, outputs) if return_outputs else loss

    trainer.compute_loss = compute_loss
    return trainer


def trainer_parts(ctx):
    """The label loss as `TrainerParts` (None when `training.label_words` is empty); see `label_parts`."""
    if not ctx.config.training.label_words:
        return None
    return label_parts(ctx.config.training, ctx.tokenizer(), ctx.emit)


def label_parts(training, tokenizer, emit):
    """The collator that finds each row's label and the loss beside the plain one, for `training.label_words`.
    Refused, naming the field, where no training row holds a label."""
    from studio_core.train.trainer import TrainerParts

    words = training.label_words
    tokens = label_tokens(tokenizer, words)

    def wrap(trainer):
        counts = count_labels(tokens, trainer.train_dataset.examples)
        found = sum(v for k, v in counts.items() if k != "(none)")
        if found == 0:
            raise ConfigError([Problem("training.label_words", f"none of the {counts['(none)']} training rows' answers "
                                       f"holds any of {list(words)}; name the labels as the answers spell them")])
        trainer.data_collator = LabelCollator(trainer.data_collator, tokens)
        shares = ", ".join(f"{word} {counts[word]}" for word in words)
        emit("label_loss", f"label loss (weight {training.label_loss_weight:g}) on {found} of "
                           f"{found + counts['(none)']} training rows: {shares}; {counts['(none)']} rows hold no "
                           "label word and take only the plain loss", label_rows=counts)
        return label_trainer(trainer, training.label_loss_weight)

    return TrainerParts(wrap=[wrap])
