"""The label loss (training.label_words): each row's label found where the logits predict it, a loss no shared
shift can lower, validation loss untouched, refusals that name the field."""

import pytest
import torch

from studio_core import workflow
from studio_core.config import validate_config
from studio_core.data.tokenize import IGNORE_INDEX, TokenizedExample
from studio_core.errors import ConfigError
from studio_core.models.resolve import load_tokenizer, resolve_model
from studio_core.train.batching import Collator
from studio_core.train.labels import LabelCollator, centred_label_loss, label_tokens
from tests.train.test_training import tiny_config

WORDS = ["COMPLIANT", "NON-COMPLIANT"]


@pytest.fixture(scope="module")
def tok(model_cache):
    return load_tokenizer(resolve_model("tiny-random:llama", model_cache))


def example(tok, prompt: str, answer: str) -> TokenizedExample:
    p, a = tok(prompt, add_special_tokens=False)["input_ids"], tok(answer, add_special_tokens=False)["input_ids"]
    return TokenizedExample(p + a, [IGNORE_INDEX] * len(p) + a, len(p) + len(a))


@pytest.mark.parametrize("answer_logits_only", [True, False])
def test_the_collator_points_at_the_logits_that_predict_each_rows_label(tok, answer_logits_only):
    tokens = label_tokens(tok, WORDS)
    rows = [example(tok, "Clause one.", "Verdict: NON-COMPLIANT\nReason: short."),
            example(tok, "A longer clause, two.", "Verdict: COMPLIANT\nReason: fine."),
            example(tok, "No label here.", "I cannot tell."),
            example(tok, "Three.", "Reason: first.\nVerdict: COMPLIANT")]
    batch = LabelCollator(Collator(tok.pad_token_id, answer_logits_only), tokens)(rows)
    assert batch["label_target"].tolist() == [1, 0, 0]  # the third row holds no label word and is left out
    chosen = batch["label_alternatives"].gather(1, batch["label_target"][:, None]).squeeze(1)
    # The token each pointed-at logits row must predict is the label's first token.
    if answer_logits_only:
        predicted = batch["shift_labels"][batch["label_index"]]
    else:
        predicted = batch["labels"].flatten()[batch["label_index"] + 1]
    assert predicted.tolist() == chosen.tolist()
    assert tok.decode(chosen[:1]).strip().startswith("N")  # NON-COMPLIANT parts from COMPLIANT at its first letter


def test_the_centred_loss_cannot_be_lowered_by_moving_every_rows_label_at_once():
    torch.manual_seed(0)
    logits = torch.randn(5, 7, 11)
    index, alternatives, target = torch.tensor([3, 9, 20, 33]), torch.tensor([[2, 5]] * 4), torch.tensor([0, 1, 1, 0])
    loss = centred_label_loss(logits, index, alternatives, target)
    shifted = logits.clone()
    shifted[..., 2] += 4.0  # every row's first label up by the same amount
    assert torch.allclose(centred_label_loss(shifted, index, alternatives, target), loss)
    # ... while telling the rows apart lowers it
    apart = logits.clone().reshape(-1, 11)
    for i, t in zip(index.tolist(), target.tolist()):
        apart[i, 2 if t == 0 else 5] += 3.0
    assert centred_label_loss(apart.reshape(5, 7, 11), index, alternatives, target) < loss / 4
    one = centred_label_loss(logits.requires_grad_(), index[:1], alternatives[:1], target[:1])
    one.backward()
    assert float(one) == 0.0 and float(logits.grad.abs().sum()) == 0.0  # one row has nothing to be compared with


def test_words_that_start_with_the_same_token_are_refused_naming_them(tok):
    with pytest.raises(ConfigError, match=r"training\.label_words: 'no' and 'no no' tokenize alike"):
        label_tokens(tok, ["no", "no no"])


@pytest.mark.parametrize(("extra", "field"), [
    ({"training": {"label_words": ["COMPLIANT"]}}, "needs two or more different"),
    ({"training": {"label_words": WORDS}, "privacy": {"enabled": True, "target_epsilon": 8}},
     "per-example clipping no longer bounds"),
    ({"training": {"label_words": WORDS, "per_device_batch_size": 1}}, "per_device_batch_size=1 gives it none"),
])
def test_a_single_label_word_a_batch_of_one_and_the_label_loss_under_privacy_are_refused(extra, field):
    with pytest.raises(ConfigError, match=field):
        validate_config(extra)


def test_a_run_with_label_words_counts_its_labels_trains_on_them_and_keeps_validation_loss_plain(tmp_path):
    plain = workflow.run(tiny_config(max_steps=2, eval_steps=2), tmp_path / "plain")
    labelled = workflow.run(tiny_config(max_steps=2, eval_steps=2, label_words=WORDS), tmp_path / "labelled")
    event = next(e for e in labelled.events() if e["type"] == "label_loss")
    counts = event["label_rows"]
    labelled_rows = counts["COMPLIANT"] + counts["NON-COMPLIANT"]
    assert counts["COMPLIANT"] > 10 and counts["NON-COMPLIANT"] > 10  # the tiny model's character tokenizer cuts a
    assert counts["(none)"] < labelled_rows / 10  # few answers off before their verdict: counted, not hidden
    assert f"on {labelled_rows} of {labelled_rows + counts['(none)']} training rows" in event["message"]
    first = [[m for m in r.metrics() if "val_loss" in m][0]["val_loss"] for r in (plain, labelled)]
    assert first[0] == first[1]  # step 0's validation: the same model, the same plain loss
    losses = [[m["loss"] for m in r.metrics() if "loss" in m] for r in (plain, labelled)]
    assert losses[1][0] > losses[0][0]  # the label term is in the training loss (same model at step 1)


def test_label_words_no_answer_holds_are_refused_naming_the_field(tmp_path):
    with pytest.raises(workflow.StageFailed, match=r"training\.label_words: none of the \d+ training rows"):
        workflow.run(tiny_config(max_steps=1, eval_steps=1, save_steps=1, label_words=["sunny", "rainy"]),
                     tmp_path)
