"""Export a model to ONNX, check it against torch, cache it on disk, optionally quantise it.

    report = export.export_model(loaded, form)       # every graph of the form, checked
    paths = export.ensure_exported(loaded, form)     # the cached files, exported on first use

The exporter is `torch.onnx.export(..., dynamo=True)`. Each graph is cached under
`$DEMOHUB_CACHE/onnx/` by model, weights and exporter settings, written to a temporary
folder and moved into place, and accepted only if onnxruntime's outputs on real sample
inputs match torch's within the graph's stated tolerance. The SHA-256 of every file of an export
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

from shared import timing
from shared.errors import UserError
from shared.inference.graphs import Feeds, NamedOutputs, OnnxForm, OnnxSpec, Wrap
from shared.inference.sessions import CACHE_DIR, OnnxRunner, ort_session
from shared.models.loader import LoadedModel

log = logging.getLogger(__name__)

OPSET = 18
DIGESTS = "sha256.json"  # {file name: SHA-256} of the files of one export folder


class ExportMismatch(RuntimeError):
    """The exported graph does not reproduce torch within the spec's tolerance."""


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


def onnx_path(loaded: LoadedModel, spec: OnnxSpec) -> Path:
    """Where the fp32 export of one graph is cached (its int8 copy, from `quantize`, sits beside it)."""
    settings = {
        "model": loaded.entry.name, "weights": weights_fingerprint(loaded), "opset": OPSET,
        "torch": torch.__version__, "spec": asdict(spec), "rewrites": ["global-pools"],
    }
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    slug = loaded.entry.name.replace("/", "--").replace("@", "--")
    return CACHE_DIR / "onnx" / f"{slug}-{key}" / "model.onnx"


def torch_outputs(model: torch.nn.Module, spec: OnnxSpec, feeds: Feeds, wrap: Wrap = NamedOutputs) -> list[np.ndarray]:
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
class GraphReport:
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
    handle, scratch = tempfile.mkstemp(dir=folder, prefix=f".{DIGESTS}.")  # one of its own per writer
    with os.fdopen(handle, "w") as f:
        f.write(json.dumps(digests, indent=1))
    os.chmod(scratch, 0o644)  # as the files it describes (mkstemp makes it private)
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


def export_graph(loaded: LoadedModel, spec: OnnxSpec, sample_feeds: Feeds, wrap: Wrap = NamedOutputs) -> GraphReport:
    """Export (or reuse) one fp32 graph of `loaded` and check it on `sample_feeds`
    (`spec.example_batch` rows)."""
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
        _write_onnx(wrap(global_pools(model), spec), spec, sample_feeds, path)
        _check_dynamic_axes(path, spec)
    session = ort_session(path, torch.device("cpu"))
    got = session.run(list(spec.output_names), {n: sample_feeds[n] for n in spec.input_names})
    try:
        diff = compare(reference, got, spec)
    except ExportMismatch:
        shutil.rmtree(path.parent, ignore_errors=True)
        raise
    return GraphReport(path, time.perf_counter() - started, diff, cached, notes)


@dataclass
class ExportReport:
    """Every graph of a model's form: where it is, how long export (or the cache check) took, and
    how far onnxruntime is from torch on real inputs."""

    model: str
    graphs: dict[str, GraphReport]
    tolerance: dict[str, float]

    @property
    def paths(self) -> dict[str, Path]:
        return {name: graph.path for name, graph in self.graphs.items()}

    def as_json(self) -> dict:
        return {"model": self.model, "paths": {name: str(path) for name, path in self.paths.items()},
                "seconds": round(sum(g.seconds for g in self.graphs.values()), 2),
                "cached": all(g.cached for g in self.graphs.values()),
                "max_abs_diff_vs_torch": {name: g.max_abs_diff for name, g in self.graphs.items()},
                "tolerance": self.tolerance, "notes": [n for g in self.graphs.values() for n in g.notes]}


def check_exportable(loaded: LoadedModel) -> None:
    if not loaded.entry.onnx:
        raise UserError(f"{loaded.entry.name} is not marked as exportable to ONNX in the registry; "
                        "use the torch backend.")


def export_model(loaded: LoadedModel, form: OnnxForm) -> ExportReport:
    """Export (or reuse) every graph of `form`, each checked against torch on real inputs."""
    check_exportable(loaded)
    feeds = form.sample_feeds(form.example_batch)
    graphs = {name: export_graph(loaded, spec, feeds[name], form.wrap(name)) for name, spec in form.graphs.items()}
    return ExportReport(loaded.entry.name, graphs, form.tolerance)


