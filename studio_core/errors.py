"""Errors that say what went wrong and how to fix it (see shared/STYLE.md, point 7).

`InputError` subclasses are the user's to fix (bad config, data or model reference): the CLI exits 2.
Anything else raised during a stage is a failure of that stage: the CLI exits 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


class StudioError(Exception):
    """Base of every error the studio raises on purpose."""


class InputError(StudioError):
    """The user's input (config, data file, model reference) is wrong; the message says how to fix it."""


@dataclass(frozen=True)
class Problem:
    """One problem in a config: the dotted field path and what to do about it."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


class ConfigError(InputError):
    """One or more config problems, all reported at once."""

    def __init__(self, problems: list[Problem] | Problem):
        self.problems = [problems] if isinstance(problems, Problem) else list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"invalid run config ({len(self.problems)} problem(s)):\n{lines}")


class DataError(InputError):
    """A problem with a data file, naming the file and, where known, the line (or row, or item)."""

    def __init__(
        self, message: str, file: str | Path | None = None, line: int | None = None, unit: str = "line"
    ):
        self.file = str(file) if file is not None else None
        self.line = line
        where = self.file or ""
        if line is not None:
            where = f"{where} {unit} {line}" if where else f"{unit} {line}"
        super().__init__(f"{where}: {message}" if where else message)


class ModelError(InputError):
    """A model reference that cannot be resolved or loaded safely."""


class MissingBackendError(StudioError):
    """An optional backend is not installed; the message carries the exact install command."""

    def __init__(self, backend: str, install: str, why: str = ""):
        self.backend = backend
        self.install = install
        reason = f" ({why})" if why else ""
        super().__init__(f"{backend} is not available{reason}; install it with: {install}")


class UnsupportedHardwareError(StudioError):
    """The requested feature needs hardware this machine does not have."""


class PreflightError(StudioError):
    """The pre-flight report says no-go; the message lists every blocking error."""


class CancelledError(StudioError):
    """The run was cancelled at a step boundary."""


class RunInterrupted(StudioError):
    """The run stopped before finishing through no fault of its config or data (a training process was killed):
    it reads `interrupted`, not `failed`, and resumes from its last checkpoint."""
