"""Export an app's model to ONNX, check it against torch, cache it on disk, optionally quantise it.

    path = export.ensure_onnx(loaded, spec, sample_feeds)

The exporter is `torch.onnx.export(..., dynamo=True)`. The file is cached under
`$DEMOHUB_CACHE/onnx/` by model, weights and exporter settings, written to a temporary
folder and moved into place, and accepted only if onnxruntime's outputs on real sample
inputs match torch's within the app's stated tolerance. The SHA-256 of every file of an export
is recorded beside it (`sha256.json`, in the same atomic move) and checked whenever the cache
is opened: a truncated or altered file is exported again, and the report's notes say so.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from shared.errors import UserError
from shared.loader import LoadedModel

log = logging.getLogger(__name__)

OPSET = 18
DIGESTS = "sha256.json"  # {file name: SHA-256} of the files of one export folder
CACHE_DIR = Path(os.environ.get("DEMOHUB_CACHE", Path.home() / ".cache" / "demohub"))

Feeds = dict[str, np.ndarray]


@dataclass(frozen=True)
class OnnxSpec:
    """How an app's model meets ONNX: named inputs and outputs, which axes are dynamic, and
    how close onnxruntime must stay to torch (|onnx - torch| <= atol + rtol * |torch|)."""

    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    dynamic_axes: dict[str, dict[int, str]] = field(default_factory=dict)
    atol: float = 1e-4
    rtol: float = 1e-3
    module: str = ""  # export this submodule (a VAE's decoder, say) instead of the whole model
    example_batch: int = 2  # batch of the example inputs; with 1, the exporter fixes the batch axis


class ExportMismatch(RuntimeError):
    """The exported graph does not reproduce torch within the spec's tolerance."""


class _NamedOutputs(torch.nn.Module):
    """Positional tensors in, the chosen output tensors out: the shape an exporter wants."""

    def __init__(self, model: torch.nn.Module, spec: OnnxSpec):
        super().__init__()
        self.model = getattr(model, spec.module) if spec.module else model
        self.spec = spec

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs = self.model(**dict(zip(self.spec.input_names, inputs, strict=True)))
        return tuple(outputs[name] for name in self.spec.output_names)


