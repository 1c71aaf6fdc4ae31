"""Image classification, the recipe: image -> pixel_values -> logits -> top-k labels.

    from apps.classification.task import classify
    classify(Image.open("cat.png"), model="google/vit-base-patch16-224", backend="onnx", top_k=5).answer
    # {"labels": [{"label": "tabby, tabby cat", "score": 0.61}, ...]}
    explain("cat.png", method="gradcam").answer   # and .images["heatmap"]: where the model looked
    # {"method": "gradcam", "label": "tabby, tabby cat", "score": 0.61, "deletion_area": 0.12, ...}

The scores are the softmax of the logits, as `transformers.pipeline("image-classification")`
gives them, on the same image processor (a digits model's pipeline is given the digit framed, as
`as_the_model_reads` frames it); the onnx backend matches torch within ONNX_SPEC.
"""

from __future__ import annotations

import itertools
import math
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from transformers import AutoImageProcessor, AutoModelForImageClassification

from shared import timing
from shared.contract import Result, beyond_what_it_knows
from shared.data.digits import labels_are_digits
from shared.data.examples import IMAGENET_PHOTOS, PHOTOS
from shared.errors import UserError, shown
from shared.inference import attribution, backends, class_visualisation, export, gpu, heatmaps
from shared.inference.graphs import Feeds, OnnxForm, OnnxSpec
from shared.inputs.checks import whole_number
from shared.inputs.framing import framed_digit
from shared.inputs.images import DecodedImage, decode_image, is_plain
from shared.models.loader import LoadedModel, TaskModels, transformers_loader

MODELS = TaskModels("classification", transformers_loader(AutoModelForImageClassification, AutoImageProcessor))
MAX_TOP_K = 20
TIME_LIMIT_S = timing.TIME_LIMIT_S  # an explain or embedding-map request stops there, as an attack does
ONNX_SPEC = OnnxSpec(
    input_names=("pixel_values",),
    output_names=("logits",),
    dynamic_axes={"pixel_values": {0: "batch"}},
    atol=1e-4,
    rtol=1e-3,
    fuse_attention=True,  # ViT, DeiT: onnxruntime's fused attention (export.fuse_attention)
)


def onnx_form(loaded: LoadedModel) -> OnnxForm:
    return export.single_graph(ONNX_SPEC, lambda n: sample_feeds(loaded, n))


def as_the_model_reads(loaded: LoadedModel, images: list[Image.Image]) -> list[Image.Image]:
    """A digits model reads each plain image (a digit, a drawing) framed as its training digits were
    (shared/inputs/framing.py); photos, and every image for other models, go in as they are."""
    if not labels_are_digits(loaded.model.config.id2label):
        return images
    return [framed_digit(image) if is_plain(image) else image for image in images]


def preprocess(loaded: LoadedModel, images: list[Image.Image]) -> Feeds:
    pixels = loaded.processor(images=as_the_model_reads(loaded, images), return_tensors="pt")["pixel_values"]
    return {"pixel_values": pixels.float().numpy()}


def input_side(loaded: LoadedModel) -> int:
    """The side in px of the square the model reads (its processor's output)."""
    return int(preprocess(loaded, [Image.new("RGB", (64, 64), "white")])["pixel_values"].shape[-1])


def sample_feeds(loaded: LoadedModel, batch_size: int) -> Feeds:
    """A batch of the real example photos, processed as the app processes uploads."""
    photos = [decode_image(path).image for path in PHOTOS.values()]
    return preprocess(loaded, list(itertools.islice(itertools.cycle(photos), batch_size)))


def top_k_labels(loaded: LoadedModel, logits: np.ndarray, top_k: int) -> list[list[dict]]:
    """For each image, the `top_k` labels with softmax scores, best first."""
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    scores = shifted / shifted.sum(axis=-1, keepdims=True)
    id2label = loaded.model.config.id2label
    return [
        [{"label": id2label[int(i)], "score": float(row[i])} for i in np.argsort(-row, kind="stable")[:top_k]]
        for row in scores
    ]


def check_top_k(top_k) -> int:
    return whole_number("top_k", top_k, 1, MAX_TOP_K)


