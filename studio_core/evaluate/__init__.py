"""Step 8, Evaluation: base against tuned on the validation split and an optional test file (basic.py), the
generation metrics (metrics.py) and the overfitting verdict from the training curves (curves.py)."""
