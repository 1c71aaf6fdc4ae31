"""Speed levers for a CPU Space: the real-size architectures `demohub bench --size` builds, static QDQ
int8 beside dynamic int8, the bench's columns, and the `int8` backend where the registry offers it."""

import json

import numpy as np
import onnx
import pytest
import torch

from shared import bench, timing
from shared.contract import Result
from shared.inference import export
from shared.inference.sessions import OnnxRunner
from shared.models import architectures, registry
from shared.serving import cli
from tests.conftest import DIGIT_EXAMPLES, REPO

SCENE = REPO / "apps" / "detection" / "examples" / "scene_0.png"

# Parameters of the Hub models the real-size copies stand for (their cards / config.json), millions.
HUB_PARAMS_M = {"vit-b16": 86.6, "resnet-50": 25.6, "efficientnet-b0": 5.3, "yolos-tiny": 6.5, "rtdetr-r18": 20.2,
                "segformer-b0": 3.8, "upernet-convnext-t": 60.2, "opus-mt-marian": 74.4}
# Static int8 of a random tiny copy may move a logit by this fraction of the largest fp32 logit.
STATIC_INT8_RTOL = 0.05


def run_cli(capsys, *argv):
    status = cli.main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


@pytest.mark.parametrize("name", list(architectures.ARCHITECTURES))
def test_real_size_copies_have_the_hub_models_size(name):
    with torch.device("meta"):  # shapes only: no memory, no time
        model, _ = architectures.ARCHITECTURES[name][2](True)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    assert params == pytest.approx(HUB_PARAMS_M[name], rel=0.02)


def test_every_app_the_issue_names_has_its_architectures():
    assert {app: architectures.of_app(app) for app in ("classification", "detection", "segmentation", "translation")} \
        == {"classification": ["vit-b16", "resnet-50", "efficientnet-b0"], "detection": ["yolos-tiny", "rtdetr-r18"],
            "segmentation": ["segformer-b0", "upernet-convnext-t"], "translation": ["opus-mt-marian"]}


@pytest.fixture(scope="module")
def tiny_vit():
    from apps.classification import task

    entry = registry.add_local("classification", architectures.build("vit-b16", "tiny"))
    loaded = task.MODELS.load(entry.name)
    return loaded, task.onnx_form(loaded)


