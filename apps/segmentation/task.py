"""Semantic segmentation, the recipe: image -> pixel_values -> class logits -> a class per pixel.

    from apps.segmentation.task import segment
    segment("street.jpg", model="openmmlab/upernet-convnext-tiny", backend="onnx")

Post-processing is the model's own image processor's `post_process_semantic_segmentation`
(logits resized to the input image, then argmax), as in `pipeline("image-segmentation")`.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image, ImageOps
from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation
from transformers.utils import ModelOutput

from shared import timing
from shared.contract import Result, beyond_what_it_knows
from shared.data.examples import PHOTOS
from shared.data.scenes import CLASS_NAMES, HELD_OUT_SCENES, HELD_OUT_SEED, make_scene
from shared.inference import backends, export
from shared.inference.graphs import Feeds, OnnxForm, OnnxSpec
from shared.inputs.images import DecodedImage, decode_image
from shared.models.loader import LoadedModel, TaskModels, transformers_loader

TASK = "segmentation"
MODELS = TaskModels(TASK, transformers_loader(AutoModelForSemanticSegmentation, AutoImageProcessor))
ONNX_SPEC = OnnxSpec(("pixel_values",), ("logits",), {"pixel_values": {0: "batch"}}, atol=1e-4, rtol=1e-3,
                     fuse_attention=True)  # SegFormer: onnxruntime's fused attention (export.fuse_attention)


def onnx_form(loaded: LoadedModel) -> OnnxForm:
    return export.single_graph(ONNX_SPEC, lambda n: sample_feeds(loaded, n))


def preprocess(loaded: LoadedModel, images: list[Image.Image]) -> Feeds:
    return {"pixel_values": loaded.processor(images=images, return_tensors="pt")["pixel_values"].float().numpy()}


def sample_feeds(loaded: LoadedModel, batch_size: int) -> Feeds:
    images = [make_scene(1, i).image for i in range(4)] + [decode_image(p).image for p in PHOTOS.values()]
    return preprocess(loaded, list(itertools.islice(itertools.cycle(images), batch_size)))


# The processor resizes all C class scores to the image before the argmax: for a 40 MP upload and
# ADE's 150 classes that is 24 GB. Past this side the scores are resized to fit it, and the class map
# is then enlarged to the image by nearest neighbour (the models read 512 px or less anyway).
CLASS_MAP_SIDE = 1024


def class_map(loaded: LoadedModel, logits: np.ndarray, sizes: list[tuple[int, int]]) -> list[np.ndarray]:
    """(B, C, h, w) logits -> one (H, W) array of class ids per image, at the image's size."""
    shrink = [min(1.0, CLASS_MAP_SIDE / max(size)) for size in sizes]
    scaled = [(max(1, round(h * k)), max(1, round(w * k))) for (h, w), k in zip(sizes, shrink, strict=True)]
    raw = ModelOutput(logits=torch.from_numpy(logits))
    maps = loaded.processor.post_process_semantic_segmentation(raw, target_sizes=scaled)
    return [resized(m.numpy(), size) for m, size in zip(maps, sizes, strict=True)]