def run(loaded: LoadedModel, images: list[Image.Image], backend: str, top_k: int) -> tuple[list, float]:
    """Top-k labels for each image and the milliseconds it took (preprocess to labels)."""
    top_k = check_top_k(top_k)
    run_model = backends.runner(loaded, backend, onnx_form(loaded))
    started = time.perf_counter()
    logits = run_model(preprocess(loaded, images))["logits"]
    latency_ms = (time.perf_counter() - started) * 1e3
    return top_k_labels(loaded, logits, top_k), latency_ms


@timing.whole_request
def classify(image, model: str | None = None, backend: str = "torch", top_k: int = 5,
             fallback: bool = False) -> Result:
    """One image (path, bytes or PIL) -> Result with `labels`: [{label, score}], best first.

    With `fallback` (the UI's choice; the CLI fails instead), a model that cannot be loaded here
    is replaced by the embedded default and the notes say so.
    """
    return classify_batch([decode_image(image)], model, backend, top_k, fallback)[0]


@timing.whole_request
def classify_batch(images: list[DecodedImage], model: str | None = None, backend: str = "torch", top_k: int = 5,
                   fallback: bool = False) -> list[Result]:
    """Decoded images -> one Result each, from one pass of the model (`demohub predict` over many files)."""
    top_k = check_top_k(top_k)
    loaded = MODELS.load(model, fallback=fallback)
    labels, latency_ms = run(loaded, [decoded.image for decoded in images], backend, top_k)
    num_labels = loaded.model.config.num_labels
    results = []
    for decoded, found in zip(images, labels, strict=True):
        notes = [*decoded.notes, *beyond_what_it_knows(loaded, decoded.image)]
        if top_k > num_labels:
            notes.append(f"{loaded.entry.name} knows {num_labels} labels, fewer than the {top_k} asked for: "
                         "all of them are shown.")
        results.append(Result(loaded, backend, latency_ms / len(images), {"labels": found}, notes=notes))
    return results


def label_index(loaded: LoadedModel, label: str | None, logits: np.ndarray) -> int:
    """The class to explain: `label` by name, or the predicted one when it is empty."""
    if label in (None, ""):
        return int(logits[0].argmax())
    ids = {name: int(i) for i, name in loaded.model.config.id2label.items()}
    if not isinstance(label, str) or label not in ids:
        empty = ", or leave it empty for the predicted one" if logits is not None else ""  # visualising needs one
        raise UserError(f"{loaded.entry.name} has no label {shown(label)}; pick one of its labels, e.g. "
                        f"{', '.join(list(ids)[:10])}{empty}.")
    return ids[label]


@timing.whole_request
def explain(image, model: str | None = None, backend: str = "torch", method: str = "saliency",
            label: str | None = None, window: int | None = None, stride: int | None = None,
            fallback: bool = False) -> Result:
    """One image -> Result with where the model looks for `label` (None: its prediction), by `method`
    (shared/inference/attribution.py): answer {method, label, score, deletion_area, random_deletion_area,
    deletion_curve}, images {"heatmap": the map over the image as the model sees it, with its colour scale}.
    method="class-visualisation" needs no image: see `visualise_class`.

    The deletion areas: the label's score as the most salient tenths of the pixels are hidden (fifths
    on inputs over 64 px), and as random ones are; a map that means something gives the smaller area.
    """
    loaded = MODELS.load(model, fallback=fallback)
    method = attribution.check_method(loaded, method, backend)
    if method == attribution.CLASS_VISUALISATION:
        return visualise_class(loaded, label)
    if image is None:
        raise UserError(f"{method} explains an image: give one (only class-visualisation needs none).")
    decoded = decode_image(image)
    run_model = backends.runner(loaded, backend, onnx_form(loaded))
    deadline = math.inf  # occlusion's, from after the first pass (which may export the model)

    def forward(pixels: torch.Tensor) -> torch.Tensor:
        if time.monotonic() > deadline:
            raise UserError(f"The occlusion stopped at its {TIME_LIMIT_S:.0f} s limit: a {window} px window moved "
                            f"by {stride} px takes more forward passes of {loaded.entry.name} than that; choose a "
                            "larger stride.")
        return torch.from_numpy(run_model({"pixel_values": pixels.detach().float().cpu().numpy()})["logits"])

    pixels = torch.from_numpy(preprocess(loaded, [decoded.image])["pixel_values"])
    if method == "occlusion":
        window, stride = attribution.check_window(window, stride, min(pixels.shape[-2:]))
    started = time.perf_counter()
    logits = forward(pixels).numpy()
    target = label_index(loaded, label, logits)
    if method == "occlusion":  # forward passes only, each batch through the chosen backend; as many as the client set
        deadline = time.monotonic() + TIME_LIMIT_S
        heat = attribution.attribute(loaded, pixels, target, method, forward=forward, window=window, stride=stride)
    else:
        heat = gpu.on_gpu(attribution.attribute)(loaded, pixels, target, method)
    curves = attribution.deletion_curves(forward, pixels, target, heat, attribution.deletion_steps(pixels.shape[-1]))
    model_ms = (time.perf_counter() - started) * 1e3
    name = loaded.model.config.id2label[target]
    score = float(np.exp(logits[0, target] - np.logaddexp.reduce(logits[0])))  # its softmax score
    answer = {"method": method, "label": name, "score": score,
              "deletion_area": attribution.area(curves["salient"]),
              "random_deletion_area": attribution.area(curves["random"]),
              "deletion_curve": [round(float(s), 4) for s in curves["salient"]]}
    if method == "occlusion":
        answer.update(window=window, stride=stride)
    side = f"{pixels.shape[-1]} x {pixels.shape[-2]} px"
    picture = heatmaps.overlay(attribution.as_seen(loaded, pixels), heat, f"{method} for {name!r} ({score:.2f}), "
                               f"{side}", attribution.METHODS[method], signed=method == "integrated-gradients")
    notes = [*decoded.notes, *beyond_what_it_knows(loaded, decoded.image)]
    return Result(loaded, backend, model_ms, answer, images={"heatmap": picture}, notes=notes)


