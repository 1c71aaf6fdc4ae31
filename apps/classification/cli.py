"""`demohub predict classification`: the arguments and what is printed; its held-out check."""

from __future__ import annotations

import argparse
from collections.abc import Callable

import numpy as np

from apps.classification import task
from shared.data.digits import digit_image, labels_are_digits, split
from shared.inference.backends import BACKENDS
from shared.inputs.images import DecodedImage
from shared.models.loader import LoadedModel
from shared.serving import many


def add_arguments(parser: argparse.ArgumentParser) -> None:
    many.add_image_argument(parser)
    parser.add_argument("--model", help="Registry name, local model folder, or repo_id@revision.")
    parser.add_argument("--backend", choices=BACKENDS, default="torch")
    parser.add_argument("--top-k", type=int, default=5)


def predict(args: argparse.Namespace) -> dict:
    entry = task.MODELS.resolve(args.model)
    return task.classify(args.image, model=entry.name, backend=args.backend, top_k=args.top_k).to_json()


def predict_batch(images: list[DecodedImage], args: argparse.Namespace) -> list[dict]:
    entry = task.MODELS.resolve(args.model)
    return [r.to_json() for r in task.classify_batch(images, model=entry.name, backend=args.backend, top_k=args.top_k)]


def digits_accuracy(loaded: LoadedModel, run: Callable) -> dict:
    """Accuracy on the held-out digits, for models whose labels are the ten digits (else nothing)."""
    if not labels_are_digits(loaded.model.config.id2label):
        return {}
    pixels, labels = split()["test"]
    feeds = task.preprocess(loaded, [digit_image(p).convert("RGB") for p in pixels])
    predicted = run(feeds)["logits"].argmax(axis=-1)
    names = [loaded.model.config.id2label[int(i)] for i in predicted]
    return {"digits_accuracy": float(np.mean([name == str(label) for name, label in zip(names, labels, strict=True)]))}
