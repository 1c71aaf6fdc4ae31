"""How a model meets ONNX, as data: its graphs, their inputs and outputs, and how each backend runs it.

One `OnnxForm` describes every model shape the hub serves: a single graph (classifiers,
detectors, segmenters, generators: `export.single_graph`) or the three graphs of an
encoder-decoder that `generate()`s text (`seq2seq.form`). Export, the ONNX cache, the backend
switch and `demohub export|bench` all take a form, so they are one mechanism for both.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

Feeds = dict[str, np.ndarray]


@dataclass(frozen=True)
class OnnxSpec:
    """One graph: named inputs and outputs, which axes are dynamic, and how close onnxruntime
    must stay to torch (|onnx - torch| <= atol + rtol * |torch|)."""

    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    dynamic_axes: dict[str, dict[int, str]] = field(default_factory=dict)
    atol: float = 1e-4
    rtol: float = 1e-3
    module: str = ""  # export this submodule (a VAE's decoder, say) instead of the whole model
    example_batch: int = 2  # batch of the example inputs; with 1, the exporter fixes the batch axis
    # rewrite the exported attention into onnxruntime's fused MultiHeadAttention (export.fuse_attention)
    fuse_attention: bool = False


class NamedOutputs(torch.nn.Module):
    """Positional tensors in, the chosen output tensors out: the shape an exporter wants."""

    def __init__(self, model: torch.nn.Module, spec: OnnxSpec):
        super().__init__()
        self.model = getattr(model, spec.module) if spec.module else model
        self.spec = spec

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs = self.model(**dict(zip(self.spec.input_names, inputs, strict=True)))
        return tuple(outputs[name] for name in self.spec.output_names)


# Builds the module that is exported: positional tensors in spec.input_names order in, a tuple in
# spec.output_names order out. NamedOutputs calls the model with named inputs; a model that needs
# more (a decoder carrying its key/value cache) brings its own (see shared/inference/seq2seq.py).
Wrap = Callable[[torch.nn.Module, OnnxSpec], torch.nn.Module]


@dataclass(frozen=True)
class OnnxForm:
    """A loaded model's graphs and how each backend runs it.

    `sample_feeds(n)` gives n rows of real inputs for every graph (what an export is checked on);
    `run_torch(loaded)` and `run_onnx(paths, loaded)` return callables with one signature: feeds
    -> outputs for a single graph, `generate(**inputs, **settings) -> token ids` when `generates`.
    """

    graphs: dict[str, OnnxSpec]
    sample_feeds: Callable[[int], dict[str, Feeds]]
    run_torch: Callable[[Any], Callable]
    run_onnx: Callable[[dict[str, Path], Any], Callable]
    wraps: dict[str, Wrap] = field(default_factory=dict)  # graph name -> its Wrap (default NamedOutputs)
    generates: bool = False

    @property
    def example_batch(self) -> int:
        return max(spec.example_batch for spec in self.graphs.values())

    @property
    def tolerance(self) -> dict[str, float]:
        spec = next(iter(self.graphs.values()))
        return {"atol": spec.atol, "rtol": spec.rtol}

    def wrap(self, name: str) -> Wrap:
        return self.wraps.get(name, NamedOutputs)