MAX_VISUALISED_SIDE = 64  # px: 100 gradient steps of a 224 px model take minutes on a CPU


def visualise_class(loaded: LoadedModel, label: str | None) -> Result:
    """What the model thinks `label` looks like (shared/inference/class_visualisation.py): answer {method,
    label, score (the label's softmax score reached), start_score, steps}, images {"heatmap": the start,
    the drawn image and the score at each step}."""
    side = input_side(loaded)
    if side > MAX_VISUALISED_SIDE:
        raise UserError(f"class-visualisation is offered for models whose input is at most {MAX_VISUALISED_SIDE} px "
                        f"(the embedded digits models); {loaded.entry.name} reads {side} px, where its "
                        f"{class_visualisation.DRAWN.steps} gradient steps would take minutes on a CPU.")
    if not label:
        examples = ", ".join(list(loaded.model.config.id2label.values())[:3])
        raise UserError(f"class-visualisation draws one label: name one of {loaded.entry.name}'s labels "
                        f"(e.g. {examples}).")
    target = label_index(loaded, label, None)
    style = class_visualisation.DRAWN if labels_are_digits(loaded.model.config.id2label) else class_visualisation.PHOTO
    started = time.perf_counter()
    pixels, scores = class_visualisation.ascend(attribution.Logits(loaded.model).eval(), target, side,
                                                loaded.processor.image_mean, loaded.processor.image_std, style)
    model_ms = (time.perf_counter() - started) * 1e3
    name = loaded.model.config.id2label[target]
    start = Image.new("RGB", (side, side), (round(255 * style.start),) * 3)
    picture = heatmaps.ascent(np.asarray(start), attribution.as_seen(loaded, pixels), scores,
                              f"what {loaded.entry.name} thinks {name!r} looks like")
    answer = {"method": attribution.CLASS_VISUALISATION, "label": name, "score": scores[-1],
              "start_score": scores[0], "steps": len(scores) - 1}
    return Result(loaded, "torch", model_ms, answer, images={"heatmap": picture})


MAX_MAP_IMAGES = 500
THUMBNAIL_SIDE = 96  # what the map keeps of each image to draw it and show its neighbours


def _at_most(image: Image.Image, side: int) -> Image.Image:
    """`image` shrunk (aspect kept) to fit `side` x `side`; a new image, the caller's is left alone."""
    return ImageOps.contain(image, (side, side)) if max(image.size) > side else image


