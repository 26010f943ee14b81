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

Centred over a whole pass, the loss has a cheaper way down than the decision where the rows fall into groups
that differ in their labels' share or wording (the demo's eight policy rules): it learns to tell the groups apart.
Measured with the same rows, rate and 16 rows a step (bench/demo_readout.py, all eight rules): centred over the
batch, held-out AUC 0.56 at step 60; one row of either verdict from each rule, centred within each rule, 0.83 at
step 60 and 0.96 at step 120. `training.label_group` does the latter: a pattern over the prompt names each row's
group, `GroupedLabelSampler` fills every pass with whole groups' tuples (one row of each label word), and the
centring is taken within each group of the pass.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

from studio_core.data.tokenize import IGNORE_INDEX, TokenizedExample
from studio_core.errors import ConfigError, Problem

LABEL_KEYS = ("label_index", "label_alternatives", "label_target", "label_group")


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


def count_labels(tokens: LabelTokens, found: list[tuple[int, int, int] | None]) -> dict[str, int]:
    """How many rows carry each label word, and how many carry none (`(none)`); `found`: each row's
    `tokens.find(example.labels)`."""
    counts = Counter(tokens.words[f[2]] if f else "(none)" for f in found)
    return {word: counts[word] for word in (*tokens.words, "(none)")}


class LabelCollator:
    """Wraps the padding collator: adds, for the rows of the batch that carry a label, where the logits predicting
    it are (`label_index`, a row of the logits flattened over batch x positions, or over the kept positions when
    the collator keeps only answer logits), the labels' alternatives and which one is right."""

    def __init__(self, collator, tokens: LabelTokens, groups: dict[int, int] | None = None):
        """`groups`: each grouped example's group, keyed by `id(example)` (`training.label_group`); then the batch
        also holds `label_group`, and rows outside every group take no label loss."""
        self.collator, self.tokens, self.groups = collator, tokens, groups
        self.answer_logits_only = getattr(collator, "answer_logits_only", False)

    def __call__(self, examples: list[TokenizedExample]) -> dict[str, Any]:
        import torch

        batch = self.collator(examples)
        width = batch["input_ids"].shape[1]
        kept = batch.get("logits_to_keep")
        rank = kept.flatten().cumsum(0) - 1 if kept is not None else None  # flat kept position -> logits row
        index, alternatives, target, group = [], [], [], []
        for row, example in enumerate(examples):
            found = self.tokens.find(example.labels)
            if found is None or found[0] == 0 or (self.groups is not None and id(example) not in self.groups):
                continue
            position, form, word = found
            flat = row * width + position - 1  # the logits at the position before predict the label's token
            index.append(int(rank[flat]) if rank is not None else flat)
            alternatives.append(list(self.tokens.forms[form]))
            target.append(word)
            group.append(self.groups[id(example)] if self.groups is not None else 0)
        k = len(self.tokens.words)
        batch["label_index"] = torch.tensor(index, dtype=torch.long)
        batch["label_alternatives"] = torch.tensor(alternatives, dtype=torch.long).reshape(-1, k)
        batch["label_target"] = torch.tensor(target, dtype=torch.long)
        if self.groups is not None:
            batch["label_group"] = torch.tensor(group, dtype=torch.long)
        return batch


def centred_label_loss(logits, label_index, label_alternatives, label_target, label_group=None):
    """Cross-entropy over the label words of each row's label logits minus the mean label logits of its group's rows
    in the pass (`label_group`; None: of the whole pass). A row alone in its group has nothing to be compared with
    and takes no loss."""
    import torch

    group = label_group if label_group is not None else torch.zeros_like(label_target)
    if group.numel() == 0:
        return logits.sum() * 0.0
    _, member = torch.unique(group, return_inverse=True)
    sizes = torch.bincount(member)
    kept = sizes[member] >= 2
    if not bool(kept.any()):  # no group of two or more rows: no loss, no gradient
        return logits.sum() * 0.0
    flat = logits.reshape(-1, logits.shape[-1])[label_index].float()
    chosen = flat.gather(1, label_alternatives)
    means = torch.zeros(len(sizes), chosen.shape[1], dtype=chosen.dtype, device=chosen.device)
    means = means.index_add(0, member, chosen) / sizes[:, None].to(chosen.dtype)
    centred = chosen - means[member]
    return torch.nn.functional.cross_entropy(centred[kept], label_target[kept])


