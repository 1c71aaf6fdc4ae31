"""`demohub predict translation`: the arguments and what is printed."""

from __future__ import annotations

import argparse

from apps.translation import task
from shared.inference.backends import BACKENDS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--text", required=True, help="Text to translate: sentences or lines.")
    parser.add_argument("--src-lang", "--src", dest="src_lang", default="en",
                        help=f"Source language: {', '.join(task.LANGUAGES)}.")
    parser.add_argument("--tgt-lang", "--tgt", dest="tgt_lang", default="de", help="Target language.")
    parser.add_argument("--model", help=f"Registry name, {task.OPUS_MT} (by the pair), local folder, or "
                                        "repo_id@revision.")
    parser.add_argument("--backend", choices=BACKENDS, default="torch")
    parser.add_argument("--num-beams", type=int, help="Default: the model's generation config.")
    parser.add_argument("--max-new-tokens", type=int, help="Per sentence. Default: the model's generation config.")


def predict(args: argparse.Namespace) -> dict:
    return task.translate(args.text, src_lang=args.src_lang, tgt_lang=args.tgt_lang, model=args.model,
                          backend=args.backend, num_beams=args.num_beams, max_new_tokens=args.max_new_tokens).to_json()