@timing.whole_request
def embedding_map(images: list | None = None, model: str | None = None, fallback: bool = False) -> Result:
    """Images (paths, bytes or PIL; None: the 360 held-out digits with their true labels, or for a model that
    does not classify digits the photos the packages ship, IMAGENET_PHOTOS) -> Result with
    answer {"points": [{name, x, y, label, predicted, neighbours: [{name, distance}]}]}: each image at its
    place in a t-SNE map of the model's penultimate-layer embeddings, and its nearest images there;
    images {"map": the map drawn with thumbnails}, thumbnails {name: the image} for a page to show."""
    from shared.data.digits import held_out
    from shared.inference import embeddings

    loaded = MODELS.load(model, fallback=fallback)
    deadline = time.monotonic() + TIME_LIMIT_S
    if images is None and not labels_are_digits(loaded.model.config.id2label):
        images = [str(path) for path in IMAGENET_PHOTOS.values()]  # a photo model maps photos, not digits
    if images is None:
        pictures, truth = held_out()
        names = [f"held-out {i} ({label})" for i, label in enumerate(truth)]
        labels = [str(label) for label in truth]
        pixels, notes = preprocess(loaded, [p.convert("RGB") for p in pictures])["pixel_values"], []  # greyscale
    else:
        if not embeddings.MIN_IMAGES <= len(images) <= MAX_MAP_IMAGES:
            raise UserError(f"{len(images)} images; the embedding map takes {embeddings.MIN_IMAGES} to "
                            f"{MAX_MAP_IMAGES}.")
        names = [f"{i}: {Path(image).name}" if isinstance(image, str | Path) else f"image {i}"  # unique names
                 for i, image in enumerate(images)]
        pictures, rows, notes = [], [], []
        for done, (name, image) in enumerate(zip(names, images, strict=True)):
            if time.monotonic() > deadline:  # 500 photos of 40 MP take minutes to decode
                raise UserError(f"The embedding map stopped at its {TIME_LIMIT_S:.0f} s limit after reading {done} "
                                f"of {len(images)} images: send fewer or smaller ones.")
            try:
                decoded = decode_image(image)
            except UserError as err:
                raise UserError(f"{name}: {err}") from None
            # Read as Classify reads it (the whole upload through the processor), then keep only a
            # thumbnail: 500 full-size photos would fill the RAM.
            rows.append(preprocess(loaded, [decoded.image])["pixel_values"])
            pictures.append(_at_most(decoded.image, THUMBNAIL_SIDE))
            notes += decoded.notes
        pixels, labels = np.concatenate(rows), None
    started = time.perf_counter()
    pixels = torch.from_numpy(pixels)
    try:
        features = embeddings.penultimate(loaded, pixels, deadline)
    except TimeoutError as stopped:
        raise UserError(f"The embedding map stopped at its {TIME_LIMIT_S:.0f} s limit after {stopped} of "
                        f"{len(pixels)} images through {loaded.entry.name}: map fewer images, or with a smaller "
                        "model.") from None
    points = embeddings.tsne(features)
    with torch.no_grad():
        logits = loaded.model.classifier(torch.from_numpy(features).to(loaded.device, loaded.model.dtype))
    predicted = [loaded.model.config.id2label[int(i)] for i in logits.argmax(-1).cpu()]
    near, distances = embeddings.neighbours(features)
    model_ms = (time.perf_counter() - started) * 1e3
    rows = [{"name": name, "x": round(float(x), 3), "y": round(float(y), 3),
             "label": labels[i] if labels else None, "predicted": predicted[i],
             "neighbours": [{"name": names[j], "distance": round(float(d), 4)}
                            for j, d in zip(near[i], distances[i], strict=True)]}
            for i, (name, (x, y)) in enumerate(zip(names, points, strict=True))]
    answer = {"points": rows, "embedding_size": int(features.shape[1]), "colour": "true" if labels else "predicted"}
    if labels:
        answer["knn_accuracy_in_map"] = embeddings.cross_validated_accuracy(points, labels)
    picture = heatmaps.thumbnail_map(points, pictures, labels or predicted,
                                     f"{loaded.entry.name}: t-SNE of its penultimate layer, "
                                     f"{'true' if labels else 'predicted'} labels")
    thumbnails = {name: _at_most(image, THUMBNAIL_SIDE) for name, image in zip(names, pictures, strict=True)}
    return Result(loaded, "torch", model_ms, answer, images={"map": picture, "thumbnails": thumbnails}, notes=notes)
