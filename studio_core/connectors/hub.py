"""The Hugging Face Hub as a model registry: search, details, popular models per task, download into the cache.

Everything goes through `huggingface_hub` (`HfApi.list_models`, `HfApi.model_info`, `snapshot_download`,
`scan_cache_dir`), against `$HF_ENDPOINT` when set (read at each call). Answers are cached in
`<home>/hub-metadata/` and reused for `REFRESH_S` (an hour); offline (`HF_HUB_OFFLINE=1`, or the Hub does not
answer) the last cached answer is shown, marked stale, beside the models already in the local caches.

A model is usable when its weights are safetensors and it needs no custom modelling code: the studio never
unpickles weights (.bin/.pt can run code when loaded) and never runs a repo's own Python (trust_remote_code).
A download takes only safetensors, config and tokenizer files (`models.resolve.HUB_PATTERNS`).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from studio_core.errors import ModelError, StudioError
from studio_core.models.resolve import HUB_PATTERNS, PICKLE_SUFFIXES
from studio_core.runs import atomic_write_json, model_cache_dir, studio_home

REFRESH_S = 3600.0
METADATA = "hub-metadata"
SORTS = ("downloads", "likes")
TASKS = ("text-generation", "text2text-generation", "text-classification", "fill-mask", "feature-extraction")
LIBRARIES = ("transformers", "peft", "safetensors")


class HubUnreachable(StudioError):
    """The Hub cannot be reached (offline mode, no network, or it did not answer)."""


@dataclass
class Answer:
    """What the Hub said (or the cache kept): `stale` with `offline` set when it could not be asked now."""

    data: Any
    fetched_at: float
    from_cache: bool
    offline: str | None = None


@dataclass
class ModelDetails:
    id: str
    sha: str | None
    task: str | None
    library: str | None
    parameters: int | None
    parameters_by_dtype: dict[str, int]
    architectures: list[str]
    model_type: str | None
    licence: str | None
    gated: str | bool | None
    safetensors_bytes: int
    files: list[dict[str, Any]]
    usable: bool
    not_usable: list[str]
    known_architecture: bool
    default_targets: list[str]
    downloads: int | None = None
    likes: int | None = None
    fit: dict[str, Any] | None = field(default=None)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def is_offline() -> bool:
    """HF_HUB_OFFLINE set to a true value (read now, not at import)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def endpoint() -> str | None:
    return os.environ.get("HF_ENDPOINT") or None


def _api():
    from huggingface_hub import HfApi

    return HfApi(endpoint=endpoint())


def _metadata_file(home: Path, key: str) -> Path:
    return home / METADATA / (hashlib.sha256(key.encode()).hexdigest()[:24] + ".json")


def _cached(home: Path, key: str, fetch: Callable[[], Any], max_age_s: float, refresh: bool) -> Answer:
    """`fetch()`'s answer, from the home's metadata cache while younger than `max_age_s`."""
    path = _metadata_file(home, key)
    kept = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    if kept and not refresh and time.time() - kept["fetched_at"] < max_age_s:
        return Answer(kept["data"], kept["fetched_at"], True)
    try:
        if is_offline():
            raise HubUnreachable("HF_HUB_OFFLINE=1: the Hub is not asked")
        data = fetch()
    except HubUnreachable as e:
        if kept:
            return Answer(kept["data"], kept["fetched_at"], True, str(e))
        raise
    atomic_write_json(path, {"key": key, "fetched_at": time.time(), "data": data})
    return Answer(data, time.time(), False)


def _unreachable(e: Exception) -> HubUnreachable | None:
    """The exception as HubUnreachable when it means the Hub cannot be reached (not: the model is missing)."""
    from huggingface_hub.errors import OfflineModeIsEnabled

    try:  # huggingface_hub 2 talks through httpx2; 1.x through httpx
        from httpx2 import TransportError
    except ImportError:
        from httpx import TransportError
    if isinstance(e, (OfflineModeIsEnabled, TransportError, ConnectionError, TimeoutError)):
        return HubUnreachable(f"the Hugging Face Hub ({endpoint() or 'huggingface.co'}) cannot be reached: "
                              f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    return None


_UNREACHABLE: dict[str, tuple[float, str]] = {}  # endpoint -> (when, why) it last refused a connection
RETRY_S = 30.0


def _probe(timeout_s: float = 3.0) -> None:
    """Fail fast when the Hub's host does not accept a connection: the client's own retries take ~20 s. A refusal
    is remembered for RETRY_S, so a page redrawn while offline does not wait again each time."""
    import socket
    from urllib.parse import urlparse

    url = urlparse(endpoint() or "https://huggingface.co")
    when, why = _UNREACHABLE.get(url.geturl(), (0.0, ""))
    if time.time() - when < RETRY_S:
        raise HubUnreachable(why)
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)),
                                 timeout=timeout_s).close()
    except OSError as e:
        why = f"the Hugging Face Hub ({url.geturl()}) cannot be reached: {type(e).__name__}: {e}"
        _UNREACHABLE[url.geturl()] = (time.time(), why)
        raise HubUnreachable(why) from e
    _UNREACHABLE.pop(url.geturl(), None)


