"""`demohub` as users call it: JSON on stdout, or one line on stderr and exit status 1."""

import json
import subprocess
import sys

import pytest

from shared.data.examples import PHOTOS
from shared.serving import cli
from tests.conftest import DIGIT_EXAMPLES, REPO

CAT = str(PHOTOS["cat"])


def run_cli(capsys, *argv):
    status = cli.main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_predict_prints_the_promised_json(capsys):
    status, out, _ = run_cli(capsys, "predict", "classification", "--image", str(DIGIT_EXAMPLES / "digit_7.png"),
                             "--backend", "onnx", "--top-k", "3")
    result = json.loads(out)
    assert status == 0
    assert set(result) >= {"labels", "model", "backend", "latency_ms"}
    assert result["labels"][0]["label"] == "7" and len(result["labels"]) == 3
    assert result["model"] == "digits-convnext" and result["backend"] == "onnx" and result["latency_ms"] > 0


def test_predict_takes_a_local_model_folder(capsys, tiny_models, tmp_path):
    from tests.tiny import make_tiny_classifier

    folder = make_tiny_classifier("vit", tmp_path / "my-vit")
    status, out, _ = run_cli(capsys, "predict", "classification", "--image", CAT, "--model", str(folder))
    assert status == 0 and json.loads(out)["model"] == "my-vit"


@pytest.mark.parametrize("argv, words", [
    (["--image", "/no/such/file.png"], "could not be found"),
    (["--image", str(REPO / "pyproject.toml")], "not an image"),
    (["--image", CAT, "--top-k", "0"], "top_k"),
    (["--image", CAT, "--model", "no-such-model"], "Choose one of"),
    (["--image", CAT, "--model", "google/vit-base-patch16-224"], "cannot be reached"),
])
def test_bad_input_is_one_line_and_status_1(capsys, monkeypatch, argv, words):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    status, out, err = run_cli(capsys, "predict", "classification", *argv)
    assert status == 1 and out == ""
    assert err.count("\n") == 1 and err.startswith("demohub: ") and words in err


def test_export_with_quantize_measures_the_change(capsys):
    status, out, _ = run_cli(capsys, "export", "classification", "--quantize")
    result = json.loads(out)
    assert status == 0 and result["max_abs_diff_vs_torch"]["model"] <= result["tolerance"]["atol"]
    quantized = result["quantized"]
    for kind in ("dynamic", "static"):
        assert quantized[kind]["digits_accuracy_int8"] >= quantized["digits_accuracy_fp32"] - 0.02
        assert 0 <= quantized[kind]["top1_agreement_on_samples"] <= 1


def test_bench_reports_both_backends_and_the_ratio(capsys, tiny_models):
    status, out, _ = run_cli(capsys, "bench", "classification", "--model", tiny_models["vit"], "--repeats", "3",
                             "--variants", "onnx")
    result = json.loads(out)
    assert status == 0 and [row["batch_size"] for row in result["results"]] == [1, 8]
    for row in result["results"]:
        assert row["torch"]["median_ms"] > 0 and row["onnx"]["median_ms"] > 0
        assert row["onnx_speedup"] == pytest.approx(row["torch"]["median_ms"] / row["onnx"]["median_ms"], rel=0.01)


