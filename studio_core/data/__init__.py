"""Data loading: read local files, detect the row schema, validate and normalise rows to chat messages."""
