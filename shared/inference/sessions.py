"""onnxruntime sessions: the best provider, the same thread count as torch, and one graph's runner.

    run = OnnxRunner(path, device, spec)
    outputs = run({"pixel_values": pixels})        # {"logits": np.ndarray}

Providers are tried in the order TensorRT, CUDA, CPU. Graph optimisation is full; on CUDA the
runner binds its outputs on the GPU and copies them once at the end (IO binding).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import torch

from shared.errors import UserError
from shared.inference.graphs import Feeds, OnnxSpec

CACHE_DIR = Path(os.environ.get("DEMOHUB_CACHE", Path.home() / ".cache" / "demohub"))


def threads() -> int:
    """One thread count for both backends: `DEMOHUB_THREADS`, else torch's default (the cores)."""
    return int(os.environ.get("DEMOHUB_THREADS", torch.get_num_threads()))


def providers(device: torch.device) -> list:
    import onnxruntime as ort

    available = ort.get_available_providers()
    chosen: list = []
    if device.type == "cuda":
        if "TensorrtExecutionProvider" in available and importlib.util.find_spec("tensorrt"):
            trt_cache = CACHE_DIR / "tensorrt"
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


class OnnxRunner:
    """One exported graph: feeds in, named outputs out."""

    def __init__(self, path: Path, device: torch.device, spec: OnnxSpec):
        self.path, self.spec = path, spec
        self.session = ort_session(path, device)
        self.on_cuda = self.session.get_providers()[0] != "CPUExecutionProvider"
        batch = self.session.get_inputs()[0].shape[0]
        self.static_batch = batch if isinstance(batch, int) else None

    def __call__(self, feeds: Feeds) -> dict[str, np.ndarray]:
        if self.static_batch and len(feeds[self.spec.input_names[0]]) != self.static_batch:
            return in_slices(self, feeds, self.static_batch, self.spec)
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


def in_slices(run, feeds: Feeds, step: int, spec: OnnxSpec) -> dict[str, np.ndarray]:
    """`run` over `feeds` `step` rows at a time: a graph exported at a fixed batch size."""
    size = len(feeds[spec.input_names[0]])
    parts = [run({n: feeds[n][i:i + step] for n in spec.input_names}) for i in range(0, size, step)]
    return {name: np.concatenate([p[name] for p in parts]) for name in spec.output_names}
