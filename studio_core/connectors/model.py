"""The model connector contract: a source of base models, each entry a valid `model.ref` value."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class ModelEntry:
    """One base model a connector offers: `ref` is what `model.ref` is set to."""

    ref: str
    source: str  # local | hub | hub-cache
    size_bytes: int | None = None
    note: str = ""


class ModelConnector(Protocol):
    name: str

    def list_models(self) -> list[ModelEntry]:
        """The models this connector offers without a query (local folders, the cache)."""
        ...
