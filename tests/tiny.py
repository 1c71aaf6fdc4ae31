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
    EfficientNetConfig,
    EfficientNetForImageClassification,
    EfficientNetImageProcessor,
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
        # google/efficientnet-b0, shrunk (top_bn is built with hidden_dim: it must equal the scaled top_conv width)
        "efficientnet": (EfficientNetForImageClassification(EfficientNetConfig(
            image_size=64, width_coefficient=0.25, depth_coefficient=0.25, hidden_dim=320, **names)),
            EfficientNetImageProcessor(size={"height": 64, "width": 64})),
    }


ARCHITECTURES = ("vit", "convnext", "resnet")  # the ones every classification test runs on
EXPLAINED = (*ARCHITECTURES, "efficientnet")  # the attribution tests add EfficientNet


def make_tiny_classifier(arch: str, out: str | Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    model, processor = _architectures(dict(enumerate(LABELS)))[arch]
    if arch == "efficientnet":  # transformers draws its convolutions and batch-norm scales with std 0.02:
        for module in model.modules():  # in eval mode the signal vanishes (logits all 0), so use He's init
            if isinstance(module, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(module.weight)
            elif isinstance(module, torch.nn.BatchNorm2d):
                torch.nn.init.ones_(module.weight)
    out = Path(out)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def make_tiny_digits_classifier(arch: str, out: str | Path, epochs: int = 4, lr: float = 3e-3,
                                seed: int = 0) -> tuple[Path, float]:
    """A tiny Hub architecture trained for seconds on the digits' training split (32 px): random
    weights say nothing about what a map means, a trained model does. Returns its folder and
    held-out accuracy."""
    from shared.data.digits import digit_image, split

    torch.manual_seed(seed)
    model, _ = _architectures({d: str(d) for d in range(10)})[arch]
    side = 64 if arch == "vit" else 32  # ViT's position embeddings are for 64 px
    processor = ConvNextImageProcessor(size={"shortest_edge": side}, crop_pct=1.0)
    data = {name: (processor([digit_image(p).convert("RGB") for p in pixels], return_tensors="pt")["pixel_values"],
                   torch.as_tensor(labels)) for name, (pixels, labels) in split().items()}
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr)
    pixels, labels = data["train"]
    for _ in range(epochs):
        model.train()
        for batch in torch.randperm(len(labels)).split(64):
            loss = torch.nn.functional.cross_entropy(model(pixel_values=pixels[batch]).logits, labels[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    model.eval()
    with torch.no_grad():
        accuracy = float((model(pixel_values=data["test"][0]).logits.argmax(-1) == data["test"][1]).float().mean())
    out = Path(out)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out, accuracy


if __name__ == "__main__":
    print(make_tiny_classifier(sys.argv[1], sys.argv[2]))


def make_tiny_captioner(decoder: str, out: str | Path, seed: int = 0) -> Path:
    """A random VisionEncoderDecoder in a Hub captioner's format: ViT + "gpt2"
    (nlpconnect/vit-gpt2-image-captioning's) or ViT + "trocr" (TrOCR's, the embedded model's),
    with a small BPE vocabulary of scene captions and a TrOCRProcessor."""
    import tempfile

    from transformers import (
        GenerationConfig,
        GPT2Config,
        TrOCRConfig,
        TrOCRProcessor,
        VisionEncoderDecoderConfig,
        VisionEncoderDecoderModel,
    )

    from apps.captioning.finetune import train_tokenizer
    from shared.data import scenes

    torch.manual_seed(seed)
    texts = [text for i in range(30) for text in scenes.make_scene(seed, i).caption.values()]
    with tempfile.TemporaryDirectory() as scratch:
        tokenizer = train_tokenizer(texts, Path(scratch), 120, 32)
    ids = dict(pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
               eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.bos_token_id)
    encoder = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64)
    if decoder == "gpt2":
        text = GPT2Config(vocab_size=len(tokenizer), n_embd=48, n_layer=2, n_head=2, n_positions=64,
                          add_cross_attention=True, is_decoder=True, **ids)
    else:
        text = TrOCRConfig(vocab_size=len(tokenizer), d_model=32, decoder_layers=3, decoder_attention_heads=2,
                           decoder_ffn_dim=64, max_position_embeddings=64, use_learned_position_embeddings=True,
                           layernorm_embedding=True, **ids)
    config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(encoder, text)
    for key, value in ids.items():
        setattr(config, key, value)
    model = VisionEncoderDecoderModel(config)
    model.generation_config = GenerationConfig(**ids, max_length=20)
    processor = TrOCRProcessor(image_processor=ViTImageProcessor(size={"height": 32, "width": 32}),
                               tokenizer=tokenizer)
    out = Path(out)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out
