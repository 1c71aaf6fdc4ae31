"""Random-weight copies of the Hub architectures the apps serve, at their real size or tiny, built
from a config without a download: what `demohub bench APP --size real|tiny` measures.

    folder = architectures.build("vit-b16", "real")      # a model folder under $DEMOHUB_CACHE/architectures/

Random weights are right for timing (speed depends on shapes, not values) and for nothing else:
no app offers these folders. Each real config follows its Hub model's config.json (sizes,
layers, heads, input size); the Marian copy borrows the embedded scenes-marian tokenizer, so its
sentences tokenise offline, and has opus-mt's 58,101-entry vocabulary and 6+6 layers of 512.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from shared.models import registry

SIZES = ("real", "tiny")


def _labels(n: int) -> dict:
    return {"id2label": {i: f"class {i}" for i in range(n)}, "label2id": {f"class {i}": i for i in range(n)}}


def _vit(real: bool):
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    size = 224 if real else 32  # google/vit-base-patch16-224
    config = ViTConfig(image_size=size, **({} if real else dict(hidden_size=32, num_hidden_layers=2,
                                                                 num_attention_heads=2, intermediate_size=64)),
                       **_labels(1000 if real else 10))
    return ViTForImageClassification(config), ViTImageProcessor(size={"height": size, "width": size})


def _resnet(real: bool):
    from transformers import ConvNextImageProcessor, ResNetConfig, ResNetForImageClassification

    shape = {} if real else dict(embedding_size=8, hidden_sizes=[16, 32], depths=[1, 1])  # microsoft/resnet-50
    return (ResNetForImageClassification(ResNetConfig(**shape, **_labels(1000 if real else 10))),
            ConvNextImageProcessor(size={"shortest_edge": 224 if real else 32}, crop_pct=0.875))


def _efficientnet(real: bool):
    from transformers import EfficientNetConfig, EfficientNetForImageClassification, EfficientNetImageProcessor

    size = 224 if real else 32  # google/efficientnet-b0: width and depth coefficients 1.0
    shape = {} if real else dict(num_block_repeats=[1] * 7)
    config = EfficientNetConfig(image_size=size, width_coefficient=1.0, depth_coefficient=1.0, hidden_dim=1280,
                                dropout_rate=0.2, **shape, **_labels(1000 if real else 10))
    processor = EfficientNetImageProcessor(size={"height": size, "width": size}, do_center_crop=False)
    return EfficientNetForImageClassification(config), processor


def _yolos(real: bool):
    from transformers import YolosConfig, YolosForObjectDetection, YolosImageProcessor

    # hustvl/yolos-tiny: DeiT-tiny (192 wide, 12 layers, 3 heads), 100 detection tokens, 512 px short side
    shape = (dict(hidden_size=192, num_hidden_layers=12, num_attention_heads=3, intermediate_size=768,
                  image_size=[800, 1333], num_detection_tokens=100, use_mid_position_embeddings=False) if real else
             dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                  image_size=[64, 64], num_detection_tokens=10))
    edge = {"shortest_edge": 512, "longest_edge": 864} if real else {"shortest_edge": 64, "longest_edge": 64}
    return (YolosForObjectDetection(YolosConfig(**shape, **_labels(91 if real else 4))),
            YolosImageProcessor(size=edge))


def _rtdetr(real: bool):
    from transformers import RTDetrConfig, RTDetrForObjectDetection, RTDetrImageProcessor, RTDetrResNetConfig

    # PekingU/rtdetr_r18vd: a ResNet-18-vd backbone (stem 32-32-64, so the first stage keeps its width and
    # size: a wider first stage would get a halving shortcut), a 256-wide hybrid encoder, 3 decoder layers, 640 px
    widths = [64, 128, 256, 512] if real else [8, 16, 32, 64]
    backbone = RTDetrResNetConfig(embedding_size=64 if real else 8, hidden_sizes=widths,
                                  depths=[2, 2, 2, 2] if real else [1, 1, 1, 1], layer_type="basic",
                                  out_features=["stage2", "stage3", "stage4"])
    shape = dict(hidden_expansion=0.5) if real else dict(
        encoder_hidden_dim=32, encoder_ffn_dim=64, d_model=32, decoder_ffn_dim=64, decoder_in_channels=[32, 32, 32],
        encoder_attention_heads=2, decoder_attention_heads=2, num_queries=20, num_denoising=0)
    size = 640 if real else 64
    config = RTDetrConfig(backbone_config=backbone, encoder_in_channels=widths[1:], decoder_layers=3 if real else 1,
                          anchor_image_size=None, **shape, **_labels(80 if real else 4))
    return RTDetrForObjectDetection(config), RTDetrImageProcessor(size={"height": size, "width": size})


def _segformer(real: bool):
    from transformers import SegformerConfig, SegformerForSemanticSegmentation, SegformerImageProcessor

    # nvidia/segformer-b0-finetuned-ade-512-512 (SegformerConfig's defaults are b0)
    shape = {} if real else dict(hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1], decoder_hidden_size=32)
    size = 512 if real else 64
    return (SegformerForSemanticSegmentation(SegformerConfig(**shape, **_labels(150 if real else 4))),
            SegformerImageProcessor(size={"height": size, "width": size}))


def _upernet(real: bool):
    from transformers import ConvNextConfig, SegformerImageProcessor, UperNetConfig, UperNetForSemanticSegmentation

    # openmmlab/upernet-convnext-tiny: ConvNeXt-T (96-768 wide, 3-3-9-3 blocks), 512-wide head, 512 px
    widths = [96, 192, 384, 768] if real else [8, 16, 24, 32]
    backbone = ConvNextConfig(hidden_sizes=widths, depths=[3, 3, 9, 3] if real else [1, 1, 1, 1],
                              out_features=["stage1", "stage2", "stage3", "stage4"])
    config = UperNetConfig(backbone_config=backbone, hidden_size=512 if real else 16, auxiliary_in_channels=widths[2],
                           auxiliary_channels=256 if real else 8, **_labels(150 if real else 4))
    size = 512 if real else 64
    return UperNetForSemanticSegmentation(config), SegformerImageProcessor(size={"height": size, "width": size})


def _marian(real: bool):
    from transformers import AutoTokenizer, GenerationConfig, MarianConfig, MarianMTModel

    tokenizer = AutoTokenizer.from_pretrained(registry.get("translation", "scenes-marian").local_dir)
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    # Helsinki-NLP/opus-mt-en-de: 58,101 tokens, 6+6 layers of 512, 8 heads, 2048-wide feed-forward
    vocab = 58101 if real else len(tokenizer)
    width, layers, heads, ffn = (512, 6, 8, 2048) if real else (32, 2, 2, 64)
    config = MarianConfig(vocab_size=vocab, decoder_vocab_size=vocab, d_model=width, encoder_layers=layers,
                          decoder_layers=layers, encoder_attention_heads=heads, decoder_attention_heads=heads,
                          encoder_ffn_dim=ffn, decoder_ffn_dim=ffn, max_position_embeddings=512,
                          activation_function="swish", scale_embedding=True, pad_token_id=pad, eos_token_id=eos,
                          forced_eos_token_id=eos, decoder_start_token_id=pad, share_encoder_decoder_embeddings=True)
    model = MarianMTModel(config)
    # random weights rarely write the end token: every sentence is generated to this length
    model.generation_config = GenerationConfig(pad_token_id=pad, eos_token_id=eos, decoder_start_token_id=pad,
                                               forced_eos_token_id=eos, max_length=32, num_beams=1)
    return model, tokenizer


# name -> (app, what it copies, builder(real) -> (model, processor))
ARCHITECTURES: dict[str, tuple[str, str, Callable]] = {
    "vit-b16": ("classification", "google/vit-base-patch16-224", _vit),
    "resnet-50": ("classification", "microsoft/resnet-50", _resnet),
    "efficientnet-b0": ("classification", "google/efficientnet-b0", _efficientnet),
    "yolos-tiny": ("detection", "hustvl/yolos-tiny", _yolos),
    "rtdetr-r18": ("detection", "PekingU/rtdetr_r18vd", _rtdetr),
    "segformer-b0": ("segmentation", "nvidia/segformer-b0-finetuned-ade-512-512", _segformer),
    "upernet-convnext-t": ("segmentation", "openmmlab/upernet-convnext-tiny", _upernet),
    "opus-mt-marian": ("translation", "Helsinki-NLP/opus-mt-en-de", _marian),
}
# registry facts the copied Hub model has (RT-DETR's query selection exports at a fixed batch)
FACTS = {"rtdetr-r18": {"onnx_batch": 1}, "opus-mt-marian": {"languages": ("en", "de"), "pairs": ("en-de",)}}


def of_app(app: str) -> list[str]:
    return [name for name, (owner, _, _) in ARCHITECTURES.items() if owner == app]


def _settle_batch_norms(model: torch.nn.Module, processor) -> None:
    """Give every BatchNorm a unit scale and the statistics of its own inputs (random images through
    the random net). With some models' random init (EfficientNet's scales drawn around 0.02) a deep
    CNN's activations shrink layer by layer to zeros and denormals: its logits are all 0 and its
    timings meaningless (denormals are slow)."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    size = processor.size.get("height") or processor.size.get("shortest_edge")
    model.eval()
    for norm in norms:
        norm.reset_parameters()  # weight 1, bias 0, fresh running statistics
        norm.momentum = None  # a cumulative average over the batches below
        norm.train()
    with torch.no_grad():
        for _ in range(2):
            model(pixel_values=torch.randn(4, 3, size, size))
    for norm in norms:
        norm.momentum = 0.1
    model.eval()


def build(name: str, size: str, root: Path | None = None, seed: int = 0) -> Path:
    """The folder of a random `size` copy of architecture `name` (built once, then reused)."""
    root = root or Path(os.environ.get("DEMOHUB_CACHE", Path.home() / ".cache" / "demohub")) / "architectures"
    out = root / f"{size}-{name}"
    if (out / "model.safetensors").is_file():
        return out
    torch.manual_seed(seed)
    model, processor = ARCHITECTURES[name][2](size == "real")
    _settle_batch_norms(model, processor)
    scratch = Path(tempfile.mkdtemp(dir=root.mkdir(parents=True, exist_ok=True) or root))
    model.save_pretrained(scratch)
    processor.save_pretrained(scratch)
    shutil.rmtree(out, ignore_errors=True)
    scratch.rename(out)  # a reader sees the whole folder or none of it
    return out
