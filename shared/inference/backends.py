"""Run a model on `torch`, `onnx`, `int8` or `bf16` with the same call, whatever its shape.

    run = backends.runner(loaded, "onnx", form)
    outputs = run({"pixel_values": pixels})          # a single graph: {"logits": np.ndarray}
    token_ids = run(**inputs, num_beams=4)           # an encoder-decoder: generate()'s answer

The onnx runtime is exported and checked on first use (shared/inference/export.py) and kept
in the loader's LRU cache beside the torch models. Every runner calls through `gpu.on_gpu`, the
one ZeroGPU entry point (a plain call anywhere but a ZeroGPU Space).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from shared import timing
from shared.errors import UserError
from shared.inference import batching, bf16, export, gpu
from shared.inference.graphs import OnnxForm
from shared.inference.sessions import OnnxRunner
from shared.models.loader import LoadedModel, cache
from shared.models.registry import ModelEntry

# int8: the ONNX graph quantised; bf16: the ONNX graph run by OpenVINO in bfloat16 (shared/inference/bf16.py).
# Each only for models the registry offers it for.
BACKENDS = ("torch", "onnx", "int8", "bf16")


def check_backend(backend: str, entry: ModelEntry | None = None) -> str:
    """`backend`, or a UserError: unknown, not runnable here, or int8 for a model it is not offered for."""
    if backend not in BACKENDS:
        raise UserError(f"Unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}.")
    if backend != "torch" and gpu.ZERO_GPU:
        raise UserError("On a ZeroGPU Space only the torch backend runs (the GPU is lent per request, and an ONNX "
                        "session outlives one); choose torch.")
    if backend == "int8" and entry is not None and not entry.int8:
        raise UserError(f"int8 is not offered for {entry.name}: it is offered only where quantising changes the "
                        "held-out results by under 1 point. Choose onnx or torch.")
    if backend == "bf16":
        if entry is not None and not entry.bf16:
            raise UserError(f"bf16 is not offered for {entry.name}: it is offered only where bfloat16 changes the "
                            "held-out results by under 1 point. Choose onnx or torch.")
        bf16.check_available()
    return backend


def offered(entry: ModelEntry | None) -> list[str]:
    """The backends a page offers for a model: onnx where it exports, int8 and bf16 only where its registry
    row offers them, bf16 only where it runs here (OpenVINO and a CPU with bf16 instructions); for no
    entry, every backend that runs here."""
    runs_here = {"bf16": bf16.available()}
    if entry is None:
        return [b for b in BACKENDS if runs_here.get(b, True)]
    allowed = {"torch": True, "onnx": entry.onnx, "int8": entry.onnx and bool(entry.int8),
               "bf16": entry.onnx and entry.bf16 and runs_here["bf16"]}
    return [b for b in BACKENDS if allowed[b]]


def runner(loaded: LoadedModel, backend: str, form: OnnxForm) -> Callable:
    """A callable that runs `loaded` on `backend`; the ONNX files are exported on first use. A
    single-graph model's concurrent calls are gathered into one batch (shared/inference/batching.py)."""
    run = _runner(loaded, check_backend(backend, loaded.asked_for), form)
    if form.generates:
        return run
    return batching.gathered(run, (loaded.entry.name, backend, str(loaded.device)))


def _runner(loaded: LoadedModel, backend: str, form: OnnxForm) -> Callable:
    if backend == "torch":
        return gpu.on_gpu(form.run_torch(loaded))

    def build() -> tuple[Callable, int]:
        paths = export.ensure_exported(loaded, form)
        return form.run_onnx(paths, loaded), sum(path.stat().st_size for path in paths.values())

    if backend == "int8":
        return gpu.on_gpu(_int8_runner(loaded, form))
    if backend == "bf16":
        return gpu.on_gpu(_bf16_runner(loaded, form))
    run, _ = cache.get(("onnx", loaded.entry.name, str(loaded.device)), _noted(loaded, "onnx", build),
                       lambda value: value[1])
    return gpu.on_gpu(run)


def _noted(loaded: LoadedModel, backend: str, build: Callable) -> Callable:
    """`build`, noted in the request that pays for it: a first onnx or int8 call took 0.9 s more than its
    model and said nothing of why (found by a visitor)."""

    def noted():
        started = time.perf_counter()
        built = build()
        if time.perf_counter() - started >= 0.05:  # "in 0.0 s" would tell the user nothing
            timing.note(f"opened {loaded.entry.name}'s {backend} runtime in {time.perf_counter() - started:.1f} s")
        return built

    return noted


def _int8_runner(loaded: LoadedModel, form: OnnxForm) -> Callable:
    """The registry's int8 copy (dynamic, or static calibrated on the app's sample inputs), made on first use."""
    kind = loaded.entry.int8
    if form.generates:
        return _int8_generation_runner(loaded, form, kind)

    def build() -> tuple[Callable, int]:
        ((name, spec),) = form.graphs.items()
        fp32 = export.ensure_exported(loaded, form)[name]
        path = export.int8_path(fp32, kind, lambda: export.calibration_rows(form, name))
        return OnnxRunner(path, loaded.device, spec), path.stat().st_size

    run, _ = cache.get(("int8", loaded.entry.name, str(loaded.device)), _noted(loaded, "int8", build),
                       lambda value: value[1])
    return run


def _int8_generation_runner(loaded: LoadedModel, form: OnnxForm, kind: str) -> Callable:
    """An encoder-decoder's search over its fp32 encoder and dynamic int8 decoder steps."""
    if kind != "dynamic":
        raise UserError(f"int8 is not offered for {loaded.entry.name}: an encoder-decoder's int8 copy is "
                        f"dynamic only, and its registry row says {kind!r}. Choose onnx or torch.")

    def build() -> tuple[Callable, int]:
        paths = export.int8_decoders(export.ensure_exported(loaded, form))
        return form.run_onnx(paths, loaded), sum(path.stat().st_size for path in paths.values())

    run, _ = cache.get(("int8", loaded.entry.name, str(loaded.device)), _noted(loaded, "int8", build),
                       lambda value: value[1])
    return run


def _bf16_runner(loaded: LoadedModel, form: OnnxForm) -> Callable:
    """The fp32 export compiled by OpenVINO in bf16, on the CPU whatever device torch uses."""
    if form.generates:
        raise UserError(f"bf16 is not offered for {loaded.entry.name}: generation graphs run on onnx or torch.")

    def build() -> tuple[Callable, int]:
        ((name, spec),) = form.graphs.items()
        path = export.ensure_exported(loaded, form)[name]
        return bf16.Bf16Runner(path, spec), path.stat().st_size

    run, _ = cache.get(("bf16", loaded.entry.name), _noted(loaded, "bf16 (OpenVINO)", build), lambda value: value[1])
    return run
