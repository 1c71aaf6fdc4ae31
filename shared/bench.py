"""`demohub bench <app>`: torch eager against onnxruntime on the same inputs, in one process.

    bench.bench(loaded, spec.onnx(loaded))      # a model forward, or generate() for an encoder-decoder

Fair by construction: the same preprocessed batch of real photos for both, the same thread
count, outputs checked equal before any timing, warm-up runs first, then the two backends
interleaved (so machine noise hits both) and medians reported with the 10th-90th percentile
spread. One-time costs (load, export, session) are reported apart from steady state.
"""

from __future__ import annotations

import functools
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable

import numpy as np
import torch

from shared.inference import export
from shared.inference.graphs import OnnxForm
from shared.inference.sessions import OnnxRunner
from shared.inference.sessions import threads as backend_threads
from shared.models.loader import LoadedModel


def _percentiles(samples_ms: list[float]) -> dict[str, float]:
    p10, p50, p90 = np.percentile(samples_ms, [10, 50, 90])
    return {"median_ms": round(float(p50), 3), "p10_ms": round(float(p10), 3), "p90_ms": round(float(p90), 3)}


def _time_interleaved(calls: dict[str, Callable[[], object]], repeats: int, warmup: int) -> dict[str, list[float]]:
    """Milliseconds per call of each of `calls`: warm-up rounds first, then rounds in which every
    call runs once, so that machine noise hits all of them alike."""
    for _ in range(warmup):
        for call in calls.values():
            call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            t0 = time.perf_counter()
            call()
            times[name].append((time.perf_counter() - t0) * 1e3)
    return times


def bench(loaded: LoadedModel, form: OnnxForm, batch_sizes: tuple[int, ...] = (1, 8), repeats: int = 30,
          warmup: int = 5) -> dict:
    """The model forward of a single-graph form, or generation for an encoder-decoder's."""
    if form.generates:
        return bench_generation(loaded, form, batch_sizes, repeats)
    threads = backend_threads()
    torch.set_num_threads(threads)
    started = time.perf_counter()
    report = export.export_model(loaded, form)
    export_s = time.perf_counter() - started
    ((name, spec),) = form.graphs.items()
    started = time.perf_counter()
    runners = {"torch": form.run_torch(loaded), "onnx": OnnxRunner(report.paths[name], loaded.device, spec)}
    session_s = time.perf_counter() - started

    results = []
    for batch_size in batch_sizes:
        feeds = form.sample_feeds(batch_size)[name]
        reference = list(runners["torch"](feeds).values())
        diff = export.compare(reference, list(runners["onnx"](feeds).values()), spec)
        times = _time_interleaved({name: functools.partial(run, feeds) for name, run in runners.items()},
                                  repeats, warmup)
        row = {"batch_size": batch_size, "max_abs_diff": diff,
               "torch": _percentiles(times["torch"]), "onnx": _percentiles(times["onnx"])}
        row["onnx_speedup"] = round(row["torch"]["median_ms"] / row["onnx"]["median_ms"], 2)
        results.append(row)
    return {
        "model": loaded.entry.name, "device": str(loaded.device), "threads": threads,
        "providers": runners["onnx"].session.get_providers(), "measures": "model forward on a preprocessed batch",
        "repeats": repeats, "warmup": warmup, "export_s": round(export_s, 2),
        "export_cached": report.graphs[name].cached, "session_s": round(session_s, 3), "results": results,
    }


