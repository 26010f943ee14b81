"""The studio's result views (app/results.py): what their text says."""


def test_the_time_estimate_check_says_what_it_does_not_time():
    """Step 3's time line counts steps and validations; the save-and-merge and step 8 are named as not timed."""
    from app.results import _check_text

    text = _check_text("time_estimate", {"estimated_training_s": 160.2, "max_steps": 40,
                                         "seconds_per_optimizer_step": 3.32, "validation_s": 26.9, "validations": 5,
                                         "measured_on": "base model"})
    assert text.startswith("~160 s of training: 40 steps at 3.32 s/step + 27 s for 5 validations")
    assert "not timed: saving and merging the adapter" in text and "step 8's evaluation" in text


def test_the_time_estimate_check_counts_checkpoints_where_the_estimate_timed_them():
    from app.results import _check_text

    text = _check_text("time_estimate", {"estimated_training_s": 166.0, "max_steps": 40,
                                         "seconds_per_optimizer_step": 3.32, "validation_s": 26.9, "validations": 5,
                                         "checkpoint_s": 5.8, "checkpoints": 2, "measured_on": "base model"})
    assert text.startswith("~166 s of training: 40 steps at 3.32 s/step + 27 s for 5 validations + 5.8 s for 2 "
                           "checkpoints (")
