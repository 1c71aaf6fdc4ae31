"""`demohub predict captioning`: the arguments and what is printed."""

from __future__ import annotations

import argparse

from apps.captioning import task
from shared.inference.backends import BACKENDS
from shared.serving import many


def add_arguments(parser: argparse.ArgumentParser) -> None:
    many.add_image_argument(parser)
    parser.add_argument("--lang", help="Caption language, e.g. en or de (default: the model's first).")
    parser.add_argument("--prompt", help="Text the caption continues (models that take one, e.g. BLIP).")
    parser.add_argument("--num-beams", type=int, help="Default: the model's generation config.")
    parser.add_argument("--num-captions", type=int, default=1, help="The n best beams, with scores.")
    parser.add_argument("--max-new-tokens", type=int, help="Default: the model's generation config.")
    parser.add_argument("--min-new-tokens", type=int)
    parser.add_argument("--repetition-penalty", type=float)
    parser.add_argument("--no-repeat-ngram-size", type=int)
    parser.add_argument("--model", help="Registry name, local model folder, or repo_id@revision.")
    parser.add_argument("--backend", choices=BACKENDS, default="torch")


def predict(args: argparse.Namespace) -> dict:
    return task.caption(args.image, model=args.model, backend=args.backend, lang=args.lang, prompt=args.prompt,
                        num_beams=args.num_beams, num_captions=args.num_captions, max_new_tokens=args.max_new_tokens,
                        min_new_tokens=args.min_new_tokens, repetition_penalty=args.repetition_penalty,
                        no_repeat_ngram_size=args.no_repeat_ngram_size).to_json()
