"""`demohub predict detection`: boxes as JSON."""

from __future__ import annotations

import argparse

from apps.detection import task
from shared.inference.backends import BACKENDS
from shared.inputs.images import DecodedImage
from shared.serving import many


def add_arguments(parser: argparse.ArgumentParser) -> None:
    many.add_image_argument(parser)
    parser.add_argument("--model", help="Registry name, local model folder, or repo_id@revision.")
    parser.add_argument("--backend", choices=BACKENDS, default="torch")
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--classes", help="Comma-separated labels to keep (default: all).")
    parser.add_argument("--max-detections", type=int, default=20)
    parser.add_argument("--nms", action=argparse.BooleanOptionalAction, default=True,
                        help="Drop a box that overlaps a better one of its class (--no-nms keeps every box).")


def _settings(args: argparse.Namespace) -> dict:
    classes = [c.strip() for c in args.classes.split(",") if c.strip()] if args.classes else None
    return dict(model=task.MODELS.resolve(args.model).name, backend=args.backend, threshold=args.threshold,
                classes=classes, max_detections=args.max_detections, nms=args.nms)


def predict(args: argparse.Namespace) -> dict:
    return task.detect(args.image, **_settings(args)).to_json()


def predict_batch(images: list[DecodedImage], args: argparse.Namespace) -> list[dict]:
    return [result.to_json() for result in task.detect_batch(images, **_settings(args))]
