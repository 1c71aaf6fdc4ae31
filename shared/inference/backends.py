"""Run a model on `torch` or `onnx` with the same call, whatever its shape.

    run = backends.runner(loaded, "onnx", form)
    outputs = run({"pixel_values": pixels})          # a single graph: {"logits": np.ndarray}
    token_ids = run(**inputs, num_beams=4)           # an encoder-decoder: generate()'s answer

The onnx runtime is exported and checked on first use (shared/inference/export.py) and kept
in the loader's LRU cache beside the torch models. Every runner calls through `gpu.on_gpu`, the
one ZeroGPU entry point (a plain call anywhere but a ZeroGPU Space).
"""

from __future__ import annotations

from collections.abc import Callable

from shared.errors import UserError
from shared.inference import export, gpu
from shared.inference.graphs import OnnxForm
from shared.models.loader import LoadedModel, cache

BACKENDS = ("torch", "onnx")


def check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise UserError(f"Unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}.")
    if backend == "onnx" and gpu.ZERO_GPU:
        raise UserError("On a ZeroGPU Space only the torch backend runs (the GPU is lent per request, and an ONNX "
                        "session outlives one); choose torch.")
    return backend


def runner(loaded: LoadedModel, backend: str, form: OnnxForm) -> Callable:
    """A callable that runs `loaded` on `backend`; the ONNX files are exported on first use."""
    if check_backend(backend) == "torch":
        return gpu.on_gpu(form.run_torch(loaded))

    def build() -> tuple[Callable, int]:
        paths = export.ensure_exported(loaded, form)
        return form.run_onnx(paths, loaded), sum(path.stat().st_size for path in paths.values())

    run, _ = cache.get(("onnx", loaded.entry.name, str(loaded.device)), build, lambda value: value[1])
    return gpu.on_gpu(run)
