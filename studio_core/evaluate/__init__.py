"""Step 8, Evaluation: validation loss and perplexity, the task metric and samples, base against tuned."""
