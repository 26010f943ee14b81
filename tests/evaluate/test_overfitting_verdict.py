"""The overfitting verdict on crafted training curves (metrics.jsonl records)."""

from studio_core.evaluate.curves import overfitting_verdict


def curves(train_losses, val_losses, every=2):
    records = [{"step": i + 1, "loss": loss} for i, loss in enumerate(train_losses)]
    return records + [{"step": i * every, "val_loss": v} for i, v in enumerate(val_losses)]


def test_falling_curves_show_no_overfitting():
    result = overfitting_verdict(curves([3.0, 2.5, 2.0, 1.8, 1.6, 1.5], [3.1, 2.4, 2.0, 1.7]))
    assert not result["overfitting"] and result["verdict"].startswith("no sign of overfitting")
    assert result["best_step"] == 6


def test_val_rising_while_train_falls_is_overfitting_from_the_best_step():
    result = overfitting_verdict(curves([3.0, 2.5, 2.0, 1.5, 1.0, 0.5, 0.3, 0.2], [3.1, 2.4, 2.0, 2.3, 2.6]))
    assert result["overfitting"] and result["from_step"] == 4
    assert result["verdict"].startswith("overfitting from step 4: validation loss rose from 2.0000 to 2.6000 "
                                        "while training loss fell from 1.7500 to 0.2500")


def test_small_wobble_is_not_a_trend():
    result = overfitting_verdict(curves([3.0, 2.0, 1.5, 1.0], [3.0, 2.00, 2.01]))
    assert not result["overfitting"]


def test_val_rising_with_train_rising_is_instability_not_overfitting():
    result = overfitting_verdict(curves([2.0, 1.5, 1.6, 2.5, 3.0, 3.5], [2.2, 1.6, 2.4, 3.2]))
    assert not result["overfitting"] and "unstable training" in result["verdict"]


def test_too_few_evaluations():
    assert "not enough" in overfitting_verdict(curves([1.0, 0.9], [1.0]))["verdict"]
    assert "not enough" in overfitting_verdict([])["verdict"]
