"""`demohub bench <app>`: torch eager against onnxruntime on the same inputs, in one process.

    bench.bench(loaded, spec.onnx(loaded))      # a model forward, or generate() for an encoder-decoder

Fair by construction: the same preprocessed batch of real photos for both, the same thread
count, outputs checked equal before any timing, warm-up runs first, then the two backends
interleaved (so machine noise hits both) and medians reported with the 10th-90th percentile
spread. One-time costs (load, export, session) are reported apart from steady state.
"""

from __future__ import annotations

import functools
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from shared.errors import UserError
from shared.inference import bf16, export
from shared.inference.graphs import Feeds, NamedOutputs, OnnxForm, OnnxSpec
from shared.inference.sessions import OnnxRunner
from shared.inference.sessions import threads as backend_threads
from shared.models.loader import LoadedModel


def _percentiles(samples_ms: list[float]) -> dict[str, float]:
    p10, p50, p90 = np.percentile(samples_ms, [10, 50, 90])
    return {"median_ms": round(float(p50), 3), "p10_ms": round(float(p10), 3), "p90_ms": round(float(p90), 3)}


def _time_interleaved(calls: dict[str, Callable[[], object]], repeats: int, warmup: int) -> dict[str, list[float]]:
    """Milliseconds per call of each of `calls`: warm-up rounds first, then rounds in which every
    call runs once, so that machine noise hits all of them alike.

    In a round each call runs twice and the second is timed: the first absorbs the switch from the
    previous runtime. onnxruntime's workers spin after a run, and torch eager timed right after an
    onnxruntime call took 222 ms instead of 175-187 ms (YOLOS-tiny, batch 1, 2 threads); a pause does
    not do instead, since threads that went idle wake slowly (`digits-convnext` took 13.8 ms instead of
    1.9 ms after 50 ms asleep, onnxruntime 0.9 instead of 0.4)."""
    for _ in range(warmup):
        for call in calls.values():
            call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            call()
            t0 = time.perf_counter()
            call()
            times[name].append((time.perf_counter() - t0) * 1e3)
    return times


# The columns of `demohub bench` for a single-graph model, the baseline first.
VARIANTS = ("torch", "torch_compile", "onnx", "onnx_int8_dynamic", "onnx_int8_static")
# OpenVINO on the same fp32 export, in fp32 and in bf16 (`--variants`; `pip install 'demohub[openvino]'`)
OPENVINO_VARIANTS = ("openvino", "openvino_bf16")
SLOW_FACTOR = 10


class CompiledRunner:
    """`torch.compile(model)` (inductor, default mode) with the runners' call: feeds in, numpy out."""

    def __init__(self, loaded: LoadedModel, spec: OnnxSpec):
        self.loaded, self.spec = loaded, spec
        self.module = torch.compile(NamedOutputs(loaded.model, spec).eval())

    def __call__(self, feeds: Feeds) -> dict[str, np.ndarray]:
        tensors = [torch.from_numpy(feeds[n]).to(self.loaded.device) for n in self.spec.input_names]
        with torch.inference_mode():
            outputs = self.module(*tensors)
        return {name: o.float().cpu().numpy() for name, o in zip(self.spec.output_names, outputs, strict=True)}


def _runners(loaded: LoadedModel, form: OnnxForm, variants: tuple[str, ...]) -> tuple[dict, dict, dict]:
    """Each variant's runner, the seconds it took to build (export, quantise, session), and its file."""
    ((name, spec),) = form.graphs.items()
    runners, setup_s, files = {}, {}, {}
    fp32_path = None
    for variant in variants:
        started = time.perf_counter()
        if variant == "torch":
            runners[variant] = form.run_torch(loaded)
        elif variant == "torch_compile":
            runners[variant] = CompiledRunner(loaded, spec)
        else:
            fp32_path = fp32_path or export.export_model(loaded, form).paths[name]
            kind = {"onnx_int8_dynamic": "dynamic", "onnx_int8_static": "static"}.get(variant)
            files[variant] = (export.int8_path(fp32_path, kind, functools.partial(export.calibration_rows, form, name))
                              if kind else fp32_path)
            if variant in OPENVINO_VARIANTS:
                bf16.check_installed()
                runners[variant] = bf16.Bf16Runner(fp32_path, spec, "bf16" if variant == "openvino_bf16" else "f32")
            else:
                runners[variant] = OnnxRunner(files[variant], loaded.device, spec)
        setup_s[variant] = round(time.perf_counter() - started, 2)
    return runners, setup_s, files