def ensure_exported(loaded: LoadedModel, form: OnnxForm) -> dict[str, Path]:
    """The checked ONNX files of `loaded`, exported on first use (and again where a cached file no
    longer matches its recorded digests)."""
    check_exportable(loaded)
    paths = {name: onnx_path(loaded, spec) for name, spec in form.graphs.items()}
    if all(path.is_file() and intact(path) for path in paths.values()):
        return paths
    with timing.building(f"exported {loaded.entry.name} to ONNX", after=", cached for next time"):
        return export_model(loaded, form).paths


class TorchRunner:
    """One graph on torch, with the ONNX runner's call: feeds in, named numpy outputs out."""

    def __init__(self, loaded: LoadedModel, spec: OnnxSpec):
        self.loaded, self.spec = loaded, spec

    def __call__(self, feeds: Feeds) -> dict[str, np.ndarray]:
        outputs = torch_outputs(self.loaded.model, self.spec, feeds)
        return dict(zip(self.spec.output_names, outputs, strict=True))


def single_graph(spec: OnnxSpec, sample_feeds: Callable[[int], Feeds]) -> OnnxForm:
    """The form of a model that answers in one forward pass (graph name "model")."""
    return OnnxForm(
        graphs={"model": spec},
        sample_feeds=lambda n: {"model": sample_feeds(n)},
        run_torch=lambda loaded: TorchRunner(loaded, spec),
        run_onnx=lambda paths, loaded: OnnxRunner(paths["model"], loaded.device, spec),
    )


