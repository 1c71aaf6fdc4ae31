"""Batching under load (shared/inference/batching.py): concurrent requests' model calls become
one batch, each caller gets its own rows, and served answers are those of one-by-one requests."""

import json
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from shared import bench
from shared.data.examples import PHOTOS
from shared.inference.batching import Gatherer
from shared.serving import cli
from tests.conftest import DIGIT_EXAMPLES, REPO, start_hub, stop_hub
from tests.test_security import call, file_data, upload


def test_concurrent_calls_become_one_batch_and_each_gets_its_rows():
    gatherer, first_running, release, calls = Gatherer(max_rows=8), threading.Event(), threading.Event(), []

    def run(feeds):  # the first call holds the model until the other callers wait for it
        calls.append(len(feeds["x"]))
        first_running.set()
        release.wait(5)
        return {"y": feeds["x"] * 10}

    with ThreadPoolExecutor(7) as pool:
        first = pool.submit(gatherer, "m", run, {"x": np.array([[0.0]])})
        first_running.wait(5)
        rest = [pool.submit(gatherer, "m", run, {"x": np.array([[float(i)], [float(-i)]])}) for i in range(1, 6)]
        while len(gatherer._waiting["m"]) < 5:
            time.sleep(0.01)
        release.set()
        answers = [f.result(5) for f in rest]
    assert first.result()["y"].tolist() == [[0.0]]
    assert [a["y"].tolist() for a in answers] == [[[10.0 * i], [-10.0 * i]] for i in range(1, 6)]
    # 1 row alone, then the 5 waiting calls (10 rows) in batches of at most 8 rows: 8 + 2
    assert calls == [1, 8, 2] and list(gatherer.sizes) == [1, 8, 2]
    assert not gatherer._waiting and not gatherer._running  # a key with no caller is forgotten


def test_a_failing_model_call_fails_each_caller_of_its_batch_and_the_next_runs():
    gatherer = Gatherer()

    def run(feeds):
        if (feeds["x"] < 0).any():
            raise RuntimeError("boom")
        return {"y": feeds["x"]}

    with pytest.raises(RuntimeError, match="boom"):
        gatherer("m", run, {"x": np.array([-1.0])})
    assert gatherer("m", run, {"x": np.array([2.0])})["y"].tolist() == [2.0]


@pytest.fixture(scope="module")
def classification_hub(tmp_path_factory):
    root = tmp_path_factory.mktemp("batching")
    process, url = start_hub(REPO, root / "hub.log", root / "uploads",
                             extra_args=("--app", "classification"))
    yield url
    stop_hub(process)


@pytest.mark.slow
def test_served_concurrent_requests_are_batched_and_answer_as_one_by_one(classification_hub):
    url = classification_hub
    images = [*sorted(DIGIT_EXAMPLES.glob("*.png")), *PHOTOS.values()]
    uploads = [file_data(upload(url, "classification", path)) for path in images]
    one_by_one = [call(url, "classification", [d, "digits-convnext", "torch", 3]) for d in uploads]
    batch_rows = []
    for _ in range(3):  # concurrency is up to the machine: a few rounds until some calls were gathered
        with ThreadPoolExecutor(16) as pool:  # 16 visitors (one address may hold only 8 of the queue's places)
            together = list(pool.map(lambda i, u: call(url, "classification", [u, "digits-convnext", "torch", 3],
                                                       headers={"X-Forwarded-For": f"10.7.0.{i}"}),
                                     range(2 * len(uploads)), uploads * 2))
        for (kind, alone), (kind_together, outputs) in zip(one_by_one * 2, together, strict=False):
            assert kind == kind_together == "complete"
            assert outputs[0]["label"] == alone[0]["label"]
            got = {c["label"]: c["confidence"] for c in outputs[0]["confidences"]}
            want = {c["label"]: c["confidence"] for c in alone[0]["confidences"]}
            assert got.keys() == want.keys() and all(abs(got[k] - want[k]) < 1e-5 for k in want)
        batch_rows += [int(m.group(1)) if (m := re.search(r"\((\d+) rows\)", o[1])) else 1 for _, o in together]
        if max(batch_rows) > 1:
            break
    assert max(batch_rows) > 1, batch_rows  # the served line's note: "answered in one model call with ..."


@pytest.mark.slow
def test_load_bench_reports_both_modes_at_each_level():
    result = bench.load("classification", {"image": DIGIT_EXAMPLES / "digit_7.png"}, clients=(1, 4),
                        requests_per_level=4)
    assert [row["clients"] for row in result["levels"]] == [1, 4] and result["max_batch"]["off"] == "1"
    for row, sent in zip(result["levels"], (4, 8), strict=True):  # each client sends at least 2
        for mode in ("off", "on"):
            assert row[mode]["failed"] == 0 and row[mode]["requests"] == sent and row[mode]["requests_per_s"] > 0
            assert row[mode]["p95_ms"] >= row[mode]["p50_ms"] > 0
        assert row["off"]["mean_batch_rows"] == 1.0 and row["throughput_ratio"] > 0
    assert "| 4 |" in bench.load_table(result)


@pytest.mark.slow
def test_load_bench_serves_a_random_copy_of_a_hub_architecture(capsys):
    """`bench --load --size tiny --arch A`: both servers offer the copy's folder, and every call names it."""
    assert cli.main(["bench", "classification", "--load", "--size", "tiny", "--arch", "resnet-50",
                     "--clients", "1", "--requests", "2"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["request"]["model"] == "tiny-resnet-50"
    assert all(row[mode]["failed"] == 0 and row[mode]["requests"] == 2 for row in result["levels"]
               for mode in ("off", "on"))