def _agreement(reference: dict[str, np.ndarray], got: dict[str, np.ndarray], spec: OnnxSpec) -> dict:
    """How far a variant is from torch: the largest |difference| relative to torch's largest value, and
    how often the argmax over the last axis (the top class of a row, box or pixel) is the same."""
    first = spec.output_names[0]
    scale = max(float(np.abs(reference[n]).max()) for n in spec.output_names) or 1.0
    worst = max(float(np.abs(reference[n] - got[n]).max()) for n in spec.output_names)
    axis = 1 if reference[first].ndim == 4 else -1  # segmentation logits are (B, C, h, w)
    same = (reference[first].argmax(axis) == got[first].argmax(axis)).mean()
    return {"max_abs_diff": worst, "max_rel_diff": round(worst / scale, 5), "argmax_agreement": round(float(same), 4)}


def bench(loaded: LoadedModel, form: OnnxForm, batch_sizes: tuple[int, ...] = (1, 8), repeats: int = 30,
          warmup: int = 5, variants: tuple[str, ...] = VARIANTS) -> dict:
    """The model forward of a single-graph form on every variant, or generation for an encoder-decoder's."""
    if form.generates:
        return bench_generation(loaded, form, batch_sizes, repeats)
    threads = backend_threads()
    torch.set_num_threads(threads)
    variants = ("torch", *[v for v in variants if v != "torch"])
    ((name, spec),) = form.graphs.items()
    runners, setup_s, files = _runners(loaded, form, variants)

    results = []
    for batch_size in batch_sizes:
        feeds = form.sample_feeds(batch_size)[name]
        reference = runners["torch"](feeds)
        row: dict = {"batch_size": batch_size}
        for variant in variants[1:]:
            got = runners[variant](feeds)  # also compiles torch.compile's graph for this shape
            if variant == "onnx":  # the fp32 export against the spec's tolerance (checked at export on batch 2)
                try:
                    row["max_abs_diff"] = export.compare(list(reference.values()), list(got.values()), spec)
                    row["onnx_within_tolerance"] = True
                except export.ExportMismatch:
                    row["max_abs_diff"] = max(float(np.abs(reference[n] - got[n]).max()) for n in spec.output_names)
                    row["onnx_within_tolerance"] = False
            row[f"{variant}_vs_torch"] = _agreement(reference, got, spec)
        # one more call each: a variant over SLOW_FACTOR x torch eager is reported from it and not
        # timed again (torch.compile's inductor code for EfficientNet's convolutions is ~100x slower here)
        once = {v: _time_interleaved({v: functools.partial(runners[v], feeds)}, 1, 0)[v] for v in variants}
        slow = [v for v in variants[1:] if once[v][0] > SLOW_FACTOR * once["torch"][0]]
        timed = [v for v in variants if v not in slow]
        times = _time_interleaved({v: functools.partial(runners[v], feeds) for v in timed}, repeats, warmup)
        for variant in variants:
            row[variant] = _percentiles(times.get(variant, once[variant]))
            if variant in slow:
                row[variant]["timed_once"] = f"over {SLOW_FACTOR}x torch eager on one call"
            if variant != "torch":
                row[f"{variant}_speedup"] = round(row["torch"]["median_ms"] / row[variant]["median_ms"], 2)
        results.append(row)
    onnx_runner = next((r for v, r in runners.items() if v.startswith("onnx")), None)
    precisions = {v: r.precision for v, r in runners.items() if v in OPENVINO_VARIANTS}
    return {
        "model": loaded.entry.name, "device": str(loaded.device), "threads": threads, "variants": list(variants),
        "providers": onnx_runner.session.get_providers() if onnx_runner else [],
        **({"openvino_precision": precisions} if precisions else {}),
        "measures": "model forward on a preprocessed batch of real photos and scenes",
        "repeats": repeats, "warmup": warmup, "setup_s": setup_s,
        "file_mb": {v: round(path.stat().st_size / 2**20, 1) for v, path in files.items()},
        # at most: larger inputs are calibrated on fewer rows (export.CALIBRATION_VALUES)
        "calibration_rows": export.CALIBRATION_ROWS if "onnx_int8_static" in variants else 0, "results": results,
    }


