"""The `bf16` backend (issue #15, another runtime): the ONNX export run by OpenVINO, in fp32 as exact as
onnxruntime, in bf16 offered where its held-out results stay within 1 point, and its columns in the bench."""

import json

import numpy as np
import pytest

from shared import apps, bench
from shared.errors import UserError
from shared.inference import bf16, export
from shared.inference.sessions import OnnxRunner
from shared.models import architectures, registry
from shared.serving import cli
from tests.conftest import DIGIT_EXAMPLES, REPO

SCENE = REPO / "apps" / "detection" / "examples" / "scene_0.png"
needs_openvino = pytest.mark.skipif(not bf16.installed(), reason="needs OpenVINO (the openvino extra)")
needs_bf16 = pytest.mark.skipif(not bf16.available(), reason="needs OpenVINO and a CPU with bf16 instructions")
# The embedded models the registry offers bf16 for, with the held-out metrics their check reports.
OFFERED = [("classification", "digits-convnext", ["digits_accuracy"]),
           ("detection", "digits-rtdetr", ["scenes_map_50", "scenes_map"]),
           ("segmentation", "digits-upernet", ["scenes_mean_iou"])]


def run_cli(capsys, *argv):
    status = cli.main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


@pytest.fixture(scope="module")
def tiny_yolos():
    from apps.detection import task

    entry = registry.add_local("detection", architectures.build("yolos-tiny", "tiny"))
    loaded = task.MODELS.load(entry.name)
    return loaded, task.onnx_form(loaded)


@needs_openvino
def test_openvino_in_fp32_answers_as_torch_does_within_the_export_tolerance(tiny_yolos):
    """The same parity check as the onnx backend: OpenVINO reads the checked export and, asked for fp32,
    answers within `export.compare`'s tolerance of torch (at batch 1 and 3: the graph's batch is dynamic)."""
    loaded, form = tiny_yolos
    ((name, spec),) = form.graphs.items()
    path = export.export_model(loaded, form).paths[name]
    openvino = bf16.Bf16Runner(path, spec, "f32")
    assert openvino.precision == "fp32"
    for rows in (1, 3):
        feeds = form.sample_feeds(rows)[name]
        torch_out, got = form.run_torch(loaded)(feeds), openvino(feeds)
        export.compare(list(torch_out.values()), list(got.values()), spec)  # raises ExportMismatch beyond it


@needs_bf16
def test_bf16_runs_in_bf16_and_stays_near_fp32(tiny_yolos):
    loaded, form = tiny_yolos
    ((name, spec),) = form.graphs.items()
    path = export.export_model(loaded, form).paths[name]
    feeds = form.sample_feeds(2)[name]
    half, fp32 = bf16.Bf16Runner(path, spec), OnnxRunner(path, loaded.device, spec)
    assert half.precision == "bf16"
    got, reference = half(feeds), fp32(feeds)
    for output in spec.output_names:  # bf16 keeps 8 bits of mantissa: within a few per cent of the scale
        scale = float(np.abs(reference[output]).max())
        assert 0 < float(np.abs(got[output] - reference[output]).max()) <= 0.05 * scale


@needs_bf16
@pytest.mark.parametrize(("app", "model", "metrics"), OFFERED)
def test_export_quantize_measures_bf16_on_held_out_data_and_the_registry_offers_what_it_allows(app, model, metrics):
    """What `demohub export APP --quantize` prints under "bf16" (its int8 half is test_int8's)."""
    spec = apps.get(app)
    loaded = spec.models.load(model)
    form = spec.onnx(loaded)
    report = bench.bf16_report(loaded, form, export.export_model(loaded, form), spec.held_out)
    assert report["precision"] == "bf16"
    drops = [100 * (report[f"{m}_fp32"] - report[f"{m}_bf16"]) for m in metrics]
    assert report["worst_drop_points"] == pytest.approx(max(drops), abs=0.01)
    assert report["offer"] is (True if report["worst_drop_points"] < bench.OFFER_POINTS else None)
    assert registry.get(app, model).bf16 == bool(report["offer"])


@needs_openvino
def test_efficientnet_exports_a_pool_openvino_reads_and_without_held_out_data_is_offered_no_bf16(capsys):
    """transformers' EfficientNet pools with AvgPool2d(1280, ceil_mode=True), which OpenVINO 2026.4's ONNX
    reader refuses; it is exported as the global pool it is (`export.global_pools`), still checked against
    torch. efficientnet-lite0 (ImageNet labels: no held-out set here) then gets a bf16 report but no offer."""
    status, out, _ = run_cli(capsys, "export", "classification", "--model", "efficientnet-lite0", "--quantize")
    result = json.loads(out)
    report = result["bf16"]
    assert status == 0 and result["max_abs_diff_vs_torch"]["model"] <= 1e-3
    assert report["offer"] is None and "none" in report["held_out"] and "measured" not in report
    assert report["top1_agreement_on_samples"] >= 0.75
    assert not registry.get("classification", "efficientnet-lite0").bf16


