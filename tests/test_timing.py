"""The time a request shows is the whole request, and its notes say what it loaded or exported."""

import json
import time

import pytest

from apps.classification.task import classify
from shared.inference import backends, export
from shared.models import loader
from shared.serving import cli, ui
from tests.conftest import DIGIT_EXAMPLES

DIGIT = DIGIT_EXAMPLES / "digit_7.png"


@pytest.fixture
def fresh_caches(tmp_path, monkeypatch):
    """No model in memory and an empty ONNX cache on disk; the seconds of every export made."""
    fresh = loader.LruCache(loader.MEMORY_BUDGET_BYTES)
    monkeypatch.setattr(loader, "cache", fresh)
    monkeypatch.setattr(backends, "cache", fresh)
    monkeypatch.setattr(export, "CACHE_DIR", tmp_path)
    seconds = []
    real_export = export.export_model

    def timed_export(*args, **kwargs):
        started = time.perf_counter()
        report = real_export(*args, **kwargs)
        seconds.append(time.perf_counter() - started)
        return report

    monkeypatch.setattr(export, "export_model", timed_export)
    return seconds


def test_a_first_onnx_request_counts_and_says_its_load_and_export(fresh_caches):
    first = classify(DIGIT, backend="onnx")
    assert len(fresh_caches) == 1 and first.latency_ms >= fresh_caches[0] * 1e3 > first.model_ms
    assert any(note.startswith("loaded digits-convnext in ") for note in first.all_notes)
    assert any(note.startswith("exported digits-convnext to ONNX in ") and note.endswith(" s, cached for next time")
               for note in first.all_notes)
    assert "Note: exported digits-convnext to ONNX in " in ui.served_line(first)

    second = classify(DIGIT, backend="onnx")
    assert len(fresh_caches) == 1 and second.latency_ms < first.latency_ms
    assert not [note for note in second.all_notes if "loaded" in note or "exported" in note]
    assert second.latency_ms >= second.model_ms


def test_the_cli_prints_the_whole_request_time(fresh_caches, capsys):
    assert cli.main(["predict", "classification", "--image", str(DIGIT), "--backend", "onnx"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["latency_ms"] >= fresh_caches[0] * 1e3 > printed["model_ms"]
    assert any(note.startswith("exported digits-convnext to ONNX") for note in printed["notes"])
