"""Image classification, the recipe: image -> pixel_values -> logits -> top-k labels.

    from apps.classification.task import classify
    classify(Image.open("cat.png"), model="google/vit-base-patch16-224", backend="onnx", top_k=5)

The scores are the softmax of the logits, as `transformers.pipeline("image-classification")`
gives them, on the same image processor; the onnx backend matches torch within ONNX_SPEC.
"""

from __future__ import annotations

import itertools
import time

import numpy as np
from PIL import Image

from shared import backends, loader
from shared.checks import whole_number
from shared.examples import PHOTOS
from shared.export import Feeds, OnnxSpec
from shared.images import decode_image
from shared.loader import LoadedModel

TASK = "classification"
MAX_TOP_K = 20
ONNX_SPEC = OnnxSpec(
    input_names=("pixel_values",),
    output_names=("logits",),
    dynamic_axes={"pixel_values": {0: "batch"}},
    atol=1e-4,
    rtol=1e-3,
)


def onnx_spec(loaded: LoadedModel) -> OnnxSpec:
    return ONNX_SPEC


def cold_start_request() -> dict:
    """What `demohub bench --cold-start` sends as the first request to a fresh server."""
    from gradio_client import handle_file

    return {"image": handle_file(str(PHOTOS["cat"]))}


def preprocess(loaded: LoadedModel, images: list[Image.Image]) -> Feeds:
    pixels = loaded.processor(images=images, return_tensors="pt")["pixel_values"]
    return {"pixel_values": pixels.float().numpy()}


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
    top_k = min(check_top_k(top_k), loaded.model.config.num_labels)
    runner = backends.runner(loaded, backend, ONNX_SPEC, lambda n: sample_feeds(loaded, n))
    started = time.perf_counter()
    logits = runner(preprocess(loaded, images))["logits"]
    latency_ms = (time.perf_counter() - started) * 1e3
    return top_k_labels(loaded, logits, top_k), latency_ms


def classify(image, model: str | None = None, backend: str = "torch", top_k: int = 5,
             fallback: bool = False) -> dict:
    """One image (path, bytes or PIL) -> {labels, model, backend, latency_ms, notes}.

    With `fallback`, a model that cannot be loaded here is replaced by the embedded default
    and the notes say so (the UI's choice; the CLI fails instead).
    """
    decoded = decode_image(image)
    top_k = check_top_k(top_k)
    loaded, notice = loader.load_or_fallback(TASK, model) if fallback else (loader.load_model(TASK, model), "")
    labels, latency_ms = run(loaded, [decoded.image], backend, top_k)
    return {"labels": labels[0], "model": loaded.entry.name, "backend": backend,
            "latency_ms": round(latency_ms, 2), "notes": [n for n in (notice, *decoded.notes) if n]}

