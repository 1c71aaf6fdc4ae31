"""Tiny, randomly initialised copies of real Hub architectures, for code-path tests and for
`demohub bench` on a real architecture without a download:

    python -m tests.tiny vit /tmp/tiny-vit && demohub bench classification --model /tmp/tiny-vit
    python -m tests.tiny blip-vqa /tmp/tiny-blip-vqa && demohub bench vqa --model /tmp/tiny-blip-vqa

(vit, convnext, resnet; ved-gpt2, ved-trocr, blip-caption for captioning; blip-vqa, blip-vqa-128, vilt
for vqa. blip-vqa-128 has 128 text positions, enough for the bench to time the cache at 64 new tokens.)

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


def _scene_word_tokenizer(seed: int, **kwargs):
    """A BERT word-piece tokenizer whose vocabulary is the words of 30 scenes' captions, questions
    and answers (in both languages), after BERT's special tokens and BLIP's `[DEC]`."""
    import re
    import tempfile

    from transformers import BertTokenizer

    from shared.data import scenes

    texts = []
    for scene in (scenes.make_scene(seed, i) for i in range(30)):
        texts += [*scene.caption.values(), *(t for qa in scene.qa for part in qa.values() for t in part.values())]
    words = dict.fromkeys(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", "a", "picture", "photo", "of"])
    words.update(dict.fromkeys(w for t in texts for w in re.findall(r"\w+|[^\w\s]", t.lower())))
    with tempfile.TemporaryDirectory() as scratch:
        (Path(scratch) / "vocab.txt").write_text("\n".join(words) + "\n")
        return BertTokenizer(str(Path(scratch) / "vocab.txt"), **kwargs)


def make_tiny_blip(kind: str, out: str | Path, seed: int = 0, positions: int = 64) -> Path:
    """A random BLIP in the Hub's format: "caption" (Salesforce/blip-image-captioning-base's
    BlipForConditionalGeneration) or "vqa" (Salesforce/blip-vqa-base's BlipForQuestionAnswering),
    with a word-level vocabulary of the scene world, `[DEC]` as its start token, and a BlipProcessor.
    As in the Hub's configs, the text `eos_token_id` is not `[SEP]`: BLIP's generate() stops at `[SEP]`.
    `positions`: the text encoder's and decoder's (the Hub's models have 512)."""
    from transformers import (
        BlipConfig,
        BlipForConditionalGeneration,
        BlipForQuestionAnswering,
        BlipImageProcessor,
        BlipProcessor,
    )

    torch.manual_seed(seed)
    tokenizer = _scene_word_tokenizer(seed, bos_token="[DEC]", model_max_length=64)
    text = dict(vocab_size=len(tokenizer), hidden_size=32, encoder_hidden_size=32, intermediate_size=64,
                num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=positions,
                bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.cls_token_id,
                pad_token_id=tokenizer.pad_token_id, sep_token_id=tokenizer.sep_token_id)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32,
                  patch_size=8)
    config = BlipConfig(text_config=text, vision_config=vision, projection_dim=32, image_text_hidden_size=32)
    model = (BlipForConditionalGeneration if kind == "caption" else BlipForQuestionAnswering)(config)
    processor = BlipProcessor(BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer)
    out = Path(out)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def make_tiny_vilt(out: str | Path, seed: int = 0) -> Path:
    """A random ViltForQuestionAnswering in dandelin/vilt-b32-finetuned-vqa's format (a classifier
    over an answer vocabulary, here the scene world's answers), with a ViltProcessor."""
    from transformers import ViltConfig, ViltForQuestionAnswering, ViltImageProcessor, ViltProcessor

    from shared.data import scenes

    torch.manual_seed(seed)
    tokenizer = _scene_word_tokenizer(seed, model_max_length=40)
    answers = sorted({a for i in range(30) for qa in scenes.make_scene(seed, i).qa for a in qa["answer"].values()})
    config = ViltConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, image_size=32, patch_size=8, max_position_embeddings=40,
                        max_image_length=-1, num_labels=len(answers), id2label=dict(enumerate(answers)),
                        label2id={a: i for i, a in enumerate(answers)})
    model = ViltForQuestionAnswering(config)
    processor = ViltProcessor(ViltImageProcessor(size={"shortest_edge": 32}, size_divisor=8), tokenizer)
    out = Path(out)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


if __name__ == "__main__":
    builders = {"blip-caption": lambda out: make_tiny_blip("caption", out),
                "blip-vqa": lambda out: make_tiny_blip("vqa", out),
                "blip-vqa-128": lambda out: make_tiny_blip("vqa", out, positions=128),
                "ved-gpt2": lambda out: make_tiny_captioner("gpt2", out),
                "ved-trocr": lambda out: make_tiny_captioner("trocr", out), "vilt": make_tiny_vilt}
    print(builders.get(sys.argv[1], lambda out: make_tiny_classifier(sys.argv[1], out))(sys.argv[2]))