def test_static_int8_is_qdq_keeps_the_fp32_operators_and_agrees_with_fp32(tiny_vit):
    loaded, form = tiny_vit
    fp32_path = export.export_model(loaded, form).paths["model"]
    qdq_path = export.quantize_static(fp32_path, export.calibration_rows(form, "model"))
    graph = onnx.load(str(qdq_path)).graph
    producers = {out: node for node in graph.node for out in node.output}
    ops = {node.op_type for node in graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    # every weight of a MatMul/Gemm/Conv is int8 per channel; softmax and normalisation read fp32 tensors
    quantized = [n for n in graph.node if n.op_type in export.STATIC_INT8_OPS
                 and producers.get(n.input[0]) is not None and producers[n.input[0]].op_type == "DequantizeLinear"]
    assert quantized
    for node in graph.node:
        if node.op_type in ("Softmax", "LayerNormalization", "Erf", "Gelu"):
            assert all(producers.get(i) is None or producers[i].op_type != "DequantizeLinear" for i in node.input)
    spec = form.graphs["model"]
    feeds = form.sample_feeds(8)["model"]
    before = OnnxRunner(fp32_path, loaded.device, spec)(feeds)["logits"]
    after = OnnxRunner(qdq_path, loaded.device, spec)(feeds)["logits"]
    assert np.abs(after - before).max() <= STATIC_INT8_RTOL * np.abs(before).max()
    assert (after.argmax(-1) == before.argmax(-1)).mean() >= 0.75


def test_a_request_that_makes_an_int8_copy_says_so(tiny_vit, tmp_path):
    """As with an export: the first int8 request's time includes quantising, and its notes say it."""
    loaded, form = tiny_vit
    fp32_path = tmp_path / "model.onnx"
    fp32_path.write_bytes(export.export_model(loaded, form).paths["model"].read_bytes())

    @timing.whole_request
    def request(kind: str) -> Result:
        export.int8_path(fp32_path, kind, lambda: export.calibration_rows(form, "model"))
        return Result(loaded, "int8", 0.0, {})

    for kind, words in (("dynamic", "to int8 (dynamic) in"), ("static", "to int8 (static) in")):
        first, again = request(kind), request(kind)
        assert any(words in note and note.endswith("cached for next time") for note in first.notes), first.notes
        assert not again.notes  # made once, then read from the cache


def test_replicas_making_the_same_int8_copy_at_once_do_not_collide(tiny_vit, tmp_path):
    """Two `demohub serve` replicas may share one cache: each writes its copy under a name of its
    own and renames it into place, so every caller gets a whole file and no scratch is left."""
    from concurrent.futures import ThreadPoolExecutor

    loaded, form = tiny_vit
    fp32_path = tmp_path / "model.onnx"
    fp32_path.write_bytes(export.export_model(loaded, form).paths["model"].read_bytes())
    rows = export.calibration_rows(form, "model")
    for kind in export.INT8_KINDS:
        with ThreadPoolExecutor(4) as pool:
            paths = list(pool.map(lambda k: export.int8_path(fp32_path, k, lambda: rows), [kind] * 4))
        assert len(set(paths)) == 1
        onnx.checker.check_model(str(paths[0]))
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == [
        "model.int8.onnx", "model.onnx", "model.qdq.onnx", export.DIGESTS]


@pytest.mark.slow
def test_bench_size_tiny_prints_every_column_at_batch_1_and_8(capsys):
    status, out, err = run_cli(capsys, "bench", "classification", "--size", "tiny", "--arch", "vit-b16",
                               "--repeats", "2", "--warmup", "1", "--markdown")
    assert status == 0
    result = json.loads(out)["architectures"]["vit-b16"]
    assert result["variants"] == list(bench.VARIANTS) and result["copies"] == "google/vit-base-patch16-224"
    assert [row["batch_size"] for row in result["results"]] == [1, 8]
    for row in result["results"]:
        assert row["onnx_within_tolerance"] and row["max_abs_diff"] <= 1e-3  # fp32 ONNX checked against torch
        for variant in bench.VARIANTS[1:]:
            assert row[variant]["median_ms"] > 0 and 0 <= row[f"{variant}_vs_torch"]["argmax_agreement"] <= 1
            assert row[f"{variant}_speedup"] == pytest.approx(  # printed to 2 decimals: 0.09 for 0.094
                row["torch"]["median_ms"] / row[variant]["median_ms"], rel=0.01, abs=0.005)
    table = [line for line in err.splitlines() if line.startswith("| ")]
    assert table[0] == "| model | batch | " + " | ".join(bench.VARIANTS) + " |" and len(table) == 4
    assert all(line.count("|") == len(bench.VARIANTS) + 3 for line in table)


def test_export_quantize_measures_both_kinds_on_held_out_digits(capsys):
    status, out, _ = run_cli(capsys, "export", "classification", "--quantize")
    quantized = json.loads(out)["quantized"]
    assert status == 0
    for kind in export.INT8_KINDS:
        row = quantized[kind]
        assert row["worst_drop_points"] == pytest.approx(
            100 * (quantized["digits_accuracy_fp32"] - row["digits_accuracy_int8"]), abs=0.01)
    offered = [k for k in export.INT8_KINDS if quantized[k]["worst_drop_points"] < bench.OFFER_POINTS]
    assert (quantized["offer"] in offered) if offered else quantized["offer"] is None
    # the registry offers what the measurement allows
    assert registry.get("classification", "digits-convnext").int8 == quantized["offer"]


def test_a_model_without_held_out_data_in_its_labels_is_offered_no_int8(capsys):
    """efficientnet-lite0 (ImageNet labels: no held-out set here) gets the agreement on the sample photos
    only, no held-out drop, and no offer; the registry offers it none."""
    status, out, _ = run_cli(capsys, "export", "classification", "--model", "efficientnet-lite0", "--quantize")
    quantized = json.loads(out)["quantized"]
    assert status == 0 and quantized["offer"] is None and "none" in quantized["held_out"]
    for kind in export.INT8_KINDS:
        assert "worst_drop_points" not in quantized[kind] and 0 <= quantized[kind]["top1_agreement_on_samples"] <= 1
    assert registry.get("classification", "efficientnet-lite0").int8 == ""


def test_the_int8_backend_says_int8_and_answers_as_fp32_does(capsys):
    image = str(DIGIT_EXAMPLES / "digit_7.png")
    answers = {}
    for backend in ("onnx", "int8"):
        status, out, _ = run_cli(capsys, "predict", "classification", "--image", image, "--backend", backend)
        assert status == 0
        answers[backend] = json.loads(out)
    assert answers["int8"]["precision"] == "int8" and answers["onnx"]["precision"] == "fp32"
    assert answers["int8"]["labels"][0]["label"] == answers["onnx"]["labels"][0]["label"] == "7"


# The embedded models with a held-out check of int8 besides the digits classifiers: the app, the
# model, and the metric its check reports (`AppSpec.held_out`).
HELD_OUT_CHECKS = [("detection", "digits-rtdetr", ["scenes_map_50", "scenes_map"]),
                   ("segmentation", "digits-upernet", ["scenes_mean_iou"]),
                   ("translation", "scenes-marian", ["scenes_bleu_en_de", "scenes_bleu_de_en"])]


@pytest.mark.parametrize(("app", "model", "metrics"), HELD_OUT_CHECKS)
def test_export_quantize_measures_int8_on_the_held_out_scenes(capsys, app, model, metrics):
    status, out, _ = run_cli(capsys, "export", app, "--quantize")
    quantized = json.loads(out)["quantized"]
    assert status == 0
    kinds = ["dynamic"] if app == "translation" else list(export.INT8_KINDS)  # generation: dynamic decoder steps
    for kind in kinds:
        row = quantized[kind]
        drops = [100 * (quantized[f"{m}_fp32"] - row[f"{m}_int8"]) for m in metrics]
        assert row["worst_drop_points"] == pytest.approx(max(drops), abs=0.01)
        assert all(0.5 < quantized[f"{m}_fp32"] <= 1 for m in metrics)  # the card's figures, as fractions
    offered = [k for k in kinds if quantized[k]["worst_drop_points"] < bench.OFFER_POINTS]
    assert (quantized["offer"] in offered) if offered else quantized["offer"] is None
    assert registry.get(app, model).int8 == quantized["offer"]  # the registry offers what the measurement allows


def test_int8_detection_segmentation_and_translation_say_int8_and_answer_as_fp32(capsys):
    answers = {}
    for backend in ("onnx", "int8"):
        for app, argv in (("detection", ["--image", str(SCENE)]),
                          ("segmentation", ["--image", str(SCENE)]),
                          ("translation", ["--text", "A red 3 to the left of a blue 7. Is there an 8?"])):
            status, out, _ = run_cli(capsys, "predict", app, *argv, "--backend", backend)
            assert status == 0
            answers[app, backend] = json.loads(out)
            assert answers[app, backend]["precision"] == ("int8" if backend == "int8" else "fp32")
    fp32, int8 = answers["detection", "onnx"]["detections"], answers["detection", "int8"]["detections"]
    assert [d["label"] for d in int8] == [d["label"] for d in fp32]
    assert np.abs(np.array([d["box"] for d in int8]) - np.array([d["box"] for d in fp32])).max() <= 2
    areas = [{s["label"]: s["area_fraction"] for s in answers["segmentation", b]["segments"]} for b in ("onnx", "int8")]
    assert areas[0].keys() == areas[1].keys()
    assert all(abs(areas[0][label] - areas[1][label]) < 0.01 for label in areas[0])
    assert answers["translation", "int8"]["translation"] == answers["translation", "onnx"]["translation"] == (
        "Eine rote 3 links von einer blauen 7. Gibt es eine 8?")


def test_int8_where_not_offered_is_one_sentence(capsys):
    # scenes-captioner: no held-out check of int8, so the registry does not offer it
    assert not registry.get("captioning", "scenes-captioner").int8
    status, out, err = run_cli(capsys, "predict", "captioning", "--image", str(SCENE), "--backend", "int8")
    assert status == 1 and out == "" and err.count("\n") == 1 and "int8 is not offered" in err
