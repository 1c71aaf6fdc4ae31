"""`demohub predict|export|bench translation`: the arguments and what is printed."""

from __future__ import annotations

import argparse

from apps.translation import task
from shared import backends, bench, loader
from shared.seq2seq import export_graphs


def add_predict_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--text", required=True, help="Text to translate: sentences or lines.")
    parser.add_argument("--src", default="en", help=f"Source language: {', '.join(task.LANGUAGES)}.")
    parser.add_argument("--tgt", default="de", help="Target language.")
    parser.add_argument("--model", help=f"Registry name, {task.OPUS_MT} (by the pair), local folder, or "
                                        "repo_id@revision.")
    parser.add_argument("--backend", choices=backends.BACKENDS, default="torch")
    parser.add_argument("--num-beams", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=128)


def predict(args: argparse.Namespace) -> dict:
    return task.translate(args.text, src=args.src, tgt=args.tgt, model=args.model, backend=args.backend,
                          num_beams=args.num_beams, max_new_tokens=args.max_new_tokens)


def export(loaded: loader.LoadedModel) -> dict:
    exported = export_graphs(loaded, task.sample_encoder_feeds(loaded, 2))
    return {"model": loaded.entry.name, "paths": {name: str(path) for name, path in exported.paths.items()},
            "seconds": round(exported.seconds, 2), "cached": exported.cached,
            "max_abs_diff_vs_torch": exported.max_abs_diff, "tolerance": exported.specs.encoder.atol}


def run_bench(loaded: loader.LoadedModel, batch_sizes: tuple[int, ...], repeats: int) -> dict:
    def inputs(n: int) -> dict:
        texts, src, tgt = task.sample_texts(loaded, n)
        return dict(task.translation_inputs(loaded.processor, texts, src, tgt, padding=True, return_tensors="pt"))

    return bench.bench_generation(loaded, task.onnx_generator(loaded), inputs, batch_sizes, repeats)
