"""Allowed roots: the folders whose files a path typed by someone else (a shared studio's browser, a connector)
may name. A path resolves only under one of them: `..` is refused outright, and a symlink that leads out of every
root is refused, naming the roots. The studio's own secrets (signing keys, the access token, the settings that
name the roots) stay out even though they live in the home.

The roots: the studio home (its uploads included), the folders given with `peft-studio studio --data-root DIR`,
and those listed in `<home>/settings.json` as `{"data_roots": ["/data/corpora", ...]}`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from studio_core.errors import InputError
from studio_core.runs import studio_home

SHARED_ENV = "PEFT_STUDIO_SHARED"
ROOTS_ENV = "PEFT_STUDIO_DATA_ROOTS"
SETTINGS_FILE = "settings.json"
PRIVATE_ENTRIES = ("keys", "access-token", SETTINGS_FILE)  # inside the home, never readable through a typed path


def is_shared() -> bool:
    """True in a studio started with `peft-studio studio --share` (and the job processes it starts)."""
    return os.environ.get(SHARED_ENV) == "1"


def data_roots_from_env() -> list[Path]:
    """The `--data-root` folders the launcher passed down."""
    return [Path(p) for p in os.environ.get(ROOTS_ENV, "").split(os.pathsep) if p]


@dataclass(frozen=True)
class Roots:
    """Resolved folders a path may lead into, and resolved entries it may not."""

    allowed: tuple[Path, ...]
    denied: tuple[Path, ...] = ()

    def describe(self) -> str:
        return ", ".join(str(p) for p in self.allowed)


def settings_roots(home: str | Path | None = None) -> list[Path]:
    """The `data_roots` listed in `<home>/settings.json` (none when the file is absent)."""
    path = studio_home(home) / SETTINGS_FILE
    if not path.is_file():
        return []
    try:
        listed = json.loads(path.read_text(encoding="utf-8")).get("data_roots", [])
    except (json.JSONDecodeError, AttributeError) as e:
        raise InputError(f"{path}: not a JSON object with a data_roots list ({e})") from e
    if not isinstance(listed, list) or not all(isinstance(p, str) for p in listed):
        raise InputError(f'{path}: data_roots must be a list of folder paths, e.g. {{"data_roots": ["/data"]}}')
    return [Path(p).expanduser() for p in listed]


def allowed_roots(home: str | Path | None = None, extra: list[Path] | tuple[Path, ...] = ()) -> Roots:
    """The home (uploads included), `extra` folders (the launcher's --data-root) and the home's settings roots."""
    home = studio_home(home).resolve()
    folders = [home, *extra, *settings_roots(home)]
    allowed = tuple(dict.fromkeys(Path(p).resolve() for p in folders))
    return Roots(allowed, tuple(home / name for name in PRIVATE_ENTRIES))


def resolve_under_roots(value: str | Path, roots: Roots, what: str = "path") -> Path:
    """`value` as an absolute path with symlinks followed, if it lies under an allowed root; else InputError.

    Relative paths are taken from the working folder, as the engine opens them.
    """
    given = Path(os.path.expanduser(str(value)))
    if ".." in given.parts:
        raise InputError(f"{what} {value}: '..' is not allowed in a shared studio; give the full path under "
                         f"one of: {roots.describe()}")
    resolved = (given if given.is_absolute() else Path.cwd() / given).resolve()
    root = next((r for r in roots.allowed if resolved.is_relative_to(r)), None)
    if root is None:
        leads = f" (it leads to {resolved})" if resolved != (Path.cwd() / given).absolute() else ""
        raise InputError(f"{what} {value}{leads} is outside the folders this shared studio may read: "
                         f"{roots.describe()}; upload the file, or ask the studio's owner to add its folder with "
                         "`peft-studio studio --share --data-root DIR`")
    denied = next((d for d in roots.denied if resolved == d or resolved.is_relative_to(d)), None)
    if denied is not None:
        raise InputError(f"{what} {value}: {denied.name} in the studio home ({root}) holds the studio's own secrets "
                         "and cannot be read through a typed path")
    return resolved
