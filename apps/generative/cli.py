"""`demohub predict generative`: a sample grid written to a PNG, and JSON about it."""

from __future__ import annotations

import argparse
from pathlib import Path

from apps.generative import task
from shared.errors import UserError
from shared.inference.backends import BACKENDS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", required=True, help="Whole number; the same seed gives the same grid.")
    parser.add_argument("--n", default="16", help=f"Samples, 1 to {task.MAX_SAMPLES}.")
    parser.add_argument("--label", help="Class to draw (GAN only); default: every class in turn.")
    parser.add_argument("--truncation", type=float, default=None,
                        help="GAN truncation (default 3: almost the whole normal) / VAE temperature (default 1).")
    parser.add_argument("--model", help="Registry name or local model folder.")
    parser.add_argument("--backend", choices=BACKENDS, default="torch")
    parser.add_argument("--out", required=True, help="PNG file for the grid.")


def _number(value: str, name: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise UserError(f"{name} must be a whole number; got {value!r}.") from None


def predict(args: argparse.Namespace) -> dict:
    entry = task.MODELS.resolve(args.model)
    result = task.generate(model=entry.name, seed=_number(args.seed, "--seed"), n=_number(args.n, "--n"),
                           label=args.label, truncation=args.truncation, backend=args.backend)
    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise UserError(f"--out must name a .png file; got {args.out}.")
    out.parent.mkdir(parents=True, exist_ok=True)
    result.images["grid"].save(out)
    return {"out": str(out), **result.to_json()}
