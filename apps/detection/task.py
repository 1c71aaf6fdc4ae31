"""Object detection, the recipe: image -> pixel_values -> logits and boxes -> labelled boxes.

    from apps.detection.task import detect
    detect("street.jpg", model="hustvl/yolos-tiny", threshold=0.5, backend="onnx")

Post-processing is the model's own image processor's `post_process_object_detection`, as in
`transformers.pipeline("object-detection")`, so both give the same boxes; boxes are
[xmin, ymin, xmax, ymax] in pixels of the input image.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image
from torchvision.ops import batched_nms
from transformers import AutoImageProcessor, AutoModelForObjectDetection
from transformers.utils import ModelOutput

from shared import timing
from shared.contract import Result, beyond_what_it_knows
from shared.data.digits import labels_are_digits
from shared.data.examples import PHOTOS
from shared.data.scenes import HELD_OUT_SCENES, HELD_OUT_SEED, make_scene
from shared.errors import UserError, shown
from shared.inference import backends, export
from shared.inference.graphs import Feeds, OnnxForm, OnnxSpec
from shared.inputs.checks import number_in, whole_number
from shared.inputs.images import DecodedImage, decode_image
from shared.models import registry
from shared.models.loader import LoadedModel, TaskModels, transformers_loader

TASK = "detection"
MODELS = TaskModels(TASK, transformers_loader(AutoModelForObjectDetection, AutoImageProcessor))
MAX_DETECTIONS = 100
# Every model here is DETR-style (transformers' object detectors: a set of queries, no NMS of
# their own), and a small one can put two queries on one object: class-wise NMS at this IoU is
# on unless a request turns it off (`nms=False`, `--no-nms`, the page's checkbox).
NMS_IOU = float(registry.setting("detection", "nms_iou"))
# DETR-style processors keep the aspect ratio, so batch, height and width stay dynamic. A model
# whose registry entry fixes `onnx_batch` (RT-DETR: its query selection does not export with a
# dynamic batch, and its inputs are a fixed size) is exported at that batch and run in slices.
ONNX_SPEC = OnnxSpec(("pixel_values",), ("logits", "pred_boxes"),
                     {"pixel_values": {0: "batch", 2: "height", 3: "width"}}, atol=1e-4, rtol=1e-3,
                     fuse_attention=True)  # YOLOS: 1,600+ tokens, where the fused attention pays most


def onnx_spec(loaded: LoadedModel) -> OnnxSpec:
    batch = loaded.entry.onnx_batch
    return dataclasses.replace(ONNX_SPEC, dynamic_axes={}, example_batch=batch) if batch else ONNX_SPEC


def onnx_form(loaded: LoadedModel) -> OnnxForm:
    return export.single_graph(onnx_spec(loaded), lambda n: sample_feeds(loaded, n))


def preprocess(loaded: LoadedModel, images: list[Image.Image]) -> Feeds:
    return {"pixel_values": loaded.processor(images=images, return_tensors="pt")["pixel_values"].float().numpy()}


def sample_images() -> list[Image.Image]:
    """Held-out synthetic scenes (seed 1) and the real photos."""
    return [make_scene(1, i).image for i in range(4)] + [decode_image(p).image for p in PHOTOS.values()]


def sample_feeds(loaded: LoadedModel, batch_size: int) -> Feeds:
    return preprocess(loaded, list(itertools.islice(itertools.cycle(sample_images()), batch_size)))


def postprocess(loaded: LoadedModel, outputs: dict[str, np.ndarray], sizes: list[tuple[int, int]],
                threshold: float, clip: bool = True, nms: bool = True) -> list[list[dict]]:
    """Per image, detections {label, score, box} at or above `threshold`, best first; a box that
    overlaps a better one of its class by more than NMS_IOU dropped (`nms=False`: kept); each box
    clipped to the image (`clip=False`: as the model drew it; both off: transformers' pipeline)."""
    raw = ModelOutput(logits=torch.from_numpy(outputs["logits"]), pred_boxes=torch.from_numpy(outputs["pred_boxes"]))
    results = loaded.processor.post_process_object_detection(raw, threshold=threshold, target_sizes=sizes)
    id2label = loaded.model.config.id2label
    detections = []
    for (height, width), result in zip(sizes, results, strict=True):
        if nms:
            keep = batched_nms(result["boxes"].float(), result["scores"].float(), result["labels"], NMS_IOU)
            result = {key: result[key][keep] for key in ("scores", "labels", "boxes")}
        rows = [{"label": id2label[int(label)], "score": float(score), "box": [int(v) for v in box.tolist()]}
                for score, label, box in zip(result["scores"], result["labels"], result["boxes"], strict=True)]
        if clip:
            for row in rows:
                xmin, ymin, xmax, ymax = row["box"]
                row["box"] = [min(max(xmin, 0), width), min(max(ymin, 0), height),
                              min(max(xmax, 0), width), min(max(ymax, 0), height)]
        detections.append(sorted(rows, key=lambda row: -row["score"]))
    return detections


def run(loaded: LoadedModel, images: list[Image.Image], backend: str | Callable, threshold: float,
        clip: bool = True, nms: bool = True) -> tuple[list, float]:
    """Detections per image and the milliseconds they took, on `backend`: a name, or a runner
    (feeds -> outputs) such as an int8 copy's."""
    run_model = backend if callable(backend) else backends.runner(loaded, backend, onnx_form(loaded))
    started = time.perf_counter()
    outputs = run_model(preprocess(loaded, images))
    detections = postprocess(loaded, outputs, [(im.height, im.width) for im in images], threshold, clip, nms)
    return detections, (time.perf_counter() - started) * 1e3


@timing.whole_request
def detect(image, model: str | None = None, backend: str = "torch", threshold: float = 0.5,
           classes: list[str] | None = None, max_detections: int = 20, nms: bool = True,
           fallback: bool = False) -> Result:
    """One image -> Result with `detections` [{label, score, box}] and the decoded input as
    `image`; `classes` keeps only those labels; `nms=False` keeps boxes that repeat one object."""
    return detect_batch([decode_image(image)], model, backend, threshold, classes, max_detections, nms, fallback)[0]


@timing.whole_request
def detect_batch(images: list[DecodedImage], model: str | None = None, backend: str = "torch",
                 threshold: float = 0.5, classes: list[str] | None = None, max_detections: int = 20,
                 nms: bool = True, fallback: bool = False) -> list[Result]:
    """Decoded images -> one Result each, from one pass of the model (`demohub predict` over many files)."""
    threshold = number_in("threshold", threshold, 0.0, 1.0)
    max_detections = whole_number("max_detections", max_detections, 1, MAX_DETECTIONS)
    loaded = MODELS.load(model, fallback=fallback)
    known = set(loaded.model.config.id2label.values())
    unknown = sorted(set(classes or ()) - known)
    if unknown:
        more = f" and {len(unknown) - 5:,} more" if len(unknown) > 5 else ""
        raise UserError(f"{loaded.entry.name} has no class {', '.join(shown(c, 40) for c in unknown[:5])}{more}; "
                        f"its classes include {', '.join(sorted(known)[:12])}.")
    found, latency_ms = run(loaded, [decoded.image for decoded in images], backend, threshold, nms=bool(nms))
    results = []
    for decoded, detections in zip(images, found, strict=True):
        notes = [*decoded.notes, *beyond_what_it_knows(loaded, decoded.image)]
        if classes:
            kept = [d for d in detections if d["label"] in classes]
            if detections and not kept:
                notes.append(f"{len(detections)} box(es) scored {threshold} or more, none of class "
                             f"{', '.join(classes)}.")
            detections = kept
        elif not detections:  # an empty picture and table said nothing (found by a visitor)
            notes.append(f"no box scored {threshold} or more: lower the threshold to see less likely ones.")
        results.append(Result(loaded, backend, latency_ms / len(images), {"detections": detections[:max_detections]},
                              images={"image": decoded.image}, notes=notes))
    return results


def mean_average_precision(loaded: LoadedModel, dataset, indices: list[int] | None = None, batch_size: int = 16,
                           backend: str | Callable = "torch", nms: bool = True) -> dict[str, float]:
    """COCO mAP and mAP@0.5 (torchmetrics) of `loaded` on a CocoFolder (or anything with its
    `target(i)` and length, such as HeldOutScenes), whose names match its labels."""
    from torchmetrics.detection import MeanAveragePrecision

    label2id = {v: k for k, v in loaded.model.config.id2label.items()}
    metric = MeanAveragePrecision(box_format="xyxy", iou_type="bbox")
    indices = list(range(len(dataset))) if indices is None else indices
    for start in range(0, len(indices), batch_size):
        batch = [dataset.target(i) for i in indices[start:start + batch_size]]
        detections, _ = run(loaded, [image for image, _, _ in batch], backend, threshold=0.01, nms=nms)
        predictions = [{"boxes": torch.tensor([d["box"] for d in found], dtype=torch.float32).reshape(-1, 4),
                        "scores": torch.tensor([d["score"] for d in found]),
                        "labels": torch.tensor([label2id[d["label"]] for d in found], dtype=torch.int64)}
                       for found in detections]
        targets = [{"boxes": boxes, "labels": torch.tensor([label2id[n] for n in names], dtype=torch.int64)}
                   for _, boxes, names in batch]
        metric.update(predictions, targets)
    result = metric.compute()
    return {"map": round(float(result["map"]), 4), "map_50": round(float(result["map_50"]), 4)}


class HeldOutScenes:
    """The first `n` scenes of a seed never trained on, as CocoFolder's targets, drawn in memory
    (the same pixels and boxes `demohub data synth` writes for that seed)."""

    def __init__(self, n: int = HELD_OUT_SCENES, seed: int = HELD_OUT_SEED):
        self.n, self.seed = n, seed

    def __len__(self) -> int:
        return self.n

    def target(self, index: int) -> tuple[Image.Image, torch.Tensor, list[str]]:
        scene = make_scene(self.seed, index)
        boxes = torch.tensor([obj.box for obj in scene.objects], dtype=torch.float32).reshape(-1, 4)
        return scene.image, boxes, [str(obj.digit) for obj in scene.objects]


def held_out_map(loaded: LoadedModel, run_model: Callable) -> dict:
    """mAP@0.5 and mAP on the held-out scenes, for models whose labels are the ten digits (else
    nothing): the int8 check of `demohub export detection --quantize`."""
    if not labels_are_digits(loaded.model.config.id2label):
        return {}
    result = mean_average_precision(loaded, HeldOutScenes(), backend=run_model)
    return {"scenes_map_50": result["map_50"], "scenes_map": result["map"]}


def duplicate_rate(loaded: LoadedModel, dataset, threshold: float = 0.5, batch_size: int = 16,
                   backend: str = "torch", nms: bool = True) -> dict[str, float]:
    """How often the answer repeats a digit: the share of true objects covered (IoU > 0.5) by two
    or more boxes of their class scoring at least `threshold`, and of scenes with any such object."""
    from torchvision.ops import box_iou

    repeated = objects = scenes_with = 0
    for start in range(0, len(dataset), batch_size):
        batch = [dataset.target(i) for i in range(start, min(start + batch_size, len(dataset)))]
        detections, _ = run(loaded, [image for image, _, _ in batch], backend, threshold, nms=nms)
        for (_, boxes, names), found in zip(batch, detections, strict=True):
            here = 0
            for box, name in zip(boxes, names, strict=True):
                drawn = torch.tensor([d["box"] for d in found if d["label"] == name], dtype=torch.float32)
                drawn = drawn.reshape(-1, 4)
                here += int((box_iou(box[None], drawn) > 0.5).sum()) >= 2
            repeated, objects, scenes_with = repeated + here, objects + len(names), scenes_with + (here > 0)
    return {"objects": objects, "repeated_objects": repeated, "object_rate": round(repeated / max(objects, 1), 4),
            "scene_rate": round(scenes_with / max(len(dataset), 1), 4)}
