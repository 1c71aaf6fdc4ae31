"""`demohub predict vqa`: the arguments and what is printed."""

from __future__ import annotations

import argparse

from apps.vqa import task
from shared.inference.backends import BACKENDS
from shared.serving import many


def add_arguments(parser: argparse.ArgumentParser) -> None:
    many.add_image_argument(parser)
    parser.add_argument("--question", action="append", required=True,
                        help=f"A question about the image; repeat for several (at most {task.MAX_QUESTIONS}).")
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--model", help="Registry name, local model folder, or repo_id@revision.")
    parser.add_argument("--backend", choices=BACKENDS, default="torch")


def predict(args: argparse.Namespace) -> dict:
    return task.answer(args.image, args.question, model=args.model, backend=args.backend, top_k=args.top_k).to_json()