def weights_fingerprint(loaded: LoadedModel) -> str:
    """The Hub revision, or a hash of the local weights (embedded and fine-tuned folders change)."""
    if loaded.entry.revision:
        return loaded.entry.revision
    digest = hashlib.sha256()
    for weights in sorted(loaded.folder.glob("*.safetensors")):
        with weights.open("rb") as f:
            for block in iter(lambda: f.read(2**20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def onnx_path(loaded: LoadedModel, spec: OnnxSpec, quantize: bool = False) -> Path:
    settings = {
        "model": loaded.entry.name, "weights": weights_fingerprint(loaded), "opset": OPSET,
        "torch": torch.__version__, "spec": asdict(spec), "quantize": quantize,
    }
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    slug = loaded.entry.name.replace("/", "--").replace("@", "--")
    return CACHE_DIR / "onnx" / f"{slug}-{key}" / ("model.int8.onnx" if quantize else "model.onnx")


# Builds the module that is exported: positional tensors in spec.input_names order in, a tuple in
# spec.output_names order out. The default calls the model with named inputs; a model that needs
# more (a decoder carrying its key/value cache) brings its own (see shared/seq2seq.py).
Wrap = Callable[[torch.nn.Module, OnnxSpec], torch.nn.Module]


def torch_outputs(model: torch.nn.Module, spec: OnnxSpec, feeds: Feeds, wrap: Wrap = _NamedOutputs) -> list[np.ndarray]:
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    tensors = [torch.from_numpy(feeds[n]).to(device) for n in spec.input_names]
    tensors = [t.to(dtype) if t.is_floating_point() else t for t in tensors]
    with torch.inference_mode():
        outputs = wrap(model, spec)(*tensors)
    return [o.float().cpu().numpy() for o in outputs]


def compare(reference: list[np.ndarray], candidate: list[np.ndarray], spec: OnnxSpec) -> float:
    """The largest |candidate - reference|; raises ExportMismatch past the spec's tolerance."""
    worst = 0.0
    for name, ref, got in zip(spec.output_names, reference, candidate, strict=True):
        if ref.shape != got.shape:
            raise ExportMismatch(f"output {name}: shape {got.shape}, torch gives {ref.shape}")
        worst = max(worst, float(np.abs(ref - got).max()))
        if not np.allclose(got, ref, atol=spec.atol, rtol=spec.rtol):
            raise ExportMismatch(f"output {name}: max |onnx - torch| = {np.abs(ref - got).max():.3g}, "
                                 f"past atol={spec.atol} + rtol={spec.rtol}")
    return worst


@dataclass
class ExportReport:
    path: Path
    seconds: float
    max_abs_diff: float
    cached: bool
    notes: list[str] = field(default_factory=list)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def _record_digests(folder: Path) -> None:
    """Write the digests of every file in `folder` (under a temporary name, then renamed)."""
    digests = {f.name: _sha256(f) for f in sorted(folder.iterdir()) if f.is_file() and f.name != DIGESTS
               and not f.name.startswith(".")}
    scratch = folder / f".{DIGESTS}.{os.getpid()}"
    scratch.write_text(json.dumps(digests, indent=1))
    os.replace(scratch, folder / DIGESTS)


def intact(path: Path) -> bool:
    """Whether the cached export `path` and the files beside it still have their recorded digests."""
    try:
        digests = json.loads((path.parent / DIGESTS).read_text())
        return path.name in digests and all(_sha256(path.parent / name) == digest for name, digest in digests.items())
    except (OSError, ValueError, AttributeError):
        return False


def _drop_if_damaged(path: Path) -> list[str]:
    """Remove a cached export that no longer matches its digests; a note saying so, or none."""
    if not path.parent.exists() or intact(path):
        return []
    shutil.rmtree(path.parent, ignore_errors=True)
    log.warning("the cached ONNX export %s did not match its recorded SHA-256; exporting it again", path.parent.name)
    return ["the cached ONNX file did not match its recorded checksum (damaged or altered) and was exported again"]


def export(loaded: LoadedModel, spec: OnnxSpec, sample_feeds: Feeds, wrap: Wrap = _NamedOutputs) -> ExportReport:
    """Export (or reuse) the fp32 ONNX file of `loaded` and check it on `sample_feeds`.

    `sample_feeds` should have `spec.example_batch` rows.
    """
    from shared.backends import ort_session

    if not loaded.entry.onnx:
        raise UserError(f"{loaded.entry.name} is not marked as exportable to ONNX in the registry; "
                        "use the torch backend.")
    path = onnx_path(loaded, spec)
    started = time.perf_counter()
    notes = _drop_if_damaged(path)
    cached = path.is_file()
    # Export from an fp32 CPU copy: the file then runs on every provider.
    model = loaded.model
    if loaded.device.type != "cpu" or loaded.dtype != torch.float32:
        model = copy.deepcopy(model).float().cpu()
    reference = torch_outputs(model, spec, sample_feeds, wrap)
    if not cached:
        _write_onnx(wrap(model, spec), spec, sample_feeds, path)
        _check_dynamic_axes(path, spec)
    session = ort_session(path, torch.device("cpu"))
    got = session.run(list(spec.output_names), {n: sample_feeds[n] for n in spec.input_names})
    try:
        diff = compare(reference, got, spec)
    except ExportMismatch:
        shutil.rmtree(path.parent, ignore_errors=True)
        raise
    return ExportReport(path, time.perf_counter() - started, diff, cached, notes)


def _write_onnx(module: torch.nn.Module, spec: OnnxSpec, sample_feeds: Feeds, path: Path) -> None:
    dims: dict[str, torch.export.Dim] = {}
    dynamic_shapes = tuple(
        {axis: dims.setdefault(dim, torch.export.Dim(dim, min=1, max=4096))
         for axis, dim in spec.dynamic_axes.get(name, {}).items()} or None
        for name in spec.input_names
    )
    example = tuple(torch.from_numpy(sample_feeds[n]) for n in spec.input_names)
    path.parent.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=path.parent.parent))
    try:
        program = torch.onnx.export(
            module.eval(), example, input_names=list(spec.input_names),
            # one entry for the wrapper's single *inputs argument, itself a tuple per input
            output_names=list(spec.output_names), dynamic_shapes=(dynamic_shapes,), opset_version=OPSET,
            dynamo=True, verbose=False,
        )
        program.save(str(scratch / path.name))
        _record_digests(scratch)
        scratch.rename(path.parent)  # atomic: a reader sees the whole folder or none of it
    except OSError:
        if not path.is_file():  # a concurrent export that won the rename is fine
            raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    log.info("exported %s", path)


def _check_dynamic_axes(path: Path, spec: OnnxSpec) -> None:
    """Refuse a graph in which the exporter fixed an axis the spec asked to keep dynamic (it
    may fall back to a specialising strategy when a model does not export dynamically)."""
    import onnx

    inputs = {i.name: i.type.tensor_type.shape.dim for i in onnx.load(str(path), load_external_data=False).graph.input}
    for name, axes in spec.dynamic_axes.items():
        fixed = [axis for axis in axes if inputs[name][axis].HasField("dim_value")]
        if fixed:
            shutil.rmtree(path.parent, ignore_errors=True)
            raise ExportMismatch(f"the exporter fixed axes {fixed} of {name}: this model does not export with "
                                 "them dynamic; declare them static in its OnnxSpec")


def quantize(fp32_path: Path) -> Path:
    """Dynamic int8 weights for MatMul/Gemm (where it pays; CNN convolutions stay fp32)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    int8_path = fp32_path.with_name("model.int8.onnx")
    if not int8_path.is_file():
        scratch = int8_path.with_suffix(".tmp")
        quantize_dynamic(fp32_path, scratch, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"])
        scratch.rename(int8_path)
        _record_digests(int8_path.parent)
    return int8_path


def ensure_onnx(loaded: LoadedModel, spec: OnnxSpec, sample_feeds: Callable[[int], Feeds]) -> Path:
    """The checked ONNX file for `loaded`, exporting it on first use (and again if the cached
    file no longer matches its recorded digests)."""
    path = onnx_path(loaded, spec)
    if path.is_file() and intact(path):
        return path
    return export(loaded, spec, sample_feeds(spec.example_batch)).path
