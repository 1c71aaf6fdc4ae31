"""`demohub predict detection`: boxes as JSON."""

from __future__ import annotations

import argparse

from apps.detection import task
from shared.inference.backends import BACKENDS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image", required=True)
    parser.add_argument("--model", help="Registry name, local model folder, or repo_id@revision.")
    parser.add_argument("--backend", choices=BACKENDS, default="torch")
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--classes", help="Comma-separated labels to keep (default: all).")
    parser.add_argument("--max-detections", type=int, default=20)
    parser.add_argument("--nms", action=argparse.BooleanOptionalAction, default=True,
                        help="Drop a box that overlaps a better one of its class (--no-nms keeps every box).")


def predict(args: argparse.Namespace) -> dict:
    entry = task.MODELS.resolve(args.model)
    classes = [c.strip() for c in args.classes.split(",") if c.strip()] if args.classes else None
    result = task.detect(args.image, model=entry.name, backend=args.backend, threshold=args.threshold,
                         classes=classes, max_detections=args.max_detections, nms=args.nms)
    return result.to_json()
