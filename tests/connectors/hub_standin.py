"""A stand-in for the Hugging Face Hub, which this machine cannot reach: a small HTTP server on 127.0.0.1 (a free
port) answering the few Hub API routes the studio's `huggingface_hub` calls use, and serving files.

Its answers are written by hand in the shape of the Hub API (none can be recorded here): `GET /api/models`
(search, pipeline_tag, filter, sort, limit), `GET /api/models/<id>[/revision/<rev>]` (model_info, with file sizes
when `blobs` is asked), `GET /api/models/<id>/tree/<rev>` (the file list snapshot_download reads), and `HEAD`/`GET /<id>/resolve/<rev>/<file>` with the `X-Repo-Commit` and `ETag` headers
`hf_hub_download` reads. Point `HF_ENDPOINT` at `StandinHub.url`.
"""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse


def _sha(seed: str) -> str:
    return hashlib.sha1(seed.encode()).hexdigest()


class Repo:
    def __init__(self, repo_id: str, files: dict[str, bytes], **info):
        self.id, self.files, self.sha, self.info = repo_id, files, _sha(repo_id), info

    def model_info(self, blobs: bool) -> dict:
        siblings = [{"rfilename": n, **({"size": len(b), "blobId": _sha(n)} if blobs else {})}
                    for n, b in sorted(self.files.items())]
        return {"_id": _sha(self.id)[:24], "id": self.id, "modelId": self.id, "sha": self.sha, "private": False,
                "disabled": False, "lastModified": "2026-10-01T12:00:00.000Z", "siblings": siblings, **self.info}

    def listing(self) -> dict:
        keys = ("downloads", "likes", "pipeline_tag", "library_name", "tags", "gated")
        return {"_id": _sha(self.id)[:24], "id": self.id, "modelId": self.id, "private": False,
                "createdAt": "2026-01-01T00:00:00.000Z", **{k: self.info[k] for k in keys if k in self.info}}


def tiny_llama_repo(folder: Path, repo_id: str = "standin-org/tiny-llama") -> Repo:
    """A real tiny Llama (the studio's tiny-random folder) as a Hub repo, with a pickle copy and a README that a
    studio download must leave out."""
    from safetensors import safe_open

    files = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")}
    files["pytorch_model.bin"] = b"pickle bytes the studio must never fetch"
    files["README.md"] = b"---\nlicense: apache-2.0\n---\n# tiny llama\n"
    total = 0
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        for key in f.keys():  # noqa: SIM118 - safe_open is not a dict
            total += _numel(f.get_slice(key).get_shape())
    config = json.loads(files["config.json"])
    return Repo(repo_id, files, downloads=5000, likes=40, pipeline_tag="text-generation",
                library_name="transformers", tags=["transformers", "safetensors", "llama", "text-generation",
                                                   "license:apache-2.0"],
                gated=False, config={"architectures": config["architectures"], "model_type": config["model_type"]},
                cardData={"license": "apache-2.0"}, safetensors={"parameters": {"F32": total}, "total": total})


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def other_repos() -> list[Repo]:
    """Repos the studio must refuse (pickle only, custom code) and one of another task."""
    llama_config = json.dumps({"architectures": ["LlamaForCausalLM"], "model_type": "llama"}).encode()
    return [
        Repo("standin-org/pickle-only-gpt2", {"config.json": json.dumps({"architectures": ["GPT2LMHeadModel"],
                                                                         "model_type": "gpt2"}).encode(),
                                              "pytorch_model.bin": b"pickle"},
             downloads=9000, likes=3, pipeline_tag="text-generation", library_name="transformers",
             tags=["transformers", "pytorch", "gpt2", "license:mit"], gated=False,
             config={"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"}),
        Repo("standin-org/custom-code-llama", {"config.json": llama_config, "model.safetensors": b"\0" * 64,
                                               "modeling_custom.py": b"print('custom')"},
             downloads=100, likes=90, pipeline_tag="text-generation", library_name="transformers",
             tags=["transformers", "safetensors", "custom_code"], gated="manual",
             config={"architectures": ["LlamaForCausalLM"], "model_type": "llama",
                     "auto_map": {"AutoModelForCausalLM": "modeling_custom.CustomLlama"}},
             safetensors={"parameters": {"BF16": 16}, "total": 16}),
        Repo("standin-org/tiny-bert-sentiment", {"config.json": b"{}", "model.safetensors": b"\0" * 8},
             downloads=700, likes=7, pipeline_tag="text-classification", library_name="transformers",
             tags=["transformers", "bert"], gated=False, config={"architectures": ["BertForSequenceClassification"],
                                                                 "model_type": "bert"}),
    ]


