"""Sharing the studio on a LAN: whether this process is a shared studio, its access token, and its Streamlit options.

`peft-studio studio --share` sets `PEFT_STUDIO_SHARED=1` (and `PEFT_STUDIO_DATA_ROOTS`, the `--data-root` folders
joined by os.pathsep) for the Streamlit process; this module is the one place that reads them. Job processes the
studio starts inherit them, so the engine applies the shared-studio rules (allowed roots, encrypted signing keys)
there too; the CLI, run by the local user in a plain shell, is unrestricted.
"""

from __future__ import annotations

import hmac
import os
import secrets
import stat
import sys
from pathlib import Path

from studio_core.errors import InputError
from studio_core.runs import studio_home
from studio_core.roots import ROOTS_ENV, SHARED_ENV, data_roots_from_env, is_shared  # noqa: F401 (re-exported)
from studio_core.uploads import DEFAULT_MAX_BYTES

TOKEN_FILE = "access-token"
STREAMLIT_MAX_UPLOAD_MIB = DEFAULT_MAX_BYTES // 2**20 + 64  # above the app's limit, so the app's check and message fire
REPO = Path(__file__).resolve().parent.parent


def token_path(home: str | Path | None = None) -> Path:
    return studio_home(home) / TOKEN_FILE


def ensure_token(home: str | Path | None = None, renew: bool = False) -> str:
    """The shared studio's access token, created (mode 0600 from the start) on first use or when `renew`."""
    path = token_path(home)
    if renew and path.exists():
        path.unlink()
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(secrets.token_urlsafe(32) + "\n")
    return read_token(home)


def read_token(home: str | Path | None = None) -> str:
    """The token in the home; refused if others can read the file (anyone who reads it gets in)."""
    path = token_path(home)
    try:
        mode = path.stat().st_mode
        token = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        raise InputError(f"{path}: no access token; start the studio with `peft-studio studio --share`") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise InputError(f"{path} is readable by other users (mode {stat.S_IMODE(mode):o}); run `chmod 600 {path}`")
    if len(token) < 16:
        raise InputError(f"{path}: the access token is too short; delete the file and restart to make a new one")
    return token


def token_matches(candidate: str | None, home: str | Path | None = None) -> bool:
    """Constant-time comparison of a typed or URL token with the home's."""
    return bool(candidate) and hmac.compare_digest(candidate.strip().encode(), read_token(home).encode())


def streamlit_options(port: int, share: bool) -> dict[str, str]:
    """Every server option the studio depends on, passed as flags so that no config file or working folder matters.

    Mirrors `.streamlit/config.toml` (kept for a bare `streamlit run` from the repo). `client.showErrorDetails` is
    a server-wide option in Streamlit, not a per-session one: a shared studio shows no traceback or local path to
    anyone, its owner included (the full error still goes to the console it was started from).
    """
    return {
        "server.address": "0.0.0.0" if share else "127.0.0.1",
        "server.port": str(port),
        "server.headless": "true",
        "server.enableXsrfProtection": "true",
        "server.enableCORS": "true",
        "server.maxUploadSize": str(STREAMLIT_MAX_UPLOAD_MIB),
        "server.fileWatcherType": "none",
        "server.runOnSave": "false",
        "browser.gatherUsageStats": "false",
        "client.toolbarMode": "minimal",
        "client.showErrorDetails": "none" if share else "full",
        # Streamlit forces a full gc.collect() after every script run; with torch loaded that holds the GIL for most
        # of a second per live-monitor refresh and slowed in-studio training ~20x (see .streamlit/config.toml).
        "runner.postScriptGC": "false",
    }


def streamlit_command(port: int, share: bool) -> list[str]:
    """`python -m streamlit run <repo>/app/main.py` with every option explicit: the same wherever it is started."""
    command = [sys.executable, "-m", "streamlit", "run", str(REPO / "app" / "main.py")]
    for key, value in streamlit_options(port, share).items():
        command += [f"--{key}", value]
    return command


def die_with_parent() -> None:
    """In the Streamlit child, before exec: Linux kills it when the launcher dies, however it dies (a SIGKILL or
    SIGTERM of `peft-studio studio` would otherwise leave the server running, listening). SIGKILL, not SIGTERM:
    a Streamlit server that a browser session had connected to was seen still listening 16 minutes after its
    SIGTERM (tests/app/test_browser_share.py checks the port closes). Training jobs are processes of their own
    (jobs.py) and are not killed with it."""
    import ctypes
    import signal

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: the launcher's own Ctrl-C handling is all there is


def studio_environment(home: Path, share: bool, data_roots: list[Path]) -> dict[str, str]:
    """The Streamlit process's environment: the home, and the shared-studio settings this module reads back."""
    env = {k: v for k, v in os.environ.items() if k not in (SHARED_ENV, ROOTS_ENV)}
    env["PEFT_STUDIO_HOME"] = str(home)
    if share:
        env[SHARED_ENV] = "1"
        env[ROOTS_ENV] = os.pathsep.join(str(p) for p in data_roots)
    return env


def path_fields(config) -> dict[str, str]:
    """Every free-text path of a config that names a file or folder on this machine, by dotted field."""
    from studio_core.data.demo import DEMO_REF_PREFIX
    from studio_core.errors import ModelError
    from studio_core.models.resolve import parse_ref

    fields = {"data.path": config.data.path, "data.val_path": config.data.val_path,
              "evaluation.test_path": config.evaluation.test_path, "policy.path": config.policy.path}
    fields = {k: v for k, v in fields.items() if v and not v.startswith(DEMO_REF_PREFIX)}
    try:
        if parse_ref(config.model.ref)[0] == "local":
            fields["model.ref"] = config.model.ref
    except ModelError:  # an unknown reference kind: the model step reports it; it names no readable path
        pass
    if config.tracking.enabled and "mlflow" in config.tracking.backends and config.tracking.mlflow_uri:
        from studio_core.connectors.mlflow_tracker import local_store_path

        store = local_store_path(config.tracking.mlflow_uri)  # a file the run would write: under the roots too
        if store:
            fields["tracking.mlflow_uri"] = store
    return fields


def shared_studio_problems(config, home: str | Path | None = None) -> list:
    """In a shared studio: each typed path outside the allowed roots, and signing with an unencrypted key.

    Empty when the studio is not shared (the local user may name any file).
    """
    from studio_core.errors import Problem
    from studio_core.roots import allowed_roots, resolve_under_roots

    if not is_shared():
        return []
    found = []
    try:
        roots = allowed_roots(home, data_roots_from_env())
    except InputError as e:
        return [Problem("data.path", str(e))]
    for name, value in path_fields(config).items():
        try:
            resolve_under_roots(value, roots, "path")  # the Problem names the field
        except InputError as e:
            found.append(Problem(name, str(e)))
    if config.signing.enabled:
        from studio_core.package.keys import find_key, require_encrypted_when_shared

        try:
            require_encrypted_when_shared(find_key(home, config.signing.key_id))
        except InputError as e:
            found.append(Problem("signing.key_id", str(e)))
    return found
