"""Step 2's model registry pieces: Hub search results, a model's details, downloads in the background with their
progress, and the models already on this machine (local folders under the roots, the Hugging Face caches)."""

from __future__ import annotations

import threading
from typing import Any

import streamlit as st

from app.session import set_value, validated_config
from studio_core.connectors import hub
from studio_core.connectors.local import LocalModels, studio_roots
from studio_core.errors import StudioError
from studio_core.runs import format_bytes, studio_home


def use_model(ref: str) -> None:
    set_value("model.ref", ref)
    st.session_state["model:used"] = ref


def local_choices() -> dict[str, str]:
    """Label -> model.ref for the folders under the allowed roots and the models in the Hub caches."""
    choices = {}
    for m in LocalModels(studio_roots(studio_home())).list_models():
        choices[f"{m.ref}  (folder, {format_bytes(m.size_bytes or 0)})"] = m.ref
    for m in hub.cached_models(studio_home()):
        choices[f"{m.ref}  (Hub cache, {format_bytes(m.size_bytes)}, {m.files} files)"] = m.ref
    return choices


def search(query: str, task: str | None, library: str | None, sort: str) -> hub.Answer | None:
    """The Hub's answer (or the cached one), or None after saying why there is none."""
    try:
        if query.strip():
            return hub.search_models(query, task=task, library=library, sort=sort, home=studio_home())
        return hub.popular_models(task or "text-generation", limit=20, home=studio_home())
    except hub.HubUnreachable as e:
        st.warning(f"{e}. Only the models already on this machine can be used (listed above).")
    except StudioError as e:
        st.error(str(e))
    return None


def result_rows(models: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"model": m["id"], "task": m["task"] or "", "library": m["library"] or "", "downloads": m["downloads"],
             "likes": m["likes"], "gated": str(m["gated"] or "")} for m in models]


def details(repo_id: str) -> hub.ModelDetails | None:
    try:
        answer = hub.model_details(repo_id, studio_home(), config=validated_config())
    except hub.HubUnreachable as e:
        st.warning(str(e))
        return None
    except StudioError as e:
        st.error(str(e))
        return None
    if answer.offline:
        st.caption(f"{answer.offline}: details as cached earlier.")
    return answer.data


def details_rows(d: hub.ModelDetails) -> dict[str, str]:
    fit = d.fit or {}
    fits = (("yes" if fit["fits"] else "no") + f" ({fit['method']}: ~{fit['estimate_gib']} GiB of "
            f"{fit['budget_gib']} GiB)") if fit.get("known") else fit.get("reason", "not estimated")
    return {"parameters": f"{d.parameters:,}" if d.parameters else "unknown",
            "architecture": ", ".join(d.architectures) or "unknown", "model type": d.model_type or "unknown",
            "licence": d.licence or "not stated", "gated": str(d.gated or "no"),
            "safetensors size": format_bytes(d.safetensors_bytes),
            "target rules": f"known: {', '.join(d.default_targets)}" if d.known_architecture
            else "not known: every linear layer is adapted", "fits this machine": fits}


@st.cache_resource
def _downloads() -> dict[str, dict[str, Any]]:
    """Downloads by model id, shared by every session (a thread fills each; pages only read)."""
    return {}


def start_pull(repo_id: str) -> None:
    jobs = _downloads()
    if jobs.get(repo_id, {}).get("state") == "running":
        return
    job = jobs[repo_id] = {"state": "running", "what": "", "done": 0.0, "total": None, "message": ""}

    def report(what: str, done: float, total: float | None) -> None:
        if "bytes" in what.lower() or not job["what"]:
            job.update(what=what, done=done, total=total)

    def work() -> None:
        try:
            path = hub.pull_model(repo_id, studio_home(), progress=report)
            job.update(state="done", message=f"in the model cache: {path}")
        except Exception as e:  # noqa: BLE001 - shown on the page, never raised in a thread
            job.update(state="failed", message=str(e))

    threading.Thread(target=work, name=f"pull-{repo_id}", daemon=True).start()


@st.fragment(run_every=0.5)
def pull_progress(repo_id: str) -> None:
    job = _downloads().get(repo_id)
    if job is None:
        return
    if job["state"] == "running":
        share = job["done"] / job["total"] if job["total"] else 0.0
        st.progress(min(share, 1.0), text=f"Downloading {repo_id}: {format_bytes(job['done'])}"
                    + (f" of {format_bytes(job['total'])}" if job["total"] else ""))
    elif job["state"] == "done":
        st.success(f"Downloaded {repo_id}, {job['message']}")
    else:
        st.error(f"Download of {repo_id} failed: {job['message']}")