def table(result: dict) -> str:
    """A bench result as the README's markdown rows: median ms per variant and its ratio to torch eager."""
    variants = result["variants"]
    lines = []
    for row in result["results"]:
        cells = [f"{row['torch']['median_ms']:.3g}"] + [
            f"{row[v]['median_ms']:.3g} ({row[f'{v}_speedup']:.2f}x)" for v in variants[1:]]
        lines.append(f"| {result['model']} | {row['batch_size']} | " + " | ".join(cells) + " |")
    header = "| model | batch | " + " | ".join(variants) + " |"
    return "\n".join([header, "| " + " | ".join(["---"] * (len(variants) + 2)) + " |", *lines])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_server(port: int, app_names: tuple[str, ...] = (), env: dict[str, str] | None = None,
                  extra_models: tuple[str, ...] = ()) -> subprocess.Popen:
    """`demohub serve` (only `app_names`, if given; `extra_models` as its --add-model) on `port`, in a child."""
    only = [arg for name in app_names for arg in ("--app", name)]
    only += [arg for model in extra_models for arg in ("--add-model", model)]
    return subprocess.Popen([sys.executable, "-m", "shared.serving.cli", "serve", "--port", str(port), *only],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, **(env or {})})


def _wait_for(url: str, timeout_s: float, started: float) -> None:
    """Until `url` answers 200 (a 503 from /readyz means: not yet)."""
    while time.perf_counter() - started < timeout_s:
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer within {timeout_s} s")