def global_pools(model: torch.nn.Module) -> torch.nn.Module:
    """`model`, or a copy whose EfficientNet pooler is `AdaptiveAvgPool2d(1)`, for export.

    transformers' EfficientNet pools its last feature map with `AvgPool2d(hidden_dim, ceil_mode=True)`
    (1280 for B0): a kernel far larger than the map (7 x 7 at 224 px, 128 x 128 at the export's largest
    4096 px), so one window that averages the whole map. OpenVINO's ONNX reader refuses a kernel larger
    than its input ("does not convert AveragePool-18"), so the bf16 backend could not read it. The global
    pool computes the same mean; the export's parity check holds the graph to the original torch model."""
    pooler = getattr(getattr(model, "efficientnet", None), "pooler", None)
    if not (isinstance(pooler, torch.nn.AvgPool2d) and pooler.ceil_mode and pooler.padding == 0
            and pooler.kernel_size == model.config.hidden_dim >= 4096 // 32):
        return model
    model = copy.deepcopy(model)
    model.efficientnet.pooler = torch.nn.AdaptiveAvgPool2d(1)
    return model


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
        if spec.fuse_attention:
            fuse_attention(scratch / path.name, spec, sample_feeds)
        _record_digests(scratch)
        scratch.rename(path.parent)  # atomic: a reader sees the whole folder or none of it
    except OSError:
        if not path.is_file():  # a concurrent export that won the rename is fine
            raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    log.info("exported %s", path)


def fuse_attention(path: Path, spec: OnnxSpec, sample_feeds: Feeds) -> None:
    """Rewrite the graph at `path`, in place, with onnxruntime's fused attention (onnxscript's
    `optimize_for_ort`: MultiHeadAttention, SkipLayerNormalization, BiasGelu), where it fuses some
    attention and the fused graph answers `sample_feeds` as the plain one does (the spec's tolerance).

    The dynamo exporter writes attention as MatMul, Softmax and MatMul, and onnxruntime's own graph
    optimisations do not fuse that; its fused kernel (flash attention on the CPU) is what pays for
    long sequences: YOLOS-tiny's 1,636 tokens ran 15-25% faster on 2 cores, ViT-B/16's 197 no faster
    (README, Real-size architectures). Any failure of the optional rewrite keeps the plain graph."""
    import onnx_ir as ir
    from onnxscript.rewriter.ort_fusions import optimize_for_ort

    fused = path.with_name("fused.onnx")
    try:
        model, counts = optimize_for_ort(ir.load(path))
        if not any(counts.get(name) for name in ("mha1", "mha2", "sdpa_via_mha")):
            return
        ir.save(model, fused)
        feeds = {n: sample_feeds[n] for n in spec.input_names}
        plain = ort_session(path, torch.device("cpu")).run(list(spec.output_names), feeds)
        compare(plain, ort_session(fused, torch.device("cpu")).run(list(spec.output_names), feeds), spec)
    except Exception as err:  # noqa: BLE001 - an optional rewrite of a third-party graph: any failure keeps the plain one
        log.warning("kept the plain attention of %s: the fused graph failed (%s)", path, err)
        fused.unlink(missing_ok=True)
        return
    os.replace(fused, path)
    log.info("fused the attention of %s (%s)", path, {k: v for k, v in counts.items() if v})


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


def quantize(fp32_path: Path, what: str = "the ONNX graph") -> Path:
    """Dynamic int8 weights for MatMul/Gemm (where it pays; CNN convolutions stay fp32); the request
    that makes the copy notes it with `what` it quantised."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    int8_path = fp32_path.with_name("model.int8.onnx")
    if not int8_path.is_file():
        with timing.building(f"quantised {what} to int8 (dynamic)", after=", cached for next time"):
            # in a folder of its own: replicas may share the cache, and the quantiser writes its
            # shape-inferred copy beside the model it reads
            scratch = Path(tempfile.mkdtemp(dir=fp32_path.parent))
            try:
                os.link(fp32_path, scratch / fp32_path.name)
                quantize_dynamic(scratch / fp32_path.name, scratch / int8_path.name, weight_type=QuantType.QInt8,
                                 op_types_to_quantize=["MatMul", "Gemm"])
                os.replace(scratch / int8_path.name, int8_path)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
            _record_digests(int8_path.parent)
    return int8_path


def int8_decoders(paths: dict[str, Path]) -> dict[str, Path]:
    """An encoder-decoder's graphs with dynamic int8 decoder steps, where its time goes (the encoder
    runs once per request and stays fp32)."""
    steps = {"decoder": "the first decoder step", "decoder_with_past": "the decoder step with the cache"}
    return {**paths, **{name: quantize(paths[name], what) for name, what in steps.items()}}


INT8_KINDS = ("dynamic", "static")
CALIBRATION_ROWS = 16  # rows of real inputs (the app's sample photos and scenes) static int8 is calibrated on
# onnxruntime's min/max calibration holds every intermediate output of every row at once (its option to
# merge ranges on the way drops the rows instead, onnxruntime 1.32): 16 rows of a 512 px UperNet took
# over 20 GB. Larger inputs get fewer rows, as many as 16 rows of 3 x 224 x 224 hold, at least 2.
CALIBRATION_VALUES = CALIBRATION_ROWS * 3 * 224 * 224


def calibration_rows(form: OnnxForm, name: str, rows: int = CALIBRATION_ROWS) -> list[Feeds]:
    """One feed per row of the form's real sample inputs (batch 1 also suits a fixed-batch graph)."""
    feeds = form.sample_feeds(rows)[name]
    per_row = max(value[:1].size for value in feeds.values())
    rows = max(2, min(rows, CALIBRATION_VALUES // per_row))
    return [{key: value[i:i + 1] for key, value in feeds.items()} for i in range(rows)]


def int8_path(fp32_path: Path, kind: str, calibration: Callable[[], list[Feeds]]) -> Path:
    """The `kind` int8 copy of an fp32 export (written beside it on first use)."""
    return quantize(fp32_path) if kind == "dynamic" else quantize_static(fp32_path, calibration())


# Static int8 quantises only the compute-heavy operators whose second input is a weight; softmax,
# normalisation, GELU, residual adds, resizes and the attention products of two activations stay fp32.
STATIC_INT8_OPS = ("Conv", "MatMul", "Gemm")


def quantize_static(fp32_path: Path, calibration: list[Feeds]) -> Path:
    """Static int8 in QDQ form (onnxruntime's `quantize_static`): per-channel int8 weights, uint8
    activations whose ranges are measured (min/max) on `calibration`, one feed per row of real inputs."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
    )
    from onnxruntime.quantization import quantize_static as ort_quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.rows = iter(calibration)

        def get_next(self):
            return next(self.rows, None)

    qdq_path = fp32_path.with_name("model.qdq.onnx")
    if not qdq_path.is_file():
        with timing.building("calibrated and quantised the ONNX graph to int8 (static)",
                             after=", cached for next time"):
            scratch = Path(tempfile.mkdtemp(dir=fp32_path.parent))
            try:
                prepared = scratch / "prepared.onnx"  # shapes inferred and constants folded, as the quantiser wants
                quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
                ort_quantize_static(str(prepared), str(scratch / qdq_path.name), Reader(),
                                    quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
                                    weight_type=QuantType.QInt8, op_types_to_quantize=list(STATIC_INT8_OPS),
                                    calibrate_method=CalibrationMethod.MinMax, extra_options={"MatMulConstBOnly": True})
                os.replace(scratch / qdq_path.name, qdq_path)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
            _record_digests(qdq_path.parent)
    return qdq_path