def _ask(call: Callable[[], Any]) -> Any:
    _probe()
    try:
        return call()
    except Exception as e:  # sorted below into unreachable / not found / other
        unreachable = _unreachable(e)
        if unreachable:
            raise unreachable from e
        from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

        if isinstance(e, GatedRepoError):
            raise ModelError(f"{e}; accept its terms on the Hub and set HF_TOKEN") from e
        if isinstance(e, RepositoryNotFoundError):
            raise ModelError(f"no such model on the Hub (or it is private): {e}".splitlines()[0]) from e
        raise


def search_models(query: str = "", task: str | None = None, library: str | None = None, sort: str = "downloads",
                  limit: int = 20, home: str | Path | None = None, refresh: bool = False,
                  max_age_s: float = REFRESH_S) -> Answer:
    """Hub models matching `query` (text in the id), a task (pipeline tag) and a library, most downloaded or
    liked first; `Answer.data` is a list of summaries (id, downloads, likes, task, library, tags)."""
    if sort not in SORTS:
        raise ModelError(f"sort {sort!r}: choose one of {', '.join(SORTS)}")
    home = studio_home(home)
    key = json.dumps(["search", query.strip(), task, library, sort, limit])

    def fetch():
        models = _ask(lambda: list(_api().list_models(search=query.strip() or None, pipeline_tag=task or None,
                                                      filter=library or None, sort=sort, limit=limit)))
        return [_summary(m) for m in models]

    return _cached(home, key, fetch, max_age_s, refresh)


def popular_models(task: str = "text-generation", limit: int = 10, home: str | Path | None = None,
                   refresh: bool = False) -> Answer:
    """The most downloaded models of a task."""
    return search_models("", task=task, sort="downloads", limit=limit, home=home, refresh=refresh)


def _summary(m) -> dict[str, Any]:
    return {"id": m.id, "downloads": m.downloads, "likes": m.likes, "task": m.pipeline_tag,
            "library": m.library_name, "gated": m.gated, "tags": list(m.tags or []),
            "last_modified": m.last_modified.isoformat() if m.last_modified else None}


def model_details(repo_id: str, home: str | Path | None = None, config=None, refresh: bool = False,
                  max_age_s: float = REFRESH_S, with_fit: bool = True) -> Answer:
    """Details of one Hub model (`Answer.data` is a `ModelDetails`): size, architecture, licence, gated, whether
    the studio can use it and why not, whether its target rules know the architecture, and, with `with_fit`,
    whether it fits this machine for `config`'s method (a default RunConfig: LoRA) by the memory estimator."""
    home = studio_home(home)
    answer = _cached(home, json.dumps(["model", repo_id]), lambda: _details(repo_id), max_age_s, refresh)
    details = ModelDetails(**answer.data)
    if with_fit and details.usable:
        details.fit = _fit(details, home, config)
    elif with_fit:
        details.fit = {"known": False, "reason": "not estimated: the studio cannot use this model"}
    answer.data = details
    return answer


def _details(repo_id: str) -> dict[str, Any]:
    from studio_core.models.targets import ARCHITECTURE_TARGETS

    info = _ask(lambda: _api().model_info(repo_id, files_metadata=True))
    files = [{"name": s.rfilename, "size": s.size} for s in info.siblings or []]
    names = [f["name"] for f in files]
    config = info.config or {}
    safetensors = [f for f in files if f["name"].endswith(".safetensors")]
    reasons = []
    if not safetensors:
        pickles = [n for n in names if n.endswith(PICKLE_SUFFIXES)]
        reasons.append(f"no safetensors weights (only {', '.join(pickles)}): pickle weights can run code when "
                       "loaded, so the studio never loads them" if pickles else "no weights files in the repo")
    if config.get("auto_map") or "custom_code" in (info.tags or []):
        reasons.append("needs its own modelling code (trust_remote_code), which the studio never runs")
    if "config.json" not in names:
        reasons.append("no config.json")
    model_type = config.get("model_type")
    card = info.card_data.to_dict() if info.card_data is not None else {}
    licence = card.get("license") or next((t.split(":", 1)[1] for t in info.tags or [] if t.startswith("license:")),
                                          None)
    return asdict(ModelDetails(
        id=info.id, sha=info.sha, task=info.pipeline_tag, library=info.library_name,
        parameters=info.safetensors.total if info.safetensors else None,
        parameters_by_dtype=dict(info.safetensors.parameters) if info.safetensors else {},
        architectures=list(config.get("architectures") or []), model_type=model_type, licence=licence,
        gated=info.gated, safetensors_bytes=sum(f["size"] or 0 for f in safetensors), files=files,
        usable=not reasons, not_usable=reasons, known_architecture=model_type in ARCHITECTURE_TARGETS,
        default_targets=list(ARCHITECTURE_TARGETS.get(model_type, [])), downloads=info.downloads, likes=info.likes,
    ))