class GroupedLabelSampler:
    """The training order under `training.label_group`: each epoch, every group's rows of each label shuffled, the
    shorter labels' lists cycled to the longest (so each row is drawn at least once an epoch), zipped into tuples
    of one row per label word, the tuples of all groups shuffled together and laid end to end. A per-device batch
    that is a multiple of the number of label words (checked with the config) then holds whole tuples only, so
    every labelled row of a pass has a row of each other label of its group to be compared with.

    The order depends only on the seed and the epoch (`set_epoch`, which the Trainer calls), so a resumed run
    replays the same batches and skips those it has trained."""

    def __init__(self, members: dict[str, list[list[int]]], seed: int):
        self.members, self.seed, self.epoch = members, seed, 0
        self.length = sum(len(by_label) * max(len(rows) for rows in by_label) for by_label in members.values())

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def __iter__(self):
        rng = random.Random(f"{self.seed}:{self.epoch}")
        tuples = []
        for name in sorted(self.members):
            by_label = self.members[name]
            longest = max(len(rows) for rows in by_label)
            drawn = []
            for rows in by_label:
                order = []
                while len(order) < longest:
                    order += rng.sample(rows, len(rows))
                drawn.append(order[:longest])
            tuples += list(zip(*drawn))
        rng.shuffle(tuples)
        return iter([index for row in tuples for index in row])


def label_groups(pattern: str, tokens: LabelTokens, examples: list[TokenizedExample],
                 found: list[tuple[int, int, int] | None], decode) -> tuple[dict[str, list[list[int]]], dict[str, int]]:
    """The training rows' groups under `pattern` (its first group, or the whole match, over the prompt's text:
    the tokens before the first supervised one, `decode`d): for each group the indices of its rows of each label
    word, for the groups that hold every label; and how many rows each reason leaves out of training. `found`:
    each row's `tokens.find(example.labels)`, as for `count_labels`."""
    compiled = re.compile(pattern)
    grouped: dict[str, list[list[int]]] = {}
    left = Counter()
    for index, (example, label) in enumerate(zip(examples, found)):
        if label is None or label[0] == 0:
            left["no label word"] += 1
            continue
        start = next(i for i, t in enumerate(example.labels) if t != IGNORE_INDEX)
        match = compiled.search(decode(example.input_ids[:start]))
        if match is None:
            left["pattern does not match"] += 1
            continue
        name = match.group(1) if compiled.groups else match.group(0)
        grouped.setdefault(name, [[] for _ in tokens.words])[label[2]].append(index)
    whole = {name: rows for name, rows in grouped.items() if all(rows)}
    left["group lacks a label"] = sum(len(r) for name, rows in grouped.items() if name not in whole for r in rows)
    return whole, {reason: n for reason, n in left.items() if n}


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
        examples = trainer.train_dataset.examples
        labels = [tokens.find(example.labels) for example in examples]
        counts = count_labels(tokens, labels)
        found = sum(v for k, v in counts.items() if k != "(none)")
        if found == 0:
            raise ConfigError([Problem("training.label_words", f"none of the {counts['(none)']} training rows' answers "
                                       f"holds any of {list(words)}; name the labels as the answers spell them")])
        shares = ", ".join(f"{word} {counts[word]}" for word in words)
        if not training.label_group:
            trainer.data_collator = LabelCollator(trainer.data_collator, tokens)
            emit("label_loss", f"label loss (weight {training.label_loss_weight:g}) on {found} of "
                               f"{found + counts['(none)']} training rows: {shares}; {counts['(none)']} rows hold no "
                               "label word and take only the plain loss", label_rows=counts)
            return label_trainer(trainer, training.label_loss_weight)
        groups, left = label_groups(training.label_group, tokens, examples, labels,
                                    lambda ids: tokenizer.decode(ids, skip_special_tokens=False))
        if not groups:
            raise ConfigError([Problem("training.label_group", f"no group of the {len(examples)} training rows "
                                       f"under {training.label_group!r} holds a row of each of {list(words)} "
                                       f"(left out: {_reasons(left)}); use a pattern whose first group names "
                                       "what the rows share, e.g. 'Policy rule: (.*)' on the demo")])
        ids = {id(examples[i]): g for g, name in enumerate(sorted(groups)) for rows in groups[name] for i in rows}
        trainer.data_collator = LabelCollator(trainer.data_collator, tokens, ids)
        sampler = GroupedLabelSampler(groups, training.seed)
        trainer._get_train_sampler = lambda train_dataset=None: sampler  # the Trainer's hook for the training order
        kept = len(ids)
        emit("label_loss", f"label loss (weight {training.label_loss_weight:g}) within {len(groups)} groups of "
                           f"training.label_group on {kept} of {len(examples)} training rows ({shares}); each pass "
                           f"holds whole groups' tuples, one row of each label word; {sampler.length} rows an epoch "
                           f"(the shorter labels' rows repeat); left out of training: {_reasons(left)}",
             label_rows=counts, label_groups={name: [len(r) for r in rows] for name, rows in groups.items()},
             left_out=left)
        if left:
            emit("warning", f"{sum(left.values())} training rows are left out of training by training.label_group: "
                            f"{_reasons(left)}", warning="label_group_left_out", left_out=left)
        return label_trainer(trainer, training.label_loss_weight)

    return TrainerParts(wrap=[wrap])


def _reasons(left: dict[str, int]) -> str:
    return ", ".join(f"{n} ({reason})" for reason, n in left.items()) or "none"