def test_the_installed_command_exits_1_without_a_traceback():
    done = subprocess.run([sys.executable, "-m", "shared.serving.cli", "predict", "classification", "--image",
                           "nope.png"], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == ["demohub: The image file could not be found: check the path, "
                                                "or upload it again."]


def test_predict_generative_writes_the_grid(capsys, tmp_path):
    out = tmp_path / "grid.png"
    status, stdout, _ = run_cli(capsys, "predict", "generative", "--seed", "4", "--n", "6", "--label", "3",
                                "--out", str(out), "--backend", "onnx")
    result = json.loads(stdout)
    assert status == 0 and out.is_file() and result["n"] == 6 and result["model"] == "digits-gan"


@pytest.mark.parametrize("argv, words", [
    (["--seed", "seven"], "seed must be a whole number"),
    (["--seed", "1", "--n", "0"], "n must be a whole number"),
    (["--seed", "1", "--label", "12"], "has no label '12'"),
])
def test_predict_generative_bad_settings(capsys, tmp_path, argv, words):
    status, out, err = run_cli(capsys, "predict", "generative", *argv, "--out", str(tmp_path / "g.png"))
    assert status == 1 and out == "" and words in err and err.count("\n") == 1


def test_predict_adversarial_prints_the_promised_json(capsys):
    status, out, _ = run_cli(capsys, "predict", "adversarial", "--image", str(DIGIT_EXAMPLES / "digit_3.png"),
                             "--attack", "pgd", "--eps", "0.1", "--target", "8")
    result = json.loads(out)
    assert status == 0 and set(result) >= {"before", "after", "linf", "l2", "success"}
    assert result["before"][0]["label"] == "3" and result["success"] == (result["after"][0]["label"] == "8")
    assert result["linf"] <= 0.1 + 1e-6


def test_predict_adversarial_refuses_an_unknown_target(capsys):
    status, _, err = run_cli(capsys, "predict", "adversarial", "--image", CAT, "--eps", "0.05", "--target", "dog")
    assert status == 1 and "has no label 'dog'" in err


def test_predict_detection_prints_boxes_in_input_pixels(capsys):
    scene = REPO / "apps" / "detection" / "examples" / "scene_0.png"
    status, out, _ = run_cli(capsys, "predict", "detection", "--image", str(scene), "--threshold", "0.5")
    result = json.loads(out)
    assert status == 0 and result["detections"] and result["model"] == "digits-rtdetr"
    for row in result["detections"]:
        assert set(row) == {"label", "score", "box"} and row["score"] >= 0.5
        assert 0 <= row["box"][0] < row["box"][2] <= 128 and 0 <= row["box"][1] < row["box"][3] <= 128


def test_predict_detection_no_nms_keeps_every_box(capsys, tmp_path):
    from shared.data.scenes import make_scene

    make_scene(2, 8).image.save(tmp_path / "scene.png")  # held out; a digit of it gets two boxes without NMS
    counts = {}
    for switch in ("--nms", "--no-nms"):
        status, out, _ = run_cli(capsys, "predict", "detection", "--image", str(tmp_path / "scene.png"),
                                 "--threshold", "0.5", switch)
        assert status == 0
        counts[switch] = len(json.loads(out)["detections"])
    assert 0 < counts["--nms"] < counts["--no-nms"]


def test_predict_segmentation_writes_the_mask(capsys, tmp_path):
    scene = REPO / "apps" / "detection" / "examples" / "scene_0.png"
    status, out, _ = run_cli(capsys, "predict", "segmentation", "--image", str(scene), "--out-mask",
                             str(tmp_path / "mask.png"))
    result = json.loads(out)
    from PIL import Image

    mask = Image.open(tmp_path / "mask.png")
    assert status == 0 and mask.size == (128, 128)
    assert {s["label"] for s in result["segments"]} >= {"background"}
    assert abs(sum(s["area_fraction"] for s in result["segments"]) - 1) < 1e-3


def test_predict_translation_prints_the_promised_json(capsys):
    status, out, _ = run_cli(capsys, "predict", "translation", "--text", "Is there an 8? A red 3.", "--src", "en",
                             "--tgt", "de", "--backend", "onnx")
    result = json.loads(out)
    assert status == 0 and set(result) >= {"translation", "model", "backend", "latency_ms"}
    assert result["translation"] == "Gibt es eine 8? Eine rote 3." and result["backend"] == "onnx"


@pytest.mark.parametrize("argv, words", [
    (["--text", ""], "empty"),
    (["--text", "   "], "empty"),
    (["--text", "x" * 6000], "limit is 5,000"),
    (["--text", "hi", "--src", "en", "--tgt", "fr"], "does not translate English to French"),
    (["--text", "hi", "--num-beams", "0"], "num_beams"),
    (["--text", "hi", "--model", "Helsinki-NLP/opus-mt-en-de"], "cannot be reached"),
])
def test_predict_translation_bad_input(capsys, monkeypatch, argv, words):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    status, out, err = run_cli(capsys, "predict", "translation", *argv)
    assert status == 1 and out == ""
    assert err.count("\n") == 1 and words in err


SCENE = str(REPO / "apps" / "detection" / "examples" / "scene_0.png")


def test_predict_captioning_and_vqa_print_the_promised_json(capsys):
    status, out, _ = run_cli(capsys, "predict", "captioning", "--image", SCENE, "--lang", "de", "--num-beams", "3",
                             "--num-captions", "2", "--max-new-tokens", "24")
    result = json.loads(out)
    assert status == 0 and set(result) >= {"caption", "captions", "model", "backend", "latency_ms", "notes"}
    assert result["caption"] == result["captions"][0]["text"] and len(result["captions"]) == 2
    status, out, _ = run_cli(capsys, "predict", "vqa", "--image", SCENE, "--question", "how many digits are there?",
                             "--question", "is there a 7?", "--top-k", "3")
    result = json.loads(out)
    assert status == 0 and set(result) >= {"answers", "model", "backend", "latency_ms", "notes"}
    assert [a["question"] for a in result["answers"]] == ["how many digits are there?", "is there a 7?"]
    assert all(set(a) == {"question", "answer", "score", "top_k"} and len(a["top_k"]) == 3 for a in result["answers"])


@pytest.mark.parametrize("argv, words", [
    (["vqa", "--question", ""], "Question 1 is empty"),
    (["vqa", "--question", "is there a 3?", "--question", "   "], "Question 2 is empty"),
    (["vqa", "--question", "x" * 501], "the limit is 500"),
    (["vqa", *["--question", "is there a 3?"] * 17], "the limit is 16 at a time"),
    (["vqa", "--question", "is there a 3?", "--top-k", "11"], "top_k must be a whole number from 1 to 10"),
    (["captioning", "--prompt", "a photo of"], "takes no text prompt"),
    (["captioning", "--lang", "fr"], "does not caption in 'fr'"),
    (["captioning", "--num-beams", "0"], "num_beams must be a whole number from 1 to 8"),
    (["captioning", "--num-beams", "9"], "num_beams must be a whole number from 1 to 8"),
    (["captioning", "--num-beams", "2", "--num-captions", "3"], "cannot exceed num_beams"),
    (["captioning", "--max-new-tokens", "0"], "max_new_tokens must be a whole number from 1 to 128"),
    (["captioning", "--max-new-tokens", "127"], "max_new_tokens must be a whole number up to"),
    (["captioning", "--min-new-tokens", "-1"], "min_new_tokens must be a whole number"),
    (["captioning", "--repetition-penalty", "0.5"], "repetition_penalty must be a number from 1.0 to 2.0"),
    (["captioning", "--no-repeat-ngram-size", "11"], "no_repeat_ngram_size must be a whole number"),
])
def test_predict_captioning_and_vqa_bad_input(capsys, argv, words):
    status, out, err = run_cli(capsys, "predict", argv[0], "--image", SCENE, *argv[1:])
    assert status == 1 and out == ""
    assert err.count("\n") == 1 and words in err


def test_export_translation_writes_three_checked_graphs(capsys):
    status, out, _ = run_cli(capsys, "export", "translation")
    result = json.loads(out)
    assert status == 0 and set(result["paths"]) == {"encoder", "decoder", "decoder_with_past"}
    assert all(diff <= result["tolerance"]["atol"] for diff in result["max_abs_diff_vs_torch"].values())


def test_bench_translation_reports_tokens_per_second_and_the_cache(capsys):
    status, out, _ = run_cli(capsys, "bench", "translation", "--repeats", "2")
    result = json.loads(out)
    assert status == 0
    assert [(r["decoding"], r["batch_size"]) for r in result["results"]] == [
        ("greedy", 1), ("greedy", 8), ("beam4", 1), ("beam4", 8)]
    for row in result["results"]:
        assert row["tokens_equal"] and row["torch"]["tokens_per_s"] > 0 and row["onnx"]["tokens_per_s"] > 0
    assert [row["batch_size"] for row in result["onnx_cache"]] == [1, 8]
    assert all(row["new_tokens"] == 64 and row["speedup"] > 0 for row in result["onnx_cache"])


def test_bench_vqa_on_a_tiny_blip_checks_tokens_and_says_why_the_cache_is_not_timed(capsys, tmp_path):
    from tests.tiny import make_tiny_blip

    folder = make_tiny_blip("vqa", tmp_path / "bench-blip-vqa")  # a decoder of 64 positions
    status, out, _ = run_cli(capsys, "bench", "vqa", "--model", str(folder), "--repeats", "2", "--batch-sizes", "1")
    result = json.loads(out)
    assert status == 0 and [(r["decoding"], r["batch_size"]) for r in result["results"]] == [("greedy", 1),
                                                                                          ("beam4", 1)]
    assert all(r["tokens_equal"] and r["new_tokens"] > 0 and r["onnx_speedup"] > 0 for r in result["results"])
    (cache,) = result["onnx_cache"]
    assert "holds 64 positions, fewer than its prompt (1) and 64 new tokens" in cache["skipped"]


def test_serve_refuses_an_unknown_app_in_one_line(capsys):
    assert cli.main(["serve", "--app", "classification", "--app", "nope"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--app: unknown app 'nope'" in err and "classification" in err
