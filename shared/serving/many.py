"""`demohub predict APP --image` over many files: several paths, folders or globs, one JSON line each.

    demohub predict classification --image photos/ > labels.jsonl
    demohub predict detection --image 'scans/*.png' a.jpg --batch-size 16

Every image app takes `--image` this way (`add_image_argument`). An app whose spec has
`cli_predict_batch` gets its images in batches, one model call per batch; the others are
answered one file at a time through their `cli_predict`. A file that fails gets a line with
the sentence (`{"file", "error"}`) and the rest go on; a progress bar goes to stderr.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time
from pathlib import Path
from typing import TextIO

from tqdm import tqdm

from shared.contract import AppSpec
from shared.errors import ModelUnavailable, UserError
from shared.inputs.checks import whole_number
from shared.inputs.images import decode_image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")
MAX_BATCH = 256


def add_image_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image", nargs="+", required=True, metavar="PATH",
                        help="Image file (JPEG, PNG, WebP, GIF, BMP, TIFF). Several files, a folder (its image "
                             "files, not its subfolders) or a quoted glob print one JSON line per file.")
    parser.add_argument("--batch-size", type=int, default=8, help="Images per model call over many files.")


def image_files(values: list[str]) -> tuple[list[Path], bool]:
    """The files `--image` names, and whether it named many (a folder or glob prints JSON lines even
    for one file). A named file is kept even if missing or not an image: its line will say so."""
    files: list[Path] = []
    for value in values:
        if Path(value).is_dir():
            found = sorted(p for p in Path(value).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            if not found:
                raise UserError(f"{value} holds no image files ({', '.join(IMAGE_SUFFIXES)}).")
        elif any(c in value for c in "*?[") and not Path(value).exists():
            found = sorted(Path(p) for p in glob.glob(value, recursive=True) if Path(p).is_file())
            if not found:
                raise UserError(f"No file matches {value}.")
        else:
            found = [Path(value)]
        files += found
    return files, len(values) > 1 or files != [Path(values[0])]


def _failure(err: Exception) -> dict:
    if isinstance(err, (UserError, ModelUnavailable)):
        return {"error": str(err)}
    if os.environ.get("DEMOHUB_DEBUG"):
        raise err
    return {"error": f"unexpected {type(err).__name__}: {err}"}


def _answers(spec: AppSpec, args: argparse.Namespace, files: list[Path]) -> list[dict]:
    """One dict per file: the app's answer, or the error."""
    if spec.cli_predict_batch is None:
        answers = []
        for path in files:
            try:
                answers.append(spec.cli_predict(argparse.Namespace(**{**vars(args), "image": str(path)})))
            except Exception as err:  # noqa: BLE001 - one file's failure is its own line
                answers.append(_failure(err))
        return answers
    decoded = {}
    answers = {}
    for path in files:
        try:
            decoded[path] = decode_image(path)
        except Exception as err:  # noqa: BLE001
            answers[path] = _failure(err)
    if decoded:
        try:
            answers.update(zip(decoded, spec.cli_predict_batch(list(decoded.values()), args), strict=True))
        except Exception as err:  # noqa: BLE001 - the batch's failure is each of its files' line
            answers.update((path, _failure(err)) for path in decoded)
    return [answers[path] for path in files]


def predict_files(spec: AppSpec, args: argparse.Namespace, files: list[Path], out: TextIO | None = None,
                  progress: bool = True) -> int:
    """Print one JSON line per file, `{"file": ..., **answer}`, in batches (to `out`, default
    stdout); return how many failed."""
    out = out or sys.stdout
    batch_size = whole_number("--batch-size", args.batch_size, 1, MAX_BATCH)
    spec.models.resolve(getattr(args, "model", None))  # a bad --model is one error, not one per file
    failed = 0
    with tqdm(total=len(files), unit="image", file=sys.stderr, disable=not progress) as bar:
        for start in range(0, len(files), batch_size):
            chunk = files[start:start + batch_size]
            for path, answer in zip(chunk, _answers(spec, args, chunk), strict=True):
                failed += "error" in answer
                out.write(json.dumps({"file": str(path), **answer}) + "\n")
            out.flush()
            bar.update(len(chunk))
    return failed


def throughput(spec: AppSpec, args: argparse.Namespace, files: list[Path], batch_sizes: tuple[int, ...],
               backends: tuple[str, ...] = ("torch", "onnx")) -> dict:
    """Images per second over `files` through `predict_files` (decode to JSON line) at each batch
    size and backend, after one warm-up pass that loads and exports the model."""
    if spec.cli_predict_batch is None:
        raise UserError(f"{spec.name} answers one image at a time; throughput is measured for the apps that batch.")
    result: dict = {"images": len(files)}
    with open(os.devnull, "w") as sink:
        for backend in backends:
            for batch_size in batch_sizes:
                settings = argparse.Namespace(**{**vars(args), "backend": backend, "batch_size": batch_size})
                if batch_size == batch_sizes[0]:
                    predict_files(spec, settings, files[:batch_size], sink, progress=False)  # warm-up
                started = time.perf_counter()
                failed = predict_files(spec, settings, files, sink, progress=False)
                if failed:
                    raise UserError(f"Failed: {failed} of {len(files)}; run predict on them to see why.")
                seconds = time.perf_counter() - started
                result[f"{backend}_batch_{batch_size}_images_per_s"] = round(len(files) / seconds, 1)
    return result
