"""Steps 4 and 6: building the PEFT model and training it."""