class StandinHub:
    """The server; `requests` records each (method, path) it answered, for tests to check what was fetched."""

    def __init__(self, repos: list[Repo]):
        self.repos = {r.id: r for r in repos}
        self.requests: list[tuple[str, str]] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                hub._answer(self, body=True)

            def do_HEAD(self):
                hub._answer(self, body=False)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _answer(self, handler: BaseHTTPRequestHandler, body: bool) -> None:
        url = urlparse(handler.path)
        path, query = unquote(url.path), parse_qs(url.query)
        self.requests.append((handler.command, path))
        if path == "/api/models":
            return self._json(handler, self._search(query), body)
        if path.startswith("/api/models/") and "/tree/" in path:
            repo = self.repos.get(path[len("/api/models/"):].split("/tree/")[0])
            if repo is None:
                return self._missing(handler, body)
            return self._json(handler, [{"type": "file", "oid": _sha(n), "size": len(b), "path": n}
                                        for n, b in sorted(repo.files.items())], body)
        if path.startswith("/api/models/"):
            repo_id = path[len("/api/models/"):].split("/revision/")[0]
            repo = self.repos.get(repo_id)
            if repo is None:
                return self._missing(handler, body)
            return self._json(handler, repo.model_info(blobs="blobs" in query), body)
        if "/resolve/" in path:
            repo_id, rest = path.lstrip("/").split("/resolve/", 1)
            repo, filename = self.repos.get(repo_id), rest.split("/", 1)[-1]
            if repo is None or filename not in repo.files:
                return self._missing(handler, body, entry=True)
            data = repo.files[filename]
            handler.send_response(200)
            handler.send_header("Content-Length", str(len(data)))
            handler.send_header("X-Repo-Commit", repo.sha)
            handler.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
            handler.end_headers()
            if body:
                handler.wfile.write(data)
            return None
        return self._missing(handler, body)

    def _search(self, query: dict) -> list[dict]:
        text = (query.get("search") or [""])[0].lower()
        task = (query.get("pipeline_tag") or [None])[0]
        tags = query.get("filter") or []
        found = [r for r in self.repos.values() if text in r.id.lower()
                 and (task is None or r.info.get("pipeline_tag") == task)
                 and all(t == r.info.get("library_name") or t in r.info.get("tags", []) for t in tags)]
        sort = (query.get("sort") or ["downloads"])[0]
        found.sort(key=lambda r: r.info.get(sort, 0), reverse=True)
        limit = int((query.get("limit") or [1000])[0])
        return [r.listing() for r in found[:limit]]

    def _json(self, handler, data, body: bool) -> None:
        raw = json.dumps(data).encode()
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(raw)))
        handler.end_headers()
        if body:
            handler.wfile.write(raw)

    def _missing(self, handler, body: bool, entry: bool = False) -> None:
        raw = json.dumps({"error": "Repository not found" if not entry else "Entry not found"}).encode()
        handler.send_response(404)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("X-Error-Code", "EntryNotFound" if entry else "RepoNotFound")
        handler.send_header("Content-Length", str(len(raw)))
        handler.end_headers()
        if body:
            handler.wfile.write(raw)
