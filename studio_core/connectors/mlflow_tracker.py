"""MLflow: one MLflow run per studio run (tagged with its id), the resolved config as params, every metrics.jsonl
line as metrics at its step, and the adapter, evaluation report and package as artifacts.

The default store is `sqlite:///<home>/mlflow.db` (a file: no server); artifacts of experiments the studio creates
there go to `<home>/mlflow-artifacts/`. Open it with `mlflow ui --backend-store-uri sqlite:///<home>/mlflow.db`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

RUN_TAG = "peft_studio.run_id"
PARAM_BATCH = 100  # MLflow's log_batch takes at most 100 params per call


def default_uri(home: Path) -> str:
    return f"sqlite:///{Path(home).resolve() / 'mlflow.db'}"


def local_store_path(uri: str) -> str | None:
    """The file or folder a local MLflow store URI names (sqlite:///path, file:///path, a bare path); None for a
    server (http, https, databricks)."""
    from urllib.parse import unquote, urlparse

    if uri.startswith("sqlite:///"):
        return unquote(uri[len("sqlite:///"):]) or None
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return unquote(parsed.path)
    return None if "://" in uri else uri


class MlflowTracker:
    name = "mlflow"

    def __init__(self, uri: str, experiment: str, home: Path):
        self.uri, self.experiment, self.home = uri, experiment, Path(home)
        self.client: Any = None
        self.run_id: str | None = None

    def start(self, run_id: str, params: dict[str, str], run_dir: Path) -> str:
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=self.uri)
        experiment_id = self._experiment_id()
        found = self.client.search_runs([experiment_id], filter_string=f"tags.`{RUN_TAG}` = '{run_id}'",
                                        max_results=1)
        if found:  # a resumed studio run continues its MLflow run
            self.run_id = found[0].info.run_id
            self.client.update_run(self.run_id, status="RUNNING")
            return f"{self.uri} (run {self.run_id}, reopened)"
        run = self.client.create_run(experiment_id, run_name=run_id, tags={RUN_TAG: run_id})
        self.run_id = run.info.run_id
        items = [Param(k, v) for k, v in params.items()]
        for i in range(0, len(items), PARAM_BATCH):
            self.client.log_batch(self.run_id, params=items[i: i + PARAM_BATCH])
        return f"{self.uri} (run {self.run_id})"

    def _experiment_id(self) -> str:
        existing = self.client.get_experiment_by_name(self.experiment)
        if existing is not None:
            return existing.experiment_id
        location = None
        if self.uri.startswith(("sqlite:", "file:")) or "://" not in self.uri:  # a local store: artifacts beside it
            location = (self.home / "mlflow-artifacts" / self.experiment).resolve().as_uri()
        return self.client.create_experiment(self.experiment, artifact_location=location)

    def log_metrics(self, step: int, values: dict[str, float], timestamp_ms: int) -> None:
        from mlflow.entities import Metric

        metrics = [Metric(k, v, timestamp_ms, step) for k, v in values.items()]
        self.client.log_batch(self.run_id, metrics=metrics)

    def log_weights(self, step: int, weights: dict[str, Any]) -> None:
        return None  # MLflow has no distribution view; TensorBoard draws them

    def log_artifact(self, path: Path, name: str) -> None:
        if path.is_dir():
            self.client.log_artifacts(self.run_id, str(path), artifact_path=name)
        else:
            self.client.log_artifact(self.run_id, str(path), artifact_path=name)

    def finish(self, state: str) -> None:
        status = {"completed": "FINISHED", "failed": "FAILED"}.get(state, "KILLED")
        self.client.set_terminated(self.run_id, status=status)
