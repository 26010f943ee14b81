"""The connector catalog: every connector with whether it is usable here and, if not, how to install it."""

from __future__ import annotations

import pytest

from studio_core import catalog


@pytest.fixture(autouse=True)
def fresh_cache():
    catalog.backend_status.cache_clear()
    yield
    catalog.backend_status.cache_clear()


def test_every_connector_kind_is_listed_with_its_backend_status():
    connectors = {c.name: c for c in catalog.all_connectors()}
    assert {c.kind for c in connectors.values()} == {"data", "model", "tracking"}
    for name in ("mlflow", "tensorboard", "wandb", "huggingface-hub"):
        status = connectors[name].status()
        assert status.available and status.version, name  # installed in the studio's environment
    assert connectors["local-data"].status().available and connectors["local-data"].backend is None


def test_a_missing_tracker_package_says_so_with_its_install_command(monkeypatch):
    real = catalog._installed
    monkeypatch.setattr(catalog, "_installed", lambda module: False if module == "wandb" else real(module))
    status = catalog.connector("wandb").status()
    assert not status.available and status.reason == catalog.NOT_INSTALLED and status.install == "pip install wandb"
    with pytest.raises(ValueError, match="known: local-data"):
        catalog.connector("dropbox")