def resized(classes: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A class map at (H, W) `size`, by nearest neighbour (unchanged if it is that size already)."""
    if classes.shape == tuple(size):
        return classes
    return np.asarray(Image.fromarray(classes.astype(np.int32)).resize(size[::-1], Image.NEAREST))


def segments(loaded: LoadedModel, classes: np.ndarray) -> list[dict]:
    """The classes present, largest first: {label, area_fraction}."""
    ids, counts = np.unique(classes, return_counts=True)
    id2label = loaded.model.config.id2label
    rows = [{"label": id2label[int(i)], "id": int(i), "area_fraction": round(float(c) / classes.size, 4)}
            for i, c in zip(ids, counts, strict=True)]
    return sorted(rows, key=lambda row: -row["area_fraction"])


@timing.whole_request
def segment(image, model: str | None = None, backend: str = "torch", fallback: bool = False) -> Result:
    """One image -> Result with `segments` [{label, id, area_fraction}], and as images the decoded
    input `image` and its `mask` (H, W class ids)."""
    return segment_batch([decode_image(image)], model, backend, fallback)[0]


@timing.whole_request
def segment_batch(images: list[DecodedImage], model: str | None = None, backend: str = "torch",
                  fallback: bool = False) -> list[Result]:
    """Decoded images -> one Result each, from one pass of the model (`demohub predict` over many files)."""
    loaded = MODELS.load(model, fallback=fallback)
    run_model = backends.runner(loaded, backend, onnx_form(loaded))
    started = time.perf_counter()
    logits = run_model(preprocess(loaded, [decoded.image for decoded in images]))["logits"]
    maps = class_map(loaded, logits, [(decoded.image.height, decoded.image.width) for decoded in images])
    latency_ms = (time.perf_counter() - started) * 1e3 / len(images)
    return [Result(loaded, backend, latency_ms, {"segments": segments(loaded, classes)},
                   images={"image": decoded.image, "mask": classes.astype(np.int32)},
                   notes=[*decoded.notes, *beyond_what_it_knows(loaded, decoded.image)])
            for decoded, classes in zip(images, maps, strict=True)]


def mean_iou(predicted: torch.Tensor, labels: torch.Tensor, num_classes: int) -> float:
    """Mean over classes present in either map of intersection over union (torchmetrics)."""
    from torchmetrics.functional.segmentation import mean_iou as iou

    per_class = iou(predicted.reshape(1, -1), labels.reshape(1, -1), num_classes=num_classes, input_format="index",
                    per_class=True)[0]
    present = torch.bincount(torch.cat([predicted.flatten(), labels.flatten()]), minlength=num_classes) > 0
    return round(float(per_class[present].mean()), 4)


def held_out_mean_iou(loaded: LoadedModel, run_model: Callable, batch_size: int = 16) -> dict:
    """Mean IoU on the held-out scenes as the app answers them (class maps at the scene's size), for
    models whose classes are the scenes' (else nothing): the int8 check of `demohub export
    segmentation --quantize`."""
    id2label = loaded.model.config.id2label
    if [id2label.get(i) for i in range(len(id2label))] != CLASS_NAMES:
        return {}
    scenes = [make_scene(HELD_OUT_SEED, i) for i in range(HELD_OUT_SCENES)]
    predicted = []
    for start in range(0, len(scenes), batch_size):
        images = [scene.image for scene in scenes[start:start + batch_size]]
        logits = run_model(preprocess(loaded, images))["logits"]
        predicted += class_map(loaded, logits, [(image.height, image.width) for image in images])
    truth = torch.from_numpy(np.stack([scene.semantic_mask for scene in scenes]).astype(np.int64))
    return {"scenes_mean_iou": mean_iou(torch.from_numpy(np.stack(predicted)).long(), truth, len(CLASS_NAMES))}


PALETTE = np.array([[0, 0, 0], [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
                    [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212],
                    [0, 128, 128], [220, 190, 255], [170, 110, 40], [255, 250, 200], [128, 0, 0]], dtype=np.uint8)


def colour_of(class_id: int) -> tuple[int, int, int]:
    return tuple(int(v) for v in PALETTE[class_id % len(PALETTE)])


def clear_ids(model: str) -> list[int]:
    """Classes left untinted: those named background (ADE's class 0 is "wall", not background)."""
    id2label = MODELS.load(model).model.config.id2label
    return [i for i, name in id2label.items() if name.lower() in ("background", "unlabeled")]


OVERLAY_SIDE = 2048  # the picture is drawn at most this big: blending a 40 MP upload took 3 GB


def overlay(image: Image.Image, classes: np.ndarray, opacity: float, clear: list[int] = ()) -> Image.Image:
    """The image with each class's pixels tinted by its colour, `clear` classes left as they are
    (drawn at most OVERLAY_SIDE px a side; the class map itself stays at the image's size)."""
    if max(image.size) > OVERLAY_SIDE:
        image = ImageOps.contain(image, (OVERLAY_SIDE, OVERLAY_SIDE))
        classes = resized(classes, (image.height, image.width))
    colours = PALETTE[classes % len(PALETTE)].astype(np.float32)
    alpha = np.where(np.isin(classes, list(clear)), np.float32(0), np.float32(opacity))[..., None]
    pixels = np.asarray(image, dtype=np.float32) * (1 - alpha) + colours * alpha
    return Image.fromarray(pixels.round().astype(np.uint8))
