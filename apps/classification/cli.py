"""`demohub predict|export classification`: the arguments and what is printed."""

from __future__ import annotations

import argparse

import numpy as np

from apps.classification import task
from shared import backends, loader, registry
from shared.digits import digit_image, split


def add_predict_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image", required=True, help="Image file (JPEG, PNG, WebP, GIF, BMP, TIFF).")
    parser.add_argument("--model", help="Registry name, local model folder, or repo_id@revision.")
    parser.add_argument("--backend", choices=backends.BACKENDS, default="torch")
    parser.add_argument("--top-k", type=int, default=5)


def predict(args: argparse.Namespace) -> dict:
    entry = registry.resolve(task.TASK, args.model)
    result = task.classify(args.image, model=entry.name, backend=args.backend, top_k=args.top_k)
    return result


def _digits_accuracy(loaded: loader.LoadedModel, run) -> float | None:
    """Accuracy on the held-out digits, for models whose labels are the ten digits."""
    if sorted(loaded.model.config.id2label.values()) != [str(d) for d in range(10)]:
        return None
    pixels, labels = split()["test"]
    feeds = task.preprocess(loaded, [digit_image(p).convert("RGB") for p in pixels])
    predicted = run(feeds)["logits"].argmax(axis=-1)
    names = [loaded.model.config.id2label[int(i)] for i in predicted]
    return float(np.mean([name == str(label) for name, label in zip(names, labels, strict=True)]))


def quantization_report(loaded: loader.LoadedModel, fp32_path, int8_path) -> dict:
    """How much int8 changes the answers: agreement on the photos, accuracy on held-out digits."""
    fp32 = backends.OnnxRunner(fp32_path, loaded.device, task.ONNX_SPEC)
    int8 = backends.OnnxRunner(int8_path, loaded.device, task.ONNX_SPEC)
    feeds = task.sample_feeds(loaded, 8)
    before, after = fp32(feeds)["logits"], int8(feeds)["logits"]
    report = {
        "int8_path": str(int8_path),
        "size_ratio": round(fp32_path.stat().st_size / int8_path.stat().st_size, 2),
        "max_abs_logit_change": float(np.abs(before - after).max()),
        "top1_agreement_on_photos": float((before.argmax(-1) == after.argmax(-1)).mean()),
    }
    accuracy_fp32 = _digits_accuracy(loaded, fp32)
    if accuracy_fp32 is not None:
        report["digits_accuracy_fp32"] = accuracy_fp32
        report["digits_accuracy_int8"] = _digits_accuracy(loaded, int8)
    return report
