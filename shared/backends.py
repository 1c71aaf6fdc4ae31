"""Run an app's model on `torch` or `onnx` with the same call: feeds in, named outputs out.

    run = backends.runner(loaded, "onnx", spec, sample_feeds)
    outputs = run({"pixel_values": pixels})        # {"logits": np.ndarray}

The onnx runner uses onnxruntime's best provider (TensorRT, CUDA, CPU), full graph
optimisation, the same thread count as torch, and IO binding on CUDA. Sessions are kept in
the loader's LRU cache beside the torch models.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from shared import export
from shared.errors import UserError
from shared.export import Feeds, OnnxSpec
from shared.loader import LoadedModel, cache

BACKENDS = ("torch", "onnx")


def threads() -> int:
    """One thread count for both backends: `DEMOHUB_THREADS`, else torch's default (the cores)."""
    return int(os.environ.get("DEMOHUB_THREADS", torch.get_num_threads()))


def providers(device: torch.device) -> list:
    import onnxruntime as ort

    available = ort.get_available_providers()
    chosen: list = []
    if device.type == "cuda":
        if "TensorrtExecutionProvider" in available and importlib.util.find_spec("tensorrt"):
            trt_cache = export.CACHE_DIR / "tensorrt"
            chosen.append(("TensorrtExecutionProvider",
                           {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(trt_cache)}))
        if "CUDAExecutionProvider" in available:
            chosen.append("CUDAExecutionProvider")
    return [*chosen, "CPUExecutionProvider"]


def ort_session(path: Path, device: torch.device, spinning: bool = True, intra_op_threads: int | None = None):
    """An onnxruntime session on the best provider, with `threads()` threads unless told otherwise.

    `spinning=False` lets its threads sleep right after each run: where torch works between runs
    (a generation loop), spinning threads take the cores that torch's own threads wait for
    (a 4x150 log_softmax went from 0.02 to 4 ms).
    """
    try:
        import onnxruntime as ort
    except ImportError:
        raise UserError("The onnx backend needs onnxruntime: pip install 'demohub[cpu]' "
                        "(or 'demohub[gpu]' for CUDA).") from None
    if device.type == "cuda" and hasattr(ort, "preload_dlls"):
        ort.preload_dlls()  # reuse the CUDA libraries that torch already ships
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = intra_op_threads or threads()
    options.inter_op_num_threads = 1
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=providers(device))


class TorchRunner:
    def __init__(self, loaded: LoadedModel, spec: OnnxSpec):
        self.loaded, self.spec = loaded, spec

    def __call__(self, feeds: Feeds) -> dict[str, np.ndarray]:
        outputs = export.torch_outputs(self.loaded.model, self.spec, feeds)
        return dict(zip(self.spec.output_names, outputs, strict=True))


class OnnxRunner:
    def __init__(self, path: Path, device: torch.device, spec: OnnxSpec):
        self.path, self.spec = path, spec
        self.session = ort_session(path, device)
        self.on_cuda = self.session.get_providers()[0] != "CPUExecutionProvider"
        batch = self.session.get_inputs()[0].shape[0]
        self.static_batch = batch if isinstance(batch, int) else None

    def __call__(self, feeds: Feeds) -> dict[str, np.ndarray]:
        size = len(feeds[self.spec.input_names[0]])
        if self.static_batch and size != self.static_batch:  # a graph exported at a fixed batch: run it in slices
            step = self.static_batch
            parts = [self({n: feeds[n][i:i + step] for n in self.spec.input_names}) for i in range(0, size, step)]
            return {name: np.concatenate([p[name] for p in parts]) for name in self.spec.output_names}
        inputs = {name: feeds[name] for name in self.spec.input_names}
        if not self.on_cuda:
            outputs = self.session.run(list(self.spec.output_names), inputs)
        else:  # IO binding: outputs stay on the GPU until one copy at the end
            binding = self.session.io_binding()
            for name, array in inputs.items():
                binding.bind_cpu_input(name, np.ascontiguousarray(array))
            for name in self.spec.output_names:
                binding.bind_output(name, "cuda")
            self.session.run_with_iobinding(binding)
            outputs = binding.copy_outputs_to_cpu()
        return dict(zip(self.spec.output_names, outputs, strict=True))


def runner(loaded: LoadedModel, backend: str, spec: OnnxSpec,
           sample_feeds: Callable[[int], Feeds], quantize: bool = False) -> Callable[[Feeds], dict]:
    """A callable that runs `loaded` on `backend`; the ONNX file is exported on first use."""
    if backend not in BACKENDS:
        raise UserError(f"Unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}.")
    if backend == "torch":
        return TorchRunner(loaded, spec)

    def build() -> OnnxRunner:
        path = export.ensure_onnx(loaded, spec, sample_feeds)
        return OnnxRunner(export.quantize(path) if quantize else path, loaded.device, spec)

    key = ("onnx", loaded.entry.name, str(loaded.device), quantize)
    return cache.get(key, build, lambda r: r.path.stat().st_size)

