"""The `bf16` backend: the exported ONNX graph run by OpenVINO in bfloat16 on the CPU.

    run = Bf16Runner(path, spec)
    outputs = run({"pixel_values": pixels})        # {"logits": np.ndarray}, as OnnxRunner answers

Why OpenVINO: onnxruntime's CPU provider has no bf16 kernels, and attention over long sequences (YOLOS-tiny
reads 1,600 tokens of a photo) runs near the fp32 peak of two cores in both torch and onnxruntime. CPUs
with bf16 instructions (AVX512-BF16 on AMD Zen 4 and Intel Cooper Lake, AMX on Sapphire Rapids) do twice
the products per instruction, and OpenVINO's CPU plugin uses them: it is its own default precision there.
Like int8, bf16 changes the answers a little, so the backend is offered only for models whose registry row
says `bf16 = true` (held-out results within 1 point: `demohub export APP --quantize`).
"""

from __future__ import annotations

import functools
import importlib.util
import re
import threading
from pathlib import Path

import numpy as np

from shared.errors import UserError
from shared.inference.graphs import Feeds, OnnxSpec
from shared.inference.sessions import in_slices, threads


def installed() -> bool:
    return importlib.util.find_spec("openvino") is not None


@functools.cache
def cpu_has_bf16() -> bool:
    """Whether this CPU computes in bf16: its flags on Linux (no OpenVINO import on a page build), else
    OpenVINO's own answer."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
        return re.search(r"\b(avx512_bf16|amx_bf16)\b", flags) is not None
    except OSError:
        import openvino

        return "BF16" in openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def available() -> bool:
    """Whether the bf16 backend can run here: OpenVINO installed and a CPU with bf16 instructions."""
    return installed() and cpu_has_bf16()


def check_installed() -> None:
    if not installed():
        raise UserError("The bf16 backend needs OpenVINO: pip install 'demohub[openvino]'. Choose onnx or torch.")


def check_available() -> None:
    check_installed()
    if not cpu_has_bf16():
        raise UserError("This CPU has no bf16 instructions (AVX512-BF16 or AMX), so bf16 would run no faster "
                        "than onnx. Choose onnx or torch.")


class Bf16Runner:
    """One exported graph compiled by OpenVINO for the CPU: feeds in, named outputs out.

    `precision="f32"` compiles the same graph in fp32, for the parity check against torch."""

    def __init__(self, path: Path, spec: OnnxSpec, precision: str = "bf16"):
        import openvino

        self.path, self.spec = path, spec
        try:
            self.compiled = openvino.Core().compile_model(str(path), "CPU", {
                "INFERENCE_PRECISION_HINT": precision, "INFERENCE_NUM_THREADS": threads(),
                "PERFORMANCE_HINT": "LATENCY"})
        except RuntimeError as error:  # an operator its ONNX reader does not convert (EfficientNet-Lite's pool)
            failed = re.search(r"Conversion is failed for: (.+)", str(error))
            reason = f"it does not convert {failed.group(1).strip()}" if failed else str(error).splitlines()[0]
            raise UserError(f"OpenVINO cannot compile this model's ONNX graph ({reason}), so it has no bf16 "
                            "backend. Choose onnx or torch.") from None
        # what OpenVINO compiled it in: "bf16", or "fp32" where asked so (or where the CPU has no bf16)
        ran_in = self.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        self.precision = {"f32": "fp32"}.get(ran_in, ran_in)
        batch = self.compiled.input(0).get_partial_shape()[0]
        self.static_batch = batch.get_length() if batch.is_static else None
        self.request = self.compiled.create_infer_request()
        self.lock = threading.Lock()  # one infer request, one call at a time

    def __call__(self, feeds: Feeds) -> dict[str, np.ndarray]:
        if self.static_batch and len(feeds[self.spec.input_names[0]]) != self.static_batch:
            return in_slices(self, feeds, self.static_batch, self.spec)
        with self.lock:
            outputs = self.request.infer({name: feeds[name] for name in self.spec.input_names})
            return {name: np.array(outputs[self.compiled.output(name)]) for name in self.spec.output_names}
