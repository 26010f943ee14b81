"""PEFT Studio engine: config, run store, the twelve stages and the CLI. Never imports streamlit."""

__version__ = "0.1.0"
