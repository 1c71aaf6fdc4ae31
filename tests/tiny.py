"""Tiny, randomly initialised copies of real Hub classifier architectures, for code-path tests
and for `demohub bench` on a real architecture without a download:

    python -m tests.tiny vit /tmp/tiny-vit && demohub bench classification --model /tmp/tiny-vit

Random weights are fine here and nowhere else: no app serves these.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from transformers import (
    ConvNextConfig,
    ConvNextForImageClassification,
    ConvNextImageProcessor,
    ResNetConfig,
    ResNetForImageClassification,
    ViTConfig,
    ViTForImageClassification,
    ViTImageProcessor,
)

LABELS = ["tabby cat", "espresso", "space shuttle", "military uniform", "teapot", "volcano", "golden retriever",
          "pizza", "rocket", "banana", "castle", "umbrella"]


def _architectures(labels: dict[int, str]) -> dict:
    names = dict(id2label=labels, label2id={v: k for k, v in labels.items()})
    return {
        # google/vit-base-patch16-224, shrunk
        "vit": (ViTForImageClassification(ViTConfig(
            image_size=64, patch_size=16, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=64, **names)), ViTImageProcessor(size={"height": 64, "width": 64})),
        # facebook/convnext-tiny-224, shrunk
        "convnext": (ConvNextForImageClassification(ConvNextConfig(
            hidden_sizes=[16, 32], depths=[1, 1], num_stages=2, **names)),
            ConvNextImageProcessor(size={"shortest_edge": 64})),
        # microsoft/resnet-50, shrunk
        "resnet": (ResNetForImageClassification(ResNetConfig(
            embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1], layer_type="bottleneck", **names)),
            ConvNextImageProcessor(size={"shortest_edge": 64}, crop_pct=0.875)),
    }


ARCHITECTURES = ("vit", "convnext", "resnet")


def make_tiny_classifier(arch: str, out: str | Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    model, processor = _architectures(dict(enumerate(LABELS)))[arch]
    out = Path(out)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


if __name__ == "__main__":
    print(make_tiny_classifier(sys.argv[1], sys.argv[2]))
