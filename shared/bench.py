"""`demohub bench <app>`: torch eager against onnxruntime on the same inputs, in one process.

Fair by construction: the same preprocessed batch of real photos for both, the same thread
count, outputs checked equal before any timing, warm-up runs first, then the two backends
interleaved (so machine noise hits both) and medians reported with the 10th-90th percentile
spread. One-time costs (load, export, session) are reported apart from steady state.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable

import numpy as np
import torch

from shared import backends, export
from shared.export import Feeds, OnnxSpec
from shared.loader import LoadedModel


def _percentiles(samples_ms: list[float]) -> dict[str, float]:
    p10, p50, p90 = np.percentile(samples_ms, [10, 50, 90])
    return {"median_ms": round(float(p50), 3), "p10_ms": round(float(p10), 3), "p90_ms": round(float(p90), 3)}


def bench(loaded: LoadedModel, spec: OnnxSpec, sample_feeds: Callable[[int], Feeds],
          batch_sizes: tuple[int, ...] = (1, 8), repeats: int = 30, warmup: int = 5) -> dict:
    threads = backends.threads()
    torch.set_num_threads(threads)
    started = time.perf_counter()
    report = export.export(loaded, spec, sample_feeds(spec.example_batch))
    export_s = time.perf_counter() - started
    started = time.perf_counter()
    runners = {"torch": backends.TorchRunner(loaded, spec),
               "onnx": backends.OnnxRunner(report.path, loaded.device, spec)}
    session_s = time.perf_counter() - started

    results = []
    for batch_size in batch_sizes:
        feeds = sample_feeds(batch_size)
        reference = list(runners["torch"](feeds).values())
        diff = export.compare(reference, list(runners["onnx"](feeds).values()), spec)
        times: dict[str, list[float]] = {"torch": [], "onnx": []}
        for _ in range(warmup):
            for run in runners.values():
                run(feeds)
        for _ in range(repeats):
            for name, run in runners.items():
                t0 = time.perf_counter()
                run(feeds)
                times[name].append((time.perf_counter() - t0) * 1e3)
        row = {"batch_size": batch_size, "max_abs_diff": diff,
               "torch": _percentiles(times["torch"]), "onnx": _percentiles(times["onnx"])}
        row["onnx_speedup"] = round(row["torch"]["median_ms"] / row["onnx"]["median_ms"], 2)
        results.append(row)
    return {
        "model": loaded.entry.name, "device": str(loaded.device), "threads": threads,
        "providers": runners["onnx"].session.get_providers(), "measures": "model forward on a preprocessed batch",
        "repeats": repeats, "warmup": warmup, "export_s": round(export_s, 2),
        "export_cached": report.cached, "session_s": round(session_s, 3), "results": results,
    }


def cold_start(app: str, request: dict, timeout_s: float = 120) -> float:
    """Seconds from starting `demohub serve` to the first answer of `app` to `request`."""
    from gradio_client import Client

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.perf_counter()
    server = subprocess.Popen([sys.executable, "-m", "shared.cli", "serve", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while time.perf_counter() - started < timeout_s:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.05)
        Client(f"http://127.0.0.1:{port}/{app}/", verbose=False).predict(**request, api_name=f"/{app}")
        return round(time.perf_counter() - started, 2)
    finally:
        server.terminate()
        server.wait(timeout=30)