def _fit(details: ModelDetails, home: Path, config) -> dict[str, Any]:
    """The memory estimate for this model (its config.json only, fetched into the model cache) and `config`."""
    from huggingface_hub import hf_hub_download
    from transformers import AutoConfig

    from studio_core.config import RunConfig
    from studio_core.train.fit import fit_model_config

    if "config.json" not in {f["name"] for f in details.files}:
        return {"known": False, "reason": "the repo has no config.json to estimate from"}
    config = config or RunConfig()
    try:
        fetch = lambda: hf_hub_download(details.id, "config.json", revision=details.sha, endpoint=endpoint(),
                                        cache_dir=model_cache_dir(home) / "hub", local_files_only=is_offline())
        path = fetch() if is_offline() else _ask(fetch)  # offline: the copy cached with the details
        fit = fit_model_config(config, AutoConfig.from_pretrained(Path(path).parent))
    except Exception as e:  # noqa: BLE001 - an architecture transformers does not know still shows its details
        return {"known": False, "reason": f"cannot estimate: {type(e).__name__}: {str(e).splitlines()[0][:200]}"}
    return {"known": True, "fits": fit.fits, "method": config.method.name,
            "estimate_gib": round(fit.estimate.total / 2**30, 3) if fit.estimate else None,
            "budget_gib": round(fit.budget / 2**30, 3), "changes": fit.changes, "reasons": fit.reasons}


def pull_model(repo_id: str, home: str | Path | None = None, revision: str | None = None,
               progress: Callable[[str, float, float | None], None] | None = None) -> Path:
    """Download a usable model's safetensors, config and tokenizer files into the model cache; returns its folder.

    `progress(what, done, total)` is called from download threads as bytes and files arrive. A model the studio
    cannot use (pickle weights only, custom code) is refused, naming why, before anything is downloaded.
    """
    from huggingface_hub import snapshot_download

    home = studio_home(home)
    details = model_details(repo_id, home, refresh=True, with_fit=False).data
    if not details.usable:
        raise ModelError(f"{repo_id} cannot be used by the studio: " + "; ".join(details.not_usable))
    return Path(_ask(lambda: snapshot_download(repo_id, revision=revision, allow_patterns=HUB_PATTERNS,
                                               cache_dir=model_cache_dir(home) / "hub", endpoint=endpoint(),
                                               tqdm_class=_progress_class(progress))))


def _progress_class(progress):
    if progress is None:
        return None
    from huggingface_hub.utils import tqdm as hf_tqdm

    class Reporting(hf_tqdm):
        """Counts for itself: a disabled bar (no terminal) keeps no count."""

        def __init__(self, *args, **kwargs):
            self.what, self.expected, self.done = str(kwargs.get("desc") or ""), kwargs.get("total"), 0.0
            super().__init__(*args, **kwargs)

        def update(self, n=1):
            self.done += n or 0
            total = getattr(self, "total", None) or self.expected
            progress(self.what, self.done, float(total) if total else None)
            return super().update(n)

    return Reporting


@dataclass(frozen=True)
class CachedModel:
    ref: str
    repo_id: str
    size_bytes: int
    files: int
    revisions: list[str]
    last_accessed: float
    cache_dir: str


def cached_models(home: str | Path | None = None) -> list[CachedModel]:
    """Models in the studio's Hub cache and in the user's Hugging Face cache, through `scan_cache_dir`."""
    from huggingface_hub import constants, scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    folders = dict.fromkeys([model_cache_dir(studio_home(home)) / "hub", Path(constants.HF_HUB_CACHE)])
    found: list[CachedModel] = []
    for folder in folders:
        try:
            info = scan_cache_dir(folder)
        except CacheNotFound:
            continue
        for repo in sorted(info.repos, key=lambda r: r.repo_id):
            if repo.repo_type == "model":
                found.append(CachedModel(f"hf:{repo.repo_id}", repo.repo_id, repo.size_on_disk, repo.nb_files,
                                         sorted(r.commit_hash[:12] for r in repo.revisions), repo.last_accessed,
                                         str(folder)))
    return found


class HubModels:
    """The model connector for the Hub: what it lists without a query is the local cache."""

    name = "huggingface-hub"

    def __init__(self, home: str | Path | None = None):
        self.home = home

    def list_models(self):
        from studio_core.connectors.model import ModelEntry

        return [ModelEntry(m.ref, "hub-cache", m.size_bytes, f"{m.files} files in {m.cache_dir}")
                for m in cached_models(self.home)]