def _stop(server: subprocess.Popen) -> None:
    server.terminate()
    server.wait(timeout=30)


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a running process, all its threads (Linux /proc; None elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cold_start(app: str, request: dict, timeout_s: float = 120) -> dict:
    """Seconds from starting `demohub serve` to the first answer of `app` to `request`, and the CPU
    seconds the server spent by then (imports, pages, model loads, the answer): on a busy machine
    the wall time waits for other jobs, the CPU time much less."""
    from gradio_client import Client

    port = _free_port()
    started = time.perf_counter()
    server = _start_server(port)
    try:
        _wait_for(f"http://127.0.0.1:{port}/healthz", timeout_s, started)
        Client(f"http://127.0.0.1:{port}/{app}/", verbose=False).predict(**request, api_name=f"/{app}")
        wall, cpu = time.perf_counter() - started, _cpu_seconds(server.pid)
        return {"cold_start_s": round(wall, 2), "cold_start_server_cpu_s": cpu and round(cpu, 2)}
    finally:
        _stop(server)


class _ApiCaller:
    """One request through gradio's HTTP API as a client sends it: the image uploaded, the call
    queued (POST /call/APP), its answer read from the event stream. httpx, one connection pool
    per client thread, so that 32 clients cost the machine little beside the server. Each client
    is a visitor of its own (`visitor`, an address the server trusts from a local proxy): the server
    lets one address hold only a quarter of an app's queue (ui.MAX_WAITING_PER_CLIENT)."""

    def __init__(self, base: str, app: str, request: dict, parameters: list[dict], visitor: int = 0):
        import httpx

        self.base, self.app, self.request, self.parameters = base, app, request, parameters
        self.http = httpx.Client(timeout=300, headers={"X-Forwarded-For": f"10.0.{visitor // 256}.{visitor % 256}"})

    def __call__(self) -> str:
        """The answer's JSON text (raises on an error event)."""
        data = []
        for p in self.parameters:
            value = self.request.get(p["parameter_name"], p.get("parameter_default"))
            if isinstance(value, Path):
                with open(value, "rb") as f:
                    uploaded = self.http.post(f"{self.base}gradio_api/upload", files={"files": (value.name, f)})
                value = {"path": uploaded.raise_for_status().json()[0], "meta": {"_type": "gradio.FileData"}}
            data.append(value)
        call = self.http.post(f"{self.base}gradio_api/call/{self.app}", json={"data": data}).raise_for_status()
        event_id = call.json()["event_id"]
        with self.http.stream("GET", f"{self.base}gradio_api/call/{self.app}/{event_id}") as stream:
            event = None
            for line in stream.iter_lines():
                if line.startswith("event:"):
                    event = line.split(":", 1)[1].strip()
                elif line.startswith("data:") and event in ("complete", "error"):
                    if event == "error":
                        raise RuntimeError(f"the server answered an error: {line[5:].strip()}")
                    return line[5:].strip()
        raise RuntimeError("the event stream ended without an answer")


_BATCH_NOTE = re.compile(r"\((\d+) rows\)")


def _load_level(callers: list[_ApiCaller], per_client: int) -> dict:
    """Every client sends `per_client` requests one after another, all clients at once."""
    latencies, rows, failures = [], [], []
    lock = threading.Lock()

    def client(caller: _ApiCaller) -> None:
        for _ in range(per_client):
            t0 = time.perf_counter()
            try:
                answer = caller()
            except Exception as err:  # noqa: BLE001 - counted and reported, the others go on
                with lock:
                    failures.append(str(err)[:200])
                continue
            with lock:
                latencies.append((time.perf_counter() - t0) * 1e3)
                found = _BATCH_NOTE.search(answer)
                rows.append(int(found.group(1)) if found else 1)

    threads = [threading.Thread(target=client, args=(c,)) for c in callers]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    p50, p95 = np.percentile(latencies, [50, 95]) if latencies else (float("nan"),) * 2
    return {"requests": len(latencies), "failed": len(failures), "failures": failures[:3],
            "requests_per_s": round(len(latencies) / wall, 2), "p50_ms": round(float(p50), 1),
            "p95_ms": round(float(p95), 1), "mean_batch_rows": round(float(np.mean(rows)), 2) if rows else None}


def load(app: str, request: dict, clients: tuple[int, ...] = (1, 8, 32), requests_per_level: int = 64,
         max_batch: int | None = None, timeout_s: float = 300, extra_models: tuple[str, ...] = ()) -> dict:
    """Requests per second and p50/p95 latency of `app`'s endpoint served by `demohub serve --app
    APP` (with `extra_models`, APP=DIR, offered too), at each number of concurrent clients, with
    batching off (DEMOHUB_MAX_BATCH=1) and on, the two servers running side by side and the levels
    interleaved (off, then on, at each level)."""
    from gradio_client import Client

    from shared.inference import batching

    settings = {"off": "1", "on": str(max_batch or max(batching.MAX_BATCH, 2))}
    ports = {mode: _free_port() for mode in settings}
    servers, callers = {}, {}
    try:
        for mode, size in settings.items():
            servers[mode] = _start_server(ports[mode], (app,), {"DEMOHUB_MAX_BATCH": size}, extra_models)
        for mode, port in ports.items():
            _wait_for(f"http://127.0.0.1:{port}/readyz", timeout_s, time.perf_counter())
            base = f"http://127.0.0.1:{port}/{app}/"
            info = Client(base, verbose=False).view_api(return_format="dict", print_info=False)
            parameters = info["named_endpoints"][f"/{app}"]["parameters"]  # the endpoint's arguments and defaults
            callers[mode] = [_ApiCaller(base, app, request, parameters, visitor) for visitor in range(max(clients))]
            for _ in range(3):  # warm-up: the first calls of a model pay for lazy set-up
                callers[mode][0]()
        levels = []
        for n in clients:
            per_client = max(2, requests_per_level // n)
            row = {"clients": n, **{mode: _load_level(callers[mode][:n], per_client) for mode in settings}}
            row["throughput_ratio"] = round(row["on"]["requests_per_s"] / row["off"]["requests_per_s"], 2)
            row["p95_ratio"] = round(row["on"]["p95_ms"] / row["off"]["p95_ms"], 2)
            levels.append(row)
        return {"app": app, "request": {k: str(v) for k, v in request.items()}, "max_batch": settings,
                "measures": "upload + queued call + answer through gradio's HTTP API, httpx client threads",
                "levels": levels}
    finally:
        for server in servers.values():
            _stop(server)


def load_table(result: dict) -> str:
    """A load result as the README's markdown rows."""
    lines = ["| clients | off: req/s | off: p50 / p95 ms | on: req/s | on: p50 / p95 ms | on: mean batch | "
             "throughput on/off | p95 on/off |", "| " + " | ".join(["---"] * 8) + " |"]
    for row in result["levels"]:
        off, on = row["off"], row["on"]
        lines.append(f"| {row['clients']} | {off['requests_per_s']} | {off['p50_ms']:.0f} / {off['p95_ms']:.0f} | "
                     f"{on['requests_per_s']} | {on['p50_ms']:.0f} / {on['p95_ms']:.0f} | {on['mean_batch_rows']} | "
                     f"{row['throughput_ratio']}x | {row['p95_ratio']}x |")
    return "\n".join(lines)


def _generated_tokens(token_ids: torch.Tensor, pad_id: int, prompt_length: int) -> int:
    """New tokens in `generate()`'s answer: all after the prompt (the start token at least), padding excluded."""
    return int((token_ids[:, prompt_length:] != pad_id).sum())


def _token_agreement(reference: torch.Tensor, got: torch.Tensor) -> float:
    """The share of generate()'s tokens that another decoding repeats at the same place."""
    width = min(reference.shape[1], got.shape[1])
    return round(float((reference[:, :width] == got[:, :width]).float().mean()) * width / reference.shape[1], 4)


def bench_generation(loaded: LoadedModel, form: OnnxForm, batch_sizes: tuple[int, ...] = (1, 8),
                     repeats: int = 20, warmup: int = 3, cache_tokens: int = 64) -> dict:
    """Tokens per second of torch `generate()`, of the ONNX search (shared/inference/seq2seq.py) and of
    the same search with dynamic int8 decoder graphs, on the same inputs, greedy and beam search of 4,
    after checking that ONNX fp32 gives generate()'s tokens (int8: the share of equal tokens); then the
    ONNX search with and without its key/value cache at `cache_tokens` new tokens, where the decoder has
    that many positions after the prompt (otherwise a sentence says it has not). The inputs are the
    form's sample encoder feeds: sentences, scene images, or images with a question (as the decoder's
    prompt, or for BLIP its text encoder's input)."""
    threads = backend_threads()
    torch.set_num_threads(threads)
    paths = export.export_model(loaded, form).paths
    onnx = form.run_onnx(paths, loaded)
    onnx_int8 = form.run_onnx(export.int8_decoders(paths), loaded)

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
            got_int8 = onnx_int8.generate(**feeds, **settings)
            calls = {"torch": functools.partial(loaded.model.generate, **feeds, **settings),
                     "onnx": functools.partial(onnx.generate, **feeds, **settings),
                     "onnx_int8_decoder": functools.partial(onnx_int8.generate, **feeds, **settings)}
            with torch.inference_mode():
                times = _time_interleaved(calls, repeats, warmup)
            tokens = _generated_tokens(reference, pad_id, onnx.family.prompt(feeds, batch_size).shape[1])
            same = got_int8.shape == reference.shape and bool(torch.equal(got_int8, reference))
            row = {"decoding": decoding, "batch_size": batch_size, "new_tokens": tokens,
                   "tokens_equal": bool(torch.equal(reference, got)),
                   "int8_token_agreement": 1.0 if same else _token_agreement(reference, got_int8)}
            for name in calls:
                row[name] = {**_percentiles(times[name]),
                             "tokens_per_s": round(tokens / np.median(times[name]) * 1e3, 1)}
            row["onnx_speedup"] = round(row["torch"]["median_ms"] / row["onnx"]["median_ms"], 2)
            row["onnx_int8_decoder_speedup"] = round(
                row["torch"]["median_ms"] / row["onnx_int8_decoder"]["median_ms"], 2)
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


OFFER_POINTS = 1.0  # int8 or bf16 is offered only where no held-out metric drops by this many points or more


def _worst_drop_points(reference: dict[str, float], lower: dict[str, float]) -> float:
    """The largest fall, in points, of any held-out metric (fractions) from fp32 to a lower precision."""
    return round(max((100 * (reference[key] - value) for key, value in lower.items()), default=0.0), 2)


def _change_on_samples(before: np.ndarray, after: np.ndarray, output: str) -> dict:
    """How far another runtime's first output is from fp32's on the app's 8 sample inputs."""
    return {f"max_abs_{output}_change": float(np.abs(before - after).max()),
            "top1_agreement_on_samples": float((before.argmax(-1) == after.argmax(-1)).mean())}


def int8_report(loaded: LoadedModel, form: OnnxForm, report: export.ExportReport,
                held_out: Callable[[LoadedModel, Callable], dict] | None = None) -> dict:
    """How much dynamic and static int8 change a single-graph model's answers: agreement with fp32 on
    the sample inputs and, with `held_out`, the app's held-out metrics (fractions) on fp32 and int8.
    `offer` names the int8 kind to put in the registry (`int8 = "..."`): the one whose worst held-out
    drop is under OFFER_POINTS, the smaller file on a tie; none without held-out data."""
    ((name, spec),) = form.graphs.items()
    fp32_path = report.paths[name]
    fp32 = OnnxRunner(fp32_path, loaded.device, spec)
    feeds = form.sample_feeds(8)[name]
    output = spec.output_names[0]
    before = fp32(feeds)[output]
    reference = held_out(loaded, fp32) if held_out is not None else {}
    result: dict = {f"{key}_fp32": value for key, value in reference.items()}
    candidates = []
    for kind in export.INT8_KINDS:
        path = export.int8_path(fp32_path, kind, lambda: export.calibration_rows(form, name))
        int8 = OnnxRunner(path, loaded.device, spec)
        after = int8(feeds)[output]
        row = {"path": str(path), "size_ratio": round(fp32_path.stat().st_size / path.stat().st_size, 2),
               **_change_on_samples(before, after, output)}
        if reference:
            metrics = held_out(loaded, int8)
            row |= {f"{key}_int8": value for key, value in metrics.items()}
            row["worst_drop_points"] = _worst_drop_points(reference, metrics)
            if row["worst_drop_points"] < OFFER_POINTS:
                candidates.append((row["worst_drop_points"], -row["size_ratio"], kind))
        result[kind] = row
    if not reference:
        result["held_out"] = "none in this model's labels: no int8 copy is offered"
    result["offer"] = min(candidates)[2] if candidates else None
    return result


def bf16_report(loaded: LoadedModel, form: OnnxForm, report: export.ExportReport,
                held_out: Callable[[LoadedModel, Callable], dict] | None = None) -> dict:
    """How OpenVINO in bf16 changes a single-graph model's answers, as `int8_report` measures int8:
    `offer` is True (the registry's `bf16 = true`) where no held-out metric drops by OFFER_POINTS."""
    if not bf16.installed():
        return {"offer": None, "measured": "not here: OpenVINO is not installed (pip install 'demohub[openvino]')"}
    ((name, spec),) = form.graphs.items()
    fp32 = OnnxRunner(report.paths[name], loaded.device, spec)
    try:
        half = bf16.Bf16Runner(report.paths[name], spec)
    except UserError as error:
        return {"offer": None, "measured": f"not here: {error}"}
    feeds = form.sample_feeds(8)[name]
    output = spec.output_names[0]
    before, after = fp32(feeds)[output], half(feeds)[output]
    result: dict = {"precision": half.precision, **_change_on_samples(before, after, output)}
    reference = held_out(loaded, fp32) if held_out is not None else {}
    if not reference:
        return {**result, "offer": None, "held_out": "none in this model's labels: bf16 is not offered"}
    metrics = held_out(loaded, half)
    result |= {f"{key}_fp32": value for key, value in reference.items()}
    result |= {f"{key}_bf16": value for key, value in metrics.items()}
    result["worst_drop_points"] = _worst_drop_points(reference, metrics)
    # measured in bf16 only where this CPU computes in it (else OpenVINO ran fp32 and proved nothing)
    offered = half.precision == "bf16" and result["worst_drop_points"] < OFFER_POINTS
    return {**result, "offer": True if offered else None}


def int8_generation_report(loaded: LoadedModel, form: OnnxForm, report: export.ExportReport,
                           held_out: Callable[[LoadedModel, Callable], dict]) -> dict:
    """How dynamic int8 decoder steps (`export.int8_decoders`) change an encoder-decoder's held-out
    metrics (fractions) against the fp32 graphs; `offer` is "dynamic" where no metric drops by
    OFFER_POINTS or more (static int8 is not made for generation graphs)."""
    reference = held_out(loaded, form.run_onnx(report.paths, loaded))
    int8_paths = export.int8_decoders(report.paths)
    metrics = held_out(loaded, form.run_onnx(int8_paths, loaded))
    size = sum(path.stat().st_size for path in report.paths.values())
    row = {"paths": {name: str(path) for name, path in int8_paths.items()},
           "size_ratio": round(size / sum(path.stat().st_size for path in int8_paths.values()), 2),
           **{f"{key}_int8": value for key, value in metrics.items()},
           "worst_drop_points": _worst_drop_points(reference, metrics)}
    offered = bool(metrics) and row["worst_drop_points"] < OFFER_POINTS
    return {**{f"{key}_fp32": value for key, value in reference.items()}, "dynamic": row,
            "offer": "dynamic" if offered else None}


def explain_time(explain: Callable, model: str, image, backend: str = "onnx", repeats: int = 3,
                 **settings) -> dict:
    """Seconds for one whole `explain` request (a map and its deletion curves) on `backend`: the first
    call apart (it exports the graph and opens the session), then the median of `repeats` more, in
    wall time and in CPU time of this process (all its threads), with the machine's load beside
    them: on a busy machine the wall seconds mean little, the CPU seconds still bound the work."""
    import os

    started = time.perf_counter()
    first = explain(image, model=model, backend=backend, **settings)
    first_s = time.perf_counter() - started
    seconds, cpu_seconds = [], []
    for _ in range(repeats):
        started, cpu_started = time.perf_counter(), time.process_time()
        explain(image, model=model, backend=backend, **settings)
        seconds.append(time.perf_counter() - started)
        cpu_seconds.append(time.process_time() - cpu_started)
    return {"backend": backend, "threads": backend_threads(), "method": first["method"],
            **{k: first[k] for k in ("window", "stride") if k in first},
            "first_call_s": round(first_s, 2), "median_s": round(float(np.median(seconds)), 2),
            "median_cpu_s": round(float(np.median(cpu_seconds)), 2), "all_s": [round(s, 2) for s in seconds],
            "load_average_1min": round(os.getloadavg()[0], 2)}