def cold_start(app: str, request: dict, timeout_s: float = 120) -> float:
    """Seconds from starting `demohub serve` to the first answer of `app` to `request`."""
    from gradio_client import Client

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.perf_counter()
    server = subprocess.Popen([sys.executable, "-m", "shared.serving.cli", "serve", "--port", str(port)],
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


def _generated_tokens(token_ids: torch.Tensor, pad_id: int, prompt_length: int) -> int:
    """New tokens in `generate()`'s answer: all after the prompt (the start token at least), padding excluded."""
    return int((token_ids[:, prompt_length:] != pad_id).sum())


def bench_generation(loaded: LoadedModel, form: OnnxForm, batch_sizes: tuple[int, ...] = (1, 8),
                     repeats: int = 20, warmup: int = 3, cache_tokens: int = 64) -> dict:
    """Tokens per second of torch `generate()` and of the ONNX search (shared/inference/seq2seq.py) on
    the same inputs, greedy and beam search of 4, after checking that both give the same tokens; then
    the ONNX search with and without its key/value cache at `cache_tokens` new tokens, where the
    decoder has that many positions after the prompt (otherwise a sentence says it has not).
    The inputs are the form's sample encoder feeds: sentences, scene images, or images with a
    question (as the decoder's prompt, or for BLIP its text encoder's input)."""
    threads = backend_threads()
    torch.set_num_threads(threads)
    onnx = form.run_onnx(export.export_model(loaded, form).paths, loaded)

    def inputs(n: int) -> dict:
        return {name: torch.from_numpy(array) for name, array in form.sample_feeds(n)["encoder"].items()}

    pad_id = onnx.generation_config.pad_token_id
    results = []
    for decoding, settings in {"greedy": {"num_beams": 1}, "beam4": {"num_beams": 4}}.items():
        for batch_size in batch_sizes:
            feeds = inputs(batch_size)
            with torch.inference_mode():
                reference = loaded.model.generate(**feeds, **settings)
            got = onnx.generate(**feeds, **settings)
            calls = {"torch": functools.partial(loaded.model.generate, **feeds, **settings),
                     "onnx": functools.partial(onnx.generate, **feeds, **settings)}
            with torch.inference_mode():
                times = _time_interleaved(calls, repeats, warmup)
            tokens = _generated_tokens(reference, pad_id, onnx.family.prompt(feeds, batch_size).shape[1])
            row = {"decoding": decoding, "batch_size": batch_size, "new_tokens": tokens,
                   "tokens_equal": bool(torch.equal(reference, got))}
            for name in calls:
                row[name] = {**_percentiles(times[name]),
                             "tokens_per_s": round(tokens / np.median(times[name]) * 1e3, 1)}
            row["onnx_speedup"] = round(row["torch"]["median_ms"] / row["onnx"]["median_ms"], 2)
            results.append(row)

    fixed = {"num_beams": 1, "min_new_tokens": cache_tokens, "max_new_tokens": cache_tokens}
    cache = []
    positions = getattr(loaded.model.config.get_text_config(decoder=True), "max_position_embeddings", None)
    for batch_size in batch_sizes:
        feeds = inputs(batch_size)
        prompt = onnx.family.prompt(feeds, batch_size).shape[1]
        if positions is not None and prompt + cache_tokens > positions:
            cache.append({"batch_size": batch_size, "new_tokens": cache_tokens, "skipped": (
                f"{loaded.entry.name}'s decoder holds {positions} positions, fewer than its prompt ({prompt}) "
                f"and {cache_tokens} new tokens, so the cache was not timed at {cache_tokens} new tokens.")})
            continue
        calls = {"with_cache": functools.partial(onnx.generate, **feeds, **fixed, use_cache=True),
                 "without_cache": functools.partial(onnx.generate, **feeds, **fixed, use_cache=False)}
        times = _time_interleaved(calls, max(5, repeats // 2), 1)
        row = {"batch_size": batch_size, "new_tokens": cache_tokens,
               **{name: _percentiles(samples) for name, samples in times.items()}}
        row["speedup"] = round(row["without_cache"]["median_ms"] / row["with_cache"]["median_ms"], 2)
        cache.append(row)
    return {"model": loaded.entry.name, "device": str(loaded.device), "threads": threads,
            "onnx_threads": {"encoder": threads, "decoder_steps": onnx.decoder_threads},
            "providers": onnx.sessions["decoder"].get_providers(),
            "measures": "generate() on the app's sample inputs: torch model.generate vs ONNX graphs + search",
            "repeats": repeats, "warmup": warmup, "results": results, "onnx_cache": cache}


def int8_report(loaded: LoadedModel, form: OnnxForm, report: export.ExportReport,
                held_out: Callable[[LoadedModel, Callable], dict] | None = None) -> dict:
    """How much dynamic int8 changes a single-graph model's answers: agreement with fp32 on the
    sample inputs, and the app's held-out metrics (`held_out`) on both."""
    ((name, spec),) = form.graphs.items()
    fp32_path = report.paths[name]
    int8_path = export.quantize(fp32_path)
    fp32, int8 = OnnxRunner(fp32_path, loaded.device, spec), OnnxRunner(int8_path, loaded.device, spec)
    feeds = form.sample_feeds(8)[name]
    output = spec.output_names[0]
    before, after = fp32(feeds)[output], int8(feeds)[output]
    result = {
        "int8_path": str(int8_path),
        "size_ratio": round(fp32_path.stat().st_size / int8_path.stat().st_size, 2),
        f"max_abs_{output}_change": float(np.abs(before - after).max()),
        "top1_agreement_on_samples": float((before.argmax(-1) == after.argmax(-1)).mean()),
    }
    if held_out is not None:
        result |= {f"{key}_fp32": value for key, value in held_out(loaded, fp32).items()}
        result |= {f"{key}_int8": value for key, value in held_out(loaded, int8).items()}
    return result
