"""The detection app against transformers' pipeline, ONNX against torch, its held-out mAP, and no
box repeated on one digit."""

import numpy as np
import pytest
import torch
from torchvision.ops import box_iou
from transformers import YolosConfig, YolosForObjectDetection, YolosImageProcessor, pipeline

from apps.detection import finetune, task
from apps.detection.data import CocoFolder, train_transform
from shared.data.examples import PHOTOS
from shared.data.scenes import make_scene, write_datasets
from shared.errors import UserError
from shared.inputs.images import decode_image
from shared.models import registry

SCENES = [make_scene(1, i).image for i in range(3)]


@pytest.fixture(scope="module")
def tiny_yolos(tmp_path_factory):
    """A tiny random copy of hustvl/yolos-tiny's architecture (code paths only)."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("yolos") / "tiny-yolos"
    labels = {i: name for i, name in enumerate(["person", "cup", "rocket", "cat"])}
    config = YolosConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                         image_size=[64, 64], patch_size=16, num_detection_tokens=10, id2label=labels,
                         label2id={v: k for k, v in labels.items()})
    YolosForObjectDetection(config).save_pretrained(folder)
    YolosImageProcessor(size={"shortest_edge": 64, "longest_edge": 64}).save_pretrained(folder)
    return registry.add_local("detection", folder).name


def test_unclipped_boxes_equal_the_transformers_pipeline(tiny_yolos):
    for name, threshold in [("digits-rtdetr", 0.3), (tiny_yolos, 0.0)]:
        loaded = task.MODELS.load(name)
        peer = pipeline("object-detection", model=loaded.model, image_processor=loaded.processor)
        for image in [*SCENES, PHOTOS["coffee"]]:
            ((ours,), _) = task.run(loaded, [decode_image(image).image], "torch", threshold, clip=False, nms=False)
            theirs = sorted(peer(str(image) if not hasattr(image, "size") else image, threshold=threshold),
                            key=lambda d: -d["score"])
            assert [d["label"] for d in ours] == [d["label"] for d in theirs]
            assert [d["box"] for d in ours] == [[d["box"][k] for k in ("xmin", "ymin", "xmax", "ymax")] for d in theirs]
            np.testing.assert_allclose([d["score"] for d in ours], [d["score"] for d in theirs], atol=1e-5)


def test_boxes_are_clipped_to_the_image(tiny_yolos):
    outside = 0
    for name, threshold in [("digits-rtdetr", 0.3), (tiny_yolos, 0.0)]:
        loaded = task.MODELS.load(name)
        for image in [*SCENES, PHOTOS["coffee"]]:
            decoded = decode_image(image).image
            width, height = decoded.size
            ((raw,), _) = task.run(loaded, [decoded], "torch", threshold, clip=False)
            answer = task.detect(image, model=name, threshold=threshold, max_detections=100)["detections"]
            assert [d["label"] for d in answer] == [d["label"] for d in raw]
            for clipped, drawn in zip(answer, raw, strict=True):
                xmin, ymin, xmax, ymax = clipped["box"]
                assert 0 <= xmin <= xmax <= width and 0 <= ymin <= ymax <= height
                sides = (width, height, width, height)
                assert clipped["box"] == [min(max(v, 0), side) for v, side in zip(drawn["box"], sides, strict=True)]
                outside += clipped["box"] != drawn["box"]
    assert outside  # some boxes the models drew did cross the border


def test_yolos_attention_is_fused_and_answers_as_torch_at_every_image_size(tiny_yolos):
    import onnx

    from shared.inference import export

    loaded = task.MODELS.load(tiny_yolos)
    path = export.ensure_exported(loaded, task.onnx_form(loaded))["model"]
    fused = [n.op_type for n in onnx.load(str(path)).graph.node if n.domain == "com.microsoft"]
    assert fused.count("MultiHeadAttention") == loaded.model.config.num_hidden_layers
    images = [decode_image(image).image for image in [SCENES[0], PHOTOS["coffee"], PHOTOS["astronaut"]]]
    assert len({task.preprocess(loaded, [image])["pixel_values"].shape for image in images}) >= 2  # sizes differ
    for image in images:
        ((on_torch,), _) = task.run(loaded, [image], "torch", 0.0, clip=False, nms=False)
        ((on_onnx,), _) = task.run(loaded, [image], "onnx", 0.0, clip=False, nms=False)
        assert [d["label"] for d in on_onnx] == [d["label"] for d in on_torch]
        np.testing.assert_allclose([d["score"] for d in on_onnx], [d["score"] for d in on_torch], atol=1e-5)


def test_onnx_detections_match_torch():
    for image in SCENES:
        on_torch = task.detect(image, threshold=0.3)["detections"]
        on_onnx = task.detect(image, threshold=0.3, backend="onnx")["detections"]
        assert [d["label"] for d in on_onnx] == [d["label"] for d in on_torch]
        assert np.abs(np.array([d["box"] for d in on_onnx]) - np.array([d["box"] for d in on_torch])).max() <= 1
        np.testing.assert_allclose([d["score"] for d in on_onnx], [d["score"] for d in on_torch], atol=1e-3)


def test_embedded_detector_finds_the_digits_of_held_out_scenes(tmp_path):
    write_datasets(tmp_path, n=60, seed=1)  # seed 1: never trained on
    result = task.mean_average_precision(task.MODELS.load(), CocoFolder(tmp_path))
    assert result["map_50"] >= 0.8


def test_no_digit_gets_two_boxes_on_held_out_scenes_on_either_backend(tmp_path):
    write_datasets(tmp_path, n=40, seed=2)  # seed 2: never trained on
    scenes, loaded = CocoFolder(tmp_path), task.MODELS.load()
    assert task.duplicate_rate(loaded, scenes, nms=False)["repeated_objects"] >= 3  # the model alone repeats itself
    for backend in ("torch", "onnx"):
        assert task.duplicate_rate(loaded, scenes, backend=backend)["repeated_objects"] == 0
    assert task.mean_average_precision(loaded, scenes)["map_50"] > task.mean_average_precision(
        loaded, scenes, nms=False)["map_50"]


def test_nms_keeps_the_best_box_of_each_repeat():
    scene = make_scene(2, 8).image  # held out; two of its digits get a second box without NMS
    for backend in ("torch", "onnx"):
        kept = task.detect(scene, backend=backend)["detections"]
        every = task.detect(scene, backend=backend, nms=False)["detections"]
        assert kept and len(kept) < len(every) and all(d in every for d in kept)
        for i, a in enumerate(kept):
            for b in kept[i + 1:]:
                if a["label"] == b["label"]:
                    iou = float(box_iou(torch.tensor([a["box"]], dtype=torch.float32),
                                        torch.tensor([b["box"]], dtype=torch.float32)))
                    assert iou <= task.NMS_IOU


def test_filters_and_limits():
    scene = make_scene(1, 3)
    digits = {str(o.digit) for o in scene.objects}
    keep = sorted(digits)[:1]
    found = task.detect(scene.image, threshold=0.3, classes=keep)["detections"]
    assert found and {d["label"] for d in found} == set(keep)
    assert len(task.detect(scene.image, threshold=0.0, max_detections=2)["detections"]) == 2
    with pytest.raises(UserError, match="no class 'cat'"):
        task.detect(scene.image, classes=["cat"])
    with pytest.raises(UserError, match="threshold must be a number from 0.0 to 1.0"):
        task.detect(scene.image, threshold=1.5)
    with pytest.raises(UserError, match="max_detections"):
        task.detect(scene.image, max_detections=0)


def test_augmentation_keeps_boxes_with_their_labels(tmp_path):
    write_datasets(tmp_path, n=8, seed=5)
    dataset = CocoFolder(tmp_path, transform=train_transform())
    for index in range(len(dataset)):
        sample = dataset[index]
        assert len(sample["boxes"]) == len(sample["labels"])
        assert (sample["boxes"][:, 2:] <= 128).all() and (sample["boxes"][:, :2] >= 0).all()


@pytest.mark.slow
def test_finetune_from_the_embedded_detector(tmp_path):
    write_datasets(tmp_path / "train", n=24, seed=7)
    write_datasets(tmp_path / "test", n=8, seed=8)
    metrics = finetune.main(["--data", str(tmp_path / "train"), "--eval-data", str(tmp_path / "test"),
                             "--out", str(tmp_path / "det-out"), "--model", "digits-rtdetr", "--epochs", "1",
                             "--batch-size", "8", "--freeze-backbone", "true", "--learning-rate", "1e-5"])
    assert metrics["test_map_50"] >= 0.5  # starts from a trained detector
    entry = registry.add_local("detection", tmp_path / "det-out")
    assert task.detect(SCENES[0], model=entry.name, threshold=0.3)["detections"]


def test_an_empty_answer_says_why():
    """Threshold 1.0, or classes the scene lacks, drew an empty picture and table without a word
    (found by a visitor)."""
    from shared.data.scenes import make_scene

    scene = make_scene(1, 0)
    assert "no box scored 1.0 or more" in " ".join(task.detect(scene.image, threshold=1.0).all_notes)
    absent = next(str(d) for d in range(10) if d not in {o.digit for o in scene.objects})
    result = task.detect(scene.image, classes=[absent])
    assert result["detections"] == [] and f"none of class {absent}" in " ".join(result.all_notes)


def test_the_page_draws_boxes_on_a_picture_at_most_1024_px_a_side():
    """gradio draws each box as a mask of the picture's size: 100 boxes on a 40 MP upload took 110 s and
    6 GB (a hostile client). The table keeps the input's pixels; a 128-px scene is shown at 512."""
    from PIL import Image

    from apps.detection.app import shown

    detections = [{"label": "3", "score": 0.5, "box": [40 * i, 30 * i, 40 * i + 400, 30 * i + 300]} for i in range(100)]
    picture, boxes = shown(Image.new("RGB", (8000, 5000), "white"), detections)
    assert picture.size == (1024, 640) and boxes[1] == ((5, 4, 56, 42), "3 0.50") and len(boxes) == 100
    seven = {"label": "7", "score": 0.9, "box": [10, 20, 50, 60]}
    picture, boxes = shown(Image.new("RGB", (128, 128), "white"), [seven])
    assert picture.size == (512, 512) and boxes == [((40, 80, 200, 240), "7 0.90")]