@needs_openvino
def test_a_graph_openvino_cannot_compile_is_one_sentence(tiny_yolos, monkeypatch):
    import openvino

    def refuse(*args, **kwargs):
        raise RuntimeError("Exception from src/inference/src/cpp/core.cpp:132:\nModel wasn't fully converted.\n"
                           "Summary:\n-- Conversion is failed for: AveragePool-18\n")

    loaded, form = tiny_yolos
    ((name, spec),) = form.graphs.items()
    path = export.export_model(loaded, form).paths[name]
    monkeypatch.setattr(openvino.Core, "compile_model", refuse)
    with pytest.raises(UserError, match=r"^OpenVINO cannot compile this model's ONNX graph \(it does not convert "
                                        r"AveragePool-18\), so it has no bf16 backend\. Choose onnx or torch\.$"):
        bf16.Bf16Runner(path, spec)
    report = bench.bf16_report(loaded, form, export.export_model(loaded, form), held_out=None)
    assert report["offer"] is None and report["measured"].startswith("not here: OpenVINO cannot compile")


@needs_openvino
def test_a_model_without_held_out_data_is_offered_no_bf16(tiny_yolos):
    loaded, form = tiny_yolos
    report = bench.bf16_report(loaded, form, export.export_model(loaded, form), held_out=None)
    assert report["offer"] is None and "none" in report["held_out"]
    assert 0 <= report["top1_agreement_on_samples"] <= 1


@needs_bf16
def test_the_bf16_backend_says_bf16_and_answers_as_fp32_does(capsys):
    answers = {}
    for backend in ("onnx", "bf16"):
        for app, image in (("classification", DIGIT_EXAMPLES / "digit_7.png"), ("detection", SCENE),
                           ("segmentation", SCENE)):
            status, out, _ = run_cli(capsys, "predict", app, "--image", str(image), "--backend", backend)
            assert status == 0
            answers[app, backend] = json.loads(out)
            assert answers[app, backend]["precision"] == ("bf16" if backend == "bf16" else "fp32")
    assert answers["classification", "bf16"]["labels"][0]["label"] == "7"
    assert answers["classification", "onnx"]["labels"][0]["label"] == "7"
    fp32, half = answers["detection", "onnx"]["detections"], answers["detection", "bf16"]["detections"]
    assert [d["label"] for d in half] == [d["label"] for d in fp32]
    assert np.abs(np.array([d["box"] for d in half]) - np.array([d["box"] for d in fp32])).max() <= 2
    areas = [{s["label"]: s["area_fraction"] for s in answers["segmentation", b]["segments"]} for b in ("onnx", "bf16")]
    assert areas[0].keys() == areas[1].keys()
    assert all(abs(areas[0][label] - areas[1][label]) < 0.01 for label in areas[0])


def test_bf16_where_not_offered_is_one_sentence(capsys):
    assert not registry.get("captioning", "scenes-captioner").bf16
    for app, image in (("captioning", SCENE), ("classification", DIGIT_EXAMPLES / "digit_7.png")):
        model = ["--model", "efficientnet-lite0"] if app == "classification" else []
        status, out, err = run_cli(capsys, "predict", app, "--image", str(image), *model, "--backend", "bf16")
        assert status == 1 and out == "" and err.count("\n") == 1 and "bf16 is not offered" in err


def test_without_openvino_the_bf16_backend_is_one_sentence_and_not_offered(capsys, monkeypatch):
    monkeypatch.setattr(bf16, "installed", lambda: False)
    status, out, err = run_cli(capsys, "predict", "classification", "--image", str(DIGIT_EXAMPLES / "digit_7.png"),
                               "--backend", "bf16")
    assert status == 1 and out == "" and err.count("\n") == 1 and "pip install 'demohub[openvino]'" in err
    from shared.inference import backends

    assert "bf16" not in backends.offered(registry.get("classification", "digits-convnext"))


@needs_openvino
@pytest.mark.slow
def test_bench_prints_the_openvino_columns_beside_the_others(capsys):
    status, out, err = run_cli(capsys, "bench", "detection", "--size", "tiny", "--arch", "yolos-tiny", "--repeats",
                               "2", "--warmup", "1", "--batch-sizes", "1", "--variants", "onnx", "openvino",
                               "openvino_bf16", "--markdown")
    assert status == 0
    result = json.loads(out)["architectures"]["yolos-tiny"]
    assert result["variants"] == ["torch", "onnx", "openvino", "openvino_bf16"]
    assert result["openvino_precision"] == {"openvino": "fp32",
                                            "openvino_bf16": "bf16" if bf16.cpu_has_bf16() else "fp32"}
    (row,) = result["results"]
    assert row["openvino_vs_torch"]["max_rel_diff"] <= 1e-3  # fp32: the export's tolerance
    for variant in ("openvino", "openvino_bf16"):
        assert row[variant]["median_ms"] > 0 and row[f"{variant}_speedup"] > 0
    assert "| model | batch | torch | onnx | openvino | openvino_bf16 |" in err


@pytest.mark.parametrize("backend", ["int8", "bf16"])
def test_an_offline_hub_model_is_refused_what_its_page_does_not_offer_naming_it(backend):
    """The page offers int8 and bf16 by the model picked; its offline stand-in (which may offer them) does
    not change that, and the sentence names the model asked for (found by a visitor: detection answered
    hustvl/yolos-tiny on bf16 with digits-rtdetr, classification named efficientnet-lite0)."""
    from apps.classification import task as classification
    from apps.detection import task as detection

    for run, model, image in ((classification.classify, "google/efficientnet-b0", DIGIT_EXAMPLES / "digit_7.png"),
                              (detection.detect, "hustvl/yolos-tiny", SCENE)):
        with pytest.raises(UserError, match=f"^{backend} is not offered for {model}:"):
            run(image, model=model, backend=backend, fallback=True)
        assert run(image, model=model, backend="onnx", fallback=True).loaded.unavailable  # onnx: its stand-in
