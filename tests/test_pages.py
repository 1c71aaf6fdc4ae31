"""The hub builds an app's page when it is first asked for, and the rest before /readyz says ready
(shared/serving/pages.py): what makes `demohub serve` answer sooner after a start."""

import threading
import time

from fastapi.testclient import TestClient

from shared import apps
from shared.serving import server


def test_a_page_is_built_on_its_first_visit_and_the_rest_before_ready(monkeypatch):
    models = apps.get("classification").models
    loading = threading.Event()
    real_load = models.load
    monkeypatch.setattr(type(models), "load", lambda self, *a, **k: (loading.wait(30), real_load(*a, **k))[1])
    hub = server.build_hub(("classification", "translation"))
    pages = hub.state.pages
    with TestClient(hub) as client:
        assert all(page.demo is None for page in pages.values())  # nothing built before a visit
        config = client.get("/translation/config")
        assert config.status_code == 200 and config.json()["title"] == "Translation"
        assert pages["translation"].demo is not None and pages["classification"].demo is None
        assert client.get("/readyz").status_code == 503
        loading.set()  # the models load, then the page nobody visited is built, then ready
        deadline = time.monotonic() + 60
        while client.get("/readyz").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pages["classification"].demo is not None
        assert client.get("/classification/config").json()["title"] == "Image classification"
