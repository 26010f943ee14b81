"""PEFT Studio's UI: shared pieces for the pages (forms, charts, the run monitor, session state)."""
