import socket
import threading
import time

import pytest

from apps.classification.task import MODELS as CLASSIFIERS
from shared.errors import ModelUnavailable
from shared.models import hub, loader, registry

VIT = registry.get("classification", "google/vit-base-patch16-224")


def test_embedded_model_loads_on_cpu_in_fp32():
    loaded = CLASSIFIERS.load()
    assert loaded.entry.name == "digits-convnext"
    assert loaded.device.type == "cpu" and loaded.dtype.is_floating_point
    assert CLASSIFIERS.load("digits-convnext") is loaded  # cached, shared


def test_concurrent_requests_load_once():
    cache = loader.LruCache(budget_bytes=10**9)
    builds = []

    def build():
        builds.append(1)
        time.sleep(0.2)
        return object()

    results = []
    threads = [threading.Thread(target=lambda: results.append(cache.get("m", build, lambda v: 1))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(builds) == 1 and len({id(r) for r in results}) == 1


def test_memory_budget_evicts_least_recently_used():
    cache = loader.LruCache(budget_bytes=100)
    cache.get("a", lambda: "A", lambda v: 40)
    cache.get("b", lambda: "B", lambda v: 40)
    cache.get("a", lambda: "A", lambda v: 40)  # a is now the most recent
    cache.get("c", lambda: "C", lambda v: 40)
    assert cache.keys() == ["a", "c"]


def test_offline_hub_model_fails_fast(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started = time.monotonic()
    with pytest.raises(ModelUnavailable, match="cannot be reached"):
        hub.fetch(VIT)
    assert time.monotonic() - started < 5


def test_unreachable_hub_fails_fast_without_the_offline_flag(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    hub._probe_cache.clear()

    def no_route(*args, **kwargs):
        raise OSError("no route to host")

    monkeypatch.setattr(socket, "create_connection", no_route)
    with pytest.raises(ModelUnavailable, match="cannot be reached"):
        hub.fetch(VIT)


def test_ui_falls_back_to_the_embedded_model_of_the_same_labels_and_says_so(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    loaded = CLASSIFIERS.load(VIT.name, fallback=True)
    assert loaded.entry.name == "efficientnet-lite0"  # ImageNet's labels, as the ViT asked for
    assert len(loaded.model.config.id2label) == 1000
    assert VIT.name in loaded.fallback_note and "instead" in loaded.fallback_note


def test_a_model_with_no_stand_in_of_its_labels_falls_back_to_the_default(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from apps.detection.task import MODELS as DETECTORS

    loaded = DETECTORS.load("hustvl/yolos-tiny", fallback=True)
    assert loaded.entry.name == registry.default("detection").name and "instead" in loaded.fallback_note


def test_a_failed_download_is_one_clear_error(monkeypatch):
    from huggingface_hub.errors import LocalEntryNotFoundError

    def snapshot_download(**kwargs):
        raise LocalEntryNotFoundError("connection reset")

    monkeypatch.setattr(hub, "hub_reachable", lambda: True)
    monkeypatch.setattr(hub, "snapshot_download", snapshot_download)
    with pytest.raises(ModelUnavailable, match="Could not download google/vit-base-patch16-224"):
        hub.fetch(VIT)
