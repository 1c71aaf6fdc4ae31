"""`demohub predict APP --image` over many files: JSON lines in batches, equal to one file at a time."""

import json

import numpy as np
import pytest

from apps.classification import task as classification
from apps.detection import task as detection
from shared.data.digits import digit_image, split
from shared.data.examples import PHOTOS
from shared.data.scenes import make_scene
from shared.serving import cli


@pytest.fixture(scope="module")
def digits_folder(tmp_path_factory):
    """Ten held-out digits, a photo, a file that is not an image, and a subfolder (not read)."""
    folder = tmp_path_factory.mktemp("digits")
    pixels, labels = split()["test"]
    for i in range(10):
        digit_image(pixels[i]).save(folder / f"digit_{i:02d}_{labels[i]}.png")
    (folder / "photo.jpg").write_bytes(PHOTOS["cat"].read_bytes())
    (folder / "notes.png").write_text("not an image")
    (folder / "inner").mkdir()
    digit_image(pixels[20]).save(folder / "inner" / "skipped.png")
    return folder


def lines_of(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines()]


def test_a_folder_gives_one_line_per_file_and_a_failure_its_own(capsys, digits_folder):
    status = cli.main(["predict", "classification", "--image", str(digits_folder), "--batch-size", "4",
                       "--top-k", "1"])
    out, err = capsys.readouterr()
    lines = lines_of(out)
    assert status == 1 and "Failed: 1 of 12" in err and "12/12" in err  # tqdm's bar, then the summary
    assert [line["file"] for line in lines] == [str(p) for p in sorted(digits_folder.glob("*.*"))]
    broken = next(line for line in lines if line["file"].endswith("notes.png"))
    assert broken == {"file": str(digits_folder / "notes.png"),
                      "error": "The file is not an image this app can read. Upload a JPEG, PNG, WebP, GIF, BMP "
                               "or TIFF image."}
    digits = [line for line in lines if "digit_" in line["file"]]
    right = [line["labels"][0]["label"] == line["file"][-5] for line in digits]
    assert len(digits) == 10 and sum(right) >= 9
    photo = next(line for line in lines if line["file"].endswith("photo.jpg"))
    assert any("knows only" in note for note in photo["notes"])


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_batched_answers_equal_one_file_at_a_time(capsys, digits_folder, backend):
    files = sorted(str(p) for p in digits_folder.glob("digit_*.png"))
    status = cli.main(["predict", "classification", "--image", *files, "--batch-size", "8", "--backend", backend])
    out, err = capsys.readouterr()
    batched = lines_of(out)
    assert status == 0 and len(batched) == len(files), err
    for line in batched:
        alone = classification.classify(line["file"], backend=backend)["labels"]
        assert [d["label"] for d in line["labels"]] == [d["label"] for d in alone]
        np.testing.assert_allclose([d["score"] for d in line["labels"]], [d["score"] for d in alone], atol=1e-4)


def test_a_glob_of_scenes_through_detection_and_segmentation(capsys, tmp_path):
    for i in range(5):
        make_scene(2, i).image.save(tmp_path / f"scene_{i}.png")
    for app in ("detection", "segmentation"):
        status = cli.main(["predict", app, "--image", str(tmp_path / "scene_*.png"), "--batch-size", "3"])
        lines = lines_of(capsys.readouterr().out)
        assert status == 0 and [line["file"] for line in lines] == [str(tmp_path / f"scene_{i}.png") for i in range(5)]
        if app == "detection":
            for line in lines:
                alone = detection.detect(line["file"])["detections"]
                assert [d["label"] for d in line["detections"]] == [d["label"] for d in alone]
                assert np.abs(np.array([d["box"] for d in line["detections"]])
                              - np.array([d["box"] for d in alone])).max() <= 1
        else:
            assert all(line["segments"][0]["label"] == "background" for line in lines)


def test_an_app_that_answers_one_image_at_a_time_takes_many_too(capsys, tmp_path):
    for i in range(2):
        make_scene(3, i).image.save(tmp_path / f"scene_{i}.png")
    status = cli.main(["predict", "vqa", "--image", str(tmp_path), str(tmp_path / "missing.png"),
                       "--question", "How many digits are there?", "--top-k", "1"])
    lines = lines_of(capsys.readouterr().out)
    assert status == 1 and len(lines) == 3
    assert all(line["answers"] for line in lines[:2]) and "could not be found" in lines[2]["error"]


def test_one_file_still_prints_one_json_document(capsys):
    status = cli.main(["predict", "classification", "--image", str(PHOTOS["cat"]), "--top-k", "1"])
    out = capsys.readouterr().out
    assert status == 0 and out.startswith("{\n") and "file" not in json.loads(out)


@pytest.mark.parametrize("argv, words", [
    (["--image", "/nonexistent/*.png"], "No file matches /nonexistent/*.png."),
    (["--image", "apps", "--model", "no-such-model"], "holds no image files"),
    (["--image", "apps/classification/examples", "--model", "no-such-model"], "Unknown classification model"),
    (["--image", "apps/classification/examples", "--batch-size", "0"], "--batch-size must be"),
])
def test_bad_requests_are_one_sentence(capsys, argv, words):
    status = cli.main(["predict", "classification", *argv])
    out, err = capsys.readouterr()
    assert status == 1 and out == "" and words in err


def test_bench_throughput_at_batch_1_and_batched(capsys, digits_folder, tmp_path):
    for path in sorted(digits_folder.glob("digit_*.png")):
        (tmp_path / path.name).write_bytes(path.read_bytes())
    status = cli.main(["bench", "classification", "--throughput", str(tmp_path), "--batch-sizes", "1", "8"])
    result = json.loads(capsys.readouterr().out)
    assert status == 0 and result["images"] == 10
    for backend in ("torch", "onnx"):
        assert result[f"{backend}_batch_1_images_per_s"] > 0 and result[f"{backend}_batch_8_images_per_s"] > 0
