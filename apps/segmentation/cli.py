"""`demohub predict segmentation`: the classes present as JSON, and the mask as a PNG."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from apps.segmentation import task
from shared.errors import UserError
from shared.inference.backends import BACKENDS
from shared.inputs.images import DecodedImage
from shared.serving import many


def add_arguments(parser: argparse.ArgumentParser) -> None:
    many.add_image_argument(parser)
    parser.add_argument("--model", help="Registry name, local model folder, or repo_id@revision.")
    parser.add_argument("--backend", choices=BACKENDS, default="torch")
    parser.add_argument("--out-mask", help="PNG file for the mask of class ids (16-bit when there are over 256).")


def predict(args: argparse.Namespace) -> dict:
    entry = task.MODELS.resolve(args.model)
    result = task.segment(args.image, model=entry.name, backend=args.backend)
    output = result.to_json()
    if args.out_mask:
        out = Path(args.out_mask)
        if out.suffix.lower() != ".png":
            raise UserError(f"--out-mask must name a .png file; got {args.out_mask}.")
        out.parent.mkdir(parents=True, exist_ok=True)
        mask = result["mask"]
        Image.fromarray(mask.astype(np.uint8 if mask.max() < 256 else np.uint16)).save(out)
        output["mask"] = str(out)
    return output


def predict_batch(images: list[DecodedImage], args: argparse.Namespace) -> list[dict]:
    if args.out_mask:
        raise UserError("--out-mask writes the mask of one image: give it with a single --image.")
    entry = task.MODELS.resolve(args.model)
    return [result.to_json() for result in task.segment_batch(images, model=entry.name, backend=args.backend)]
