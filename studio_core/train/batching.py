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


def collate(examples: list[TokenizedExample], pad_id: int):
    """Right-padded tensors: input_ids, attention_mask, labels (IGNORE_INDEX on padding)."""
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
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


class Collator:
    """Picklable collator bound to a pad id (DataLoader workers need a top-level callable)."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, examples: list[TokenizedExample]):
        return collate(examples, self.pad_id)


def supervised_rows(data) -> tuple[list, list]:
    """The train and validation rows of prepared data that carry loss: a row whose assistant tokens were all
    truncated away has nothing to learn from (and a batch of them is NaN)."""
    return ([e for e in data.train_tokens if e.supervised_tokens], [e for e in data.val_tokens if e.supervised_tokens])
