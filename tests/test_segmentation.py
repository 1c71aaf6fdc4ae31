"""The segmentation app against transformers' pipeline, ONNX against torch, and its held-out mIoU."""

import json

import numpy as np
import pytest
import torch
from transformers import pipeline

from apps.segmentation import finetune, task
from apps.segmentation.data import MaskFolder
from shared.data.examples import PHOTOS
from shared.data.scenes import make_scene, write_datasets
from shared.errors import UserError
from shared.models import registry

SCENES = [make_scene(1, i) for i in range(3)]


def test_masks_equal_the_transformers_pipeline():
    loaded = task.MODELS.load()
    peer = pipeline("image-segmentation", model=loaded.model, image_processor=loaded.processor)
    for image in [*(s.image for s in SCENES), str(PHOTOS["astronaut"])]:
        ours = task.segment(image)
        theirs = peer(image)
        assert {s["label"] for s in ours["segments"]} == {s["label"] for s in theirs}
        label2id = {v: k for k, v in loaded.model.config.id2label.items()}
        for segment in theirs:
            assert np.array_equal(np.asarray(segment["mask"]) > 0, ours["mask"] == label2id[segment["label"]])


def test_a_huge_upload_gets_its_class_map_from_scores_at_most_class_map_side():
    """The scores of a 3000 x 2000 scene are resized to 1024 x 683, not to 6 million pixels per class
    (a 40 MP upload took 2.8 GB and 25 s): the map still has the image's size and the full-size classes."""
    loaded = task.MODELS.load()
    big = SCENES[0].image.resize((3000, 2000))
    ours = task.segment(big)["mask"]
    with torch.no_grad():
        logits = loaded.model(torch.from_numpy(task.preprocess(loaded, [big])["pixel_values"])).logits
    full = loaded.processor.post_process_semantic_segmentation(task.ModelOutput(logits=logits),
                                                               target_sizes=[(2000, 3000)])[0].numpy()
    assert ours.shape == full.shape == (2000, 3000)
    assert (ours == full).mean() > 0.99  # the same classes; their edges a few pixels apart
    assert task.overlay(big, ours, 0.5).size == (2048, 1365)  # the picture is drawn at most 2048 px a side


def test_onnx_class_map_matches_torch():
    for scene in SCENES:
        on_torch, on_onnx = task.segment(scene.image)["mask"], task.segment(scene.image, backend="onnx")["mask"]
        assert (on_torch == on_onnx).mean() > 0.999


def test_embedded_segmenter_reaches_its_card_on_held_out_scenes(tmp_path):
    write_datasets(tmp_path, n=300, seed=1)  # the card's held-out scenes
    held_out = MaskFolder(tmp_path)
    loaded = task.MODELS.load()
    predicted, truth = [], []
    for index in range(len(held_out)):
        image, mask = held_out.pair(index)
        predicted.append(torch.from_numpy(task.segment(image)["mask"]).long())
        truth.append(torch.from_numpy(mask.astype(np.int64)))
    assert task.mean_iou(torch.stack(predicted), torch.stack(truth), len(loaded.model.config.id2label)) >= 0.80


def test_segments_report_area_and_the_overlay_keeps_background():
    result = task.segment(SCENES[0].image)
    assert abs(sum(s["area_fraction"] for s in result["segments"]) - 1) < 1e-3
    assert result["segments"][0]["label"] == "background"
    picture = task.overlay(result["image"], result["mask"], 1.0, task.clear_ids("digits-upernet"))
    background = result["mask"] == 0
    assert np.array_equal(np.asarray(picture)[background], np.asarray(result["image"])[background])


def test_bad_input_is_refused():
    with pytest.raises(UserError, match="No image"):
        task.segment(None)


def test_finetune_refuses_an_image_size_the_backbone_cannot_halve(tmp_path):
    write_datasets(tmp_path / "train", n=2, seed=7)
    with pytest.raises(UserError, match="multiple of 32"):
        finetune.main(["--data", str(tmp_path / "train"), "--out", str(tmp_path / "out"), "--image-size", "100"])


@pytest.mark.slow
def test_finetune_from_the_embedded_segmenter(tmp_path):
    write_datasets(tmp_path / "train", n=24, seed=7)
    write_datasets(tmp_path / "test", n=8, seed=8)
    metrics = finetune.main(["--data", str(tmp_path / "train"), "--eval-data", str(tmp_path / "test"),
                             "--out", str(tmp_path / "seg-out"), "--model", "digits-upernet", "--epochs", "1",
                             "--batch-size", "8", "--learning-rate", "1e-5", "--image-size", "192"])
    assert metrics["test_mean_iou"] >= 0.5
    assert json.loads((tmp_path / "seg-out" / "preprocessor_config.json").read_text())["size"]["height"] == 192
    assert json.loads((tmp_path / "seg-out" / "config.json").read_text())["id2label"]["0"] == "background"
    entry = registry.add_local("segmentation", tmp_path / "seg-out")
    assert task.segment(SCENES[0].image, model=entry.name)["segments"]


@pytest.mark.slow
def test_finetune_reads_a_datasets_dataset(tmp_path):
    from datasets import Dataset
    from datasets import Image as ImageFeature

    scenes = [make_scene(11, i) for i in range(12)]
    from PIL import Image

    rows = {"picture": [s.image for s in scenes], "classes": [Image.fromarray(s.semantic_mask) for s in scenes]}
    dataset = Dataset.from_dict(rows).cast_column("picture", ImageFeature()).cast_column("classes", ImageFeature())
    (tmp_path / "ds").mkdir()
    dataset.to_parquet(tmp_path / "ds" / "train.parquet")
    (tmp_path / "labels.json").write_text(json.dumps(dict(enumerate(["background", *map(str, range(10))]))))
    metrics = finetune.main(["--dataset", str(tmp_path / "ds"), "--image-column", "picture", "--mask-column",
                             "classes", "--labels", str(tmp_path / "labels.json"), "--out", str(tmp_path / "seg-ds"),
                             "--model", "digits-upernet", "--epochs", "1", "--batch-size", "4",
                             "--learning-rate", "1e-5"])
    assert metrics["eval_mean_iou"] >= 0.5  # a trained segmenter, checked on the dataset's own validation split


def test_freeze_backbone_leaves_the_head_trainable():
    from transformers import AutoModelForSemanticSegmentation

    from shared import training

    model = AutoModelForSemanticSegmentation.from_pretrained(task.MODELS.load().folder)
    training.freeze_backbone(model)  # UperNet: no base-model prefix, a `backbone` attribute
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert all(p.requires_grad for p in model.decode_head.parameters())


def test_the_legend_sums_classes_under_one_percent_in_one_line():
    """Edge pixels of a digit read as another digit made legend lines of 0.4% (found by a visitor)."""
    from apps.segmentation.app import legend

    rows = [{"label": "background", "id": 0, "area_fraction": 0.95}, {"label": "9", "id": 10, "area_fraction": 0.04},
            {"label": "1", "id": 2, "area_fraction": 0.006}, {"label": "8", "id": 9, "area_fraction": 0.004}]
    shown = legend(rows)
    assert "9: 4.0%" in shown and "1: 0.6%" not in shown and "8: 0.4%" not in shown
    assert "and 2 classes under 1% each (1.0% in all; the table lists them)" in shown
    assert "under 1%" not in legend(rows[:2])
    assert "<li>background: 95.0% (not tinted)</li>" in legend(rows, clear=[0])  # no swatch of a colour not drawn
