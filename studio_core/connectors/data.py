"""The data connector contract: a place the studio lists data from, each entry a valid `data.path` value."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class DataEntry:
    """One dataset a connector offers: `path` is what `data.path` is set to."""

    path: str
    kind: str  # file | dataset-folder
    size_bytes: int
    root: str  # the allowed root it lies under


class DataConnector(Protocol):
    name: str

    def list_data(self) -> list[DataEntry]:
        """The datasets this connector can offer now, newest first."""
        ...
