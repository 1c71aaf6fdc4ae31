"""Transfer learning for captioning: a vision encoder-decoder onto your own image-caption data.

Data (`--data`): a JSONL file as the scene world writes it (rows {"image": path relative to
the file, "caption": text or {"en": .., "de": ..}}), a folder with `metadata.csv` (columns
`file_name` and `text`, optional `lang`), or (`--dataset NAME`) a `datasets` dataset with
`image` and `text` columns. `--eval-data` names held-out data of the same form: BLEU and chrF
(sacrebleu), and for the scene world's captions object F1 and relation accuracy.

    # nlpconnect's ViT+GPT-2 onto your own captions, vision encoder frozen
    demohub finetune captioning --data my_photos --out runs/captions \\
        --model nlpconnect/vit-gpt2-image-captioning --freeze-vision

    # the embedded captioner, from scratch (about 40 minutes on 2 busy CPU cores)
    demohub data synth --out data/scenes-train --n 10000 --seed 0
    demohub data synth --out data/scenes-test --n 300 --seed 1
    demohub finetune captioning --data data/scenes-train/text.jsonl --eval-data data/scenes-test/text.jsonl \\
        --out models/captioning/scenes-captioner --model apps/captioning/scenes_recipe --from-scratch

Where the data has the scene world's segmentation masks (`masks/` beside `images/`), the vision
encoder also learns which digit each patch shows (`--mask-loss-weight`, a linear head dropped
after training): the caption loss alone teaches counting long before digit identity.
Features: AdamW with warm-up and cosine decay, early stopping on validation loss, checkpoints
each epoch (`--resume`), mixed precision on GPU, a progress bar, metrics.json, a model card and
`--push-to-hub REPO`.
"""

from __future__ import annotations

import csv
import json
import math
import shlex
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import sacrebleu
import torch
from PIL import Image
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoProcessor,
    AutoTokenizer,
    EarlyStoppingCallback,
    GenerationConfig,
    PreTrainedTokenizerFast,
    Seq2SeqTrainer,
    Seq2SeqTrainingArguments,
    TrOCRProcessor,
    VisionEncoderDecoderModel,
    ViTImageProcessor,
    set_seed,
)

from shared import training
from shared.data import scenes
from shared.errors import UserError
from shared.inference.pipelines import question_prompt
from shared.models import loader, registry

TASK = "captioning"
LANGUAGES = ("en", "de")
SPECIALS = ["<pad>", "<s>", "</s>", "<unk>", "<sep>", *(f"<{lang}>" for lang in LANGUAGES)]


@dataclass
class CaptionArguments(training.TrainingOptions):
    data: str = field(default="", metadata={"help": "JSONL file, or folder with metadata.csv."})
    dataset: str | None = field(default=None, metadata={"help": "A `datasets` dataset with image and text "
                                                                "columns instead of --data; its test split is "
                                                                "held out."})
    eval_data: str | None = field(default=None, metadata={"help": "Held-out JSONL/folder for the final scores."})
    model: str = field(default="apps/captioning/scenes_recipe",
                       metadata={"help": "Registry name, local model folder, or repo_id@40-hex-revision."})
    freeze_vision: bool = field(default=False, metadata={"help": "Train the text decoder only."})
    sincos_positions: bool = field(default=False, metadata={"help": "Add a 2-D sine-cosine code of each patch's "
                                                                    "row and column (MAE's) to the vision encoder's "
                                                                    "position embeddings, at their own scale."})
    mask_loss_weight: float = field(default=1.0, metadata={"help": "Weight of the per-patch digit loss where "
                                                                   "the data has segmentation masks (0: off)."})
    background_weight: float = field(default=0.2, metadata={"help": "Weight of background patches in the "
                                                                    "per-patch digit loss (most patches are "
                                                                    "background; the digits are what is hard)."})
    targets_per_image: int = field(default=0, metadata={"help": "Texts learned per image and step, drawn at "
                                                                "random from its captions and questions (0: all). "
                                                                "Fewer texts per step: more images per CPU minute."})
    vocab_size: int = field(default=400, metadata={"help": "--from-scratch: BPE vocabulary size."})
    max_length: int = field(default=48, metadata={"help": "Tokens per caption."})
    num_beams: int = field(default=1, metadata={"help": "Beam size of the held-out evaluation."})
    epochs: int = 12
    batch_size: int = 64
    learning_rate: float = 2e-3
    weight_decay: float = 0.01
    warmup_fraction: float = 0.05
    validation_fraction: float = 0.05
    patience: int = 3

    def check(self) -> None:
        super().check()
        if self.dataset is None and not Path(self.data).exists():
            raise UserError(f"--data {self.data!r}: no such file or folder (or give --dataset NAME).")
        if self.mask_loss_weight < 0 or self.background_weight < 0:
            raise UserError("--mask-loss-weight and --background-weight must be 0 or more.")
        if self.targets_per_image < 0:
            raise UserError("--targets-per-image must be 0 (all) or more.")


@dataclass
class Example:
    """One image with one target text (and, for VQA, its question)."""

    image: Image.Image | str
    text: str
    lang: str | None = None
    question: str | None = None
    kind: str | None = None  # question type, for VQA's per-type accuracy
    mask: str | None = None  # the scene world's segmentation mask, where there is one


def _mask_beside(image: Path) -> str | None:
    mask = image.parent.parent / "masks" / image.name
    return str(mask) if image.parent.name == "images" and mask.is_file() else None


def read_rows(path: str | Path) -> list[tuple[dict, Path]]:
    """(row, folder its image paths are relative to) from a JSONL file or a folder's metadata.csv."""
    path = Path(path)
    if path.is_dir():
        table = path / "metadata.csv"
        if not table.is_file():
            raise UserError(f"{path} has no metadata.csv (columns file_name and text).")
        with table.open(encoding="utf-8", newline="") as f:
            return [(row, path) for row in csv.DictReader(f)]
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                rows.append((json.loads(line), path.parent))
            except json.JSONDecodeError as err:
                raise UserError(f"{path}:{number}: not a JSON row ({err.msg}).") from None
    if not rows:
        raise UserError(f"{path} holds no rows.")
    return rows


def image_of(row: dict, folder: Path, where: str) -> Image.Image | str:
    image = row.get("image", row.get("file_name"))
    if image is None:
        raise UserError(f"{where}: a row has no image (column `image` or `file_name`).")
    if isinstance(image, Image.Image):
        return image
    path = folder / image
    if not path.is_file():
        raise UserError(f"{where}: image {image!r} not found beside the data.")
    return str(path)


def caption_examples(rows: list[tuple[dict, Path]], where: str) -> list[Example]:
    examples = []
    for row, folder in rows:
        image = image_of(row, folder, where)
        text = row.get("caption", row.get("text"))
        if text is None:
            raise UserError(f"{where}: a row has no caption (`caption` or `text`).")
        texts = text.items() if isinstance(text, dict) else [(row.get("lang") or None, text)]
        mask = _mask_beside(Path(image)) if isinstance(image, str) else None
        examples += [Example(image, t.strip(), lang, mask=mask) for lang, t in texts]
    return examples


def load_examples(args, to_examples) -> tuple[list[Example], list[Example] | None]:
    """(training examples, held-out examples or None) from --data/--eval-data or a `datasets` dataset."""
    if args.dataset is None:
        train = to_examples(read_rows(args.data), args.data)
        return train, to_examples(read_rows(args.eval_data), args.eval_data) if args.eval_data else None
    from datasets import load_dataset

    splits = load_dataset(args.dataset)
    rows = {name: [(dict(r), Path(".")) for r in split] for name, split in splits.items()}
    held = rows.get("test") or rows.get("validation")
    train = to_examples(rows["train"], args.dataset)
    return train, to_examples(held, args.dataset) if held else None


def patch_labels(mask_path: str, image_size: int, patch: int) -> torch.Tensor:
    """Per patch: 1 + the digit covering most of it (at least an eighth), else 0."""
    mask = Image.open(mask_path).resize((image_size, image_size), Image.Resampling.NEAREST)
    side = image_size // patch
    cells = np.asarray(mask).reshape(side, patch, side, patch).transpose(0, 2, 1, 3).reshape(side * side, -1)
    counts = np.stack([(cells == c).sum(1) for c in range(11)], axis=1)
    counts[:, 0] = 0
    label = counts.argmax(1)
    label[counts.max(1) < patch * patch / 8] = 0
    return torch.from_numpy(label).long()


def pixel_values(processor, images: list) -> torch.Tensor:
    """All images through the processor once (in chunks), so training epochs decode nothing."""
    out = []
    for i in range(0, len(images), 256):
        chunk = [Image.open(im).convert("RGB") if isinstance(im, str) else im.convert("RGB")
                 for im in images[i:i + 256]]
        out.append(processor.image_processor(chunk, return_tensors="pt")["pixel_values"])
    return torch.cat(out)


def language_token(tokenizer, lang: str | None) -> int | None:
    """The id of `<lang>` where the model's vocabulary names languages (the embedded models)."""
    if lang is None:
        return None
    token = tokenizer.convert_tokens_to_ids(f"<{lang}>")
    return None if token is None or token == tokenizer.unk_token_id else token


class ImageTextSet(torch.utils.data.Dataset):
    """One row per image with all its targets (captions in each language, or every question), so
    a batch runs the vision encoder once per image. Prompt tokens (the question) are read, not learned."""

    def __init__(self, examples: list[Example], processor, model, max_length: int, mask_patch: int | None):
        tokenizer, config = processor.tokenizer, model.config
        groups: dict = {}
        for e in examples:
            groups.setdefault(id(e.image) if not isinstance(e.image, str) else e.image, []).append(e)
        self.pixels = pixel_values(processor, [some[0].image for some in groups.values()])
        size = self.pixels.shape[-1]
        self.rows = []
        for i, some in enumerate(groups.values()):
            targets = []
            for e in some:
                prompt, target = target_ids(tokenizer, config, e, max_length)
                targets.append(([config.decoder_start_token_id, *prompt, *target[:-1]], [-100] * len(prompt) + target))
            row = {"image": i, "targets": targets}
            if mask_patch and some[0].mask:
                row["patch_labels"] = patch_labels(some[0].mask, size, mask_patch)
            self.rows.append(row)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        return self.rows[i]


def target_ids(tokenizer, config, e: Example, max_length: int) -> tuple[list[int], list[int]]:
    """(prompt ids, target ids ending with the end token): a caption's target starts with its
    language token where the vocabulary has one; a question is the prompt, then `<sep>`, and may
    take at most half of `max_length`."""
    eos = config.eos_token_id if config.eos_token_id is not None else tokenizer.eos_token_id
    prompt = question_prompt(tokenizer, e.question) if e.question is not None else []
    lang = language_token(tokenizer, e.lang) if e.question is None else None
    text = tokenizer(" " + e.text, add_special_tokens=False)["input_ids"]
    if len(prompt) > max_length // 2:  # a cut question would teach the model one nobody asks
        raise UserError(f"--max-length {max_length}: the question {e.question!r} is {len(prompt)} tokens, more "
                        f"than half of --max-length (a question's share); use --max-length {2 * len(prompt)} or more.")
    target = ([lang] if lang is not None else []) + text
    room = max_length - len(prompt) - 2
    return prompt, target[:max(room, 1)] + [eos]


def collate(pixels: torch.Tensor, pad_id: int, per_image: int = 0, seed: int = 0):
    draw = np.random.default_rng(seed)

    def some(targets: list) -> list:
        if not per_image or len(targets) <= per_image:
            return targets
        return [targets[j] for j in sorted(draw.choice(len(targets), per_image, replace=False))]

    def collate_rows(rows: list[dict]) -> dict:
        targets = [(i, ids, labels) for i, r in enumerate(rows) for ids, labels in some(r["targets"])]
        length = max(len(labels) for _, _, labels in targets)
        batch = {"pixel_values": pixels[[r["image"] for r in rows]],
                 "image_index": torch.tensor([i for i, _, _ in targets]),
                 "decoder_input_ids": torch.tensor([ids + [pad_id] * (length - len(ids)) for _, ids, _ in targets]),
                 "labels": torch.tensor([labels + [-100] * (length - len(labels)) for _, _, labels in targets])}
        batch["decoder_attention_mask"] = (torch.arange(length)[None] < torch.tensor(
            [len(labels) for _, _, labels in targets])[:, None]).long()
        if all("patch_labels" in r for r in rows):
            batch["patch_labels"] = torch.stack([r["patch_labels"] for r in rows])
        return batch

    return collate_rows


class ImageTextTrainer(Seq2SeqTrainer):
    """The model's own loss (the encoder run once per image, its output repeated per target),
    plus the per-patch digit loss on batches that have masks."""

    mask_loss_weight = 0.0
    background_weight = 1.0

    def compute_loss(self, model, inputs, return_outputs=False, **kwargs):
        patch, index = inputs.pop("patch_labels", None), inputs.pop("image_index")
        inner = self.accelerator.unwrap_model(model)  # under torchrun `model` is the DDP wrapper
        hidden = inner.get_encoder()(pixel_values=inputs.pop("pixel_values")).last_hidden_state
        outputs = model(encoder_outputs=(hidden[index],), **inputs)
        loss = outputs.loss
        head = getattr(inner, "patch_head", None)
        if patch is not None and head is not None and self.mask_loss_weight:
            logits = head(hidden[:, -patch.shape[1]:])
            weight = torch.ones(logits.shape[-1], device=logits.device)
            weight[0] = self.background_weight
            loss = loss + self.mask_loss_weight * torch.nn.functional.cross_entropy(
                logits.flatten(0, 1), patch.flatten(), weight=weight)
        return (loss, outputs) if return_outputs else loss


def train_tokenizer(texts: list[str], folder: Path, vocab_size: int, max_length: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE vocabulary of the captions (GPT-2's kind), with language tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=bpe, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>", sep_token="<sep>", model_max_length=max_length,
                                   extra_special_tokens=SPECIALS[5:])


def load_processor(folder: Path):
    """The folder's processor; a VisionEncoderDecoder without one (nlpconnect's) gets its image
    processor and tokenizer paired as TrOCR pairs them."""
    try:
        processor = AutoProcessor.from_pretrained(folder)
        if hasattr(processor, "tokenizer") and hasattr(processor, "image_processor"):
            return processor
    except (OSError, ValueError, TypeError):
        pass
    return TrOCRProcessor(image_processor=AutoImageProcessor.from_pretrained(folder),
                          tokenizer=AutoTokenizer.from_pretrained(folder))


def build(args, folder: Path, texts: list[str], scratch: Path, max_new_tokens: int):
    """(model, processor): from the folder's weights, or its config alone with a new vocabulary."""
    if not args.from_scratch:
        if not any(folder.glob("*.safetensors")):
            raise UserError(f"{folder} has no safetensors weights; add --from-scratch to train its config.")
        model = VisionEncoderDecoderModel.from_pretrained(folder, use_safetensors=True)
        processor = load_processor(folder)
        if processor.tokenizer.pad_token_id is None:  # GPT-2: batches are padded with its end token
            processor.tokenizer.pad_token = processor.tokenizer.eos_token
        return model, processor
    tokenizer = train_tokenizer(texts, scratch, args.vocab_size, args.max_length)
    config = AutoConfig.from_pretrained(folder)
    ids = dict(pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
               eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.bos_token_id)
    config.decoder.vocab_size = len(tokenizer)
    for key, value in ids.items():
        setattr(config, key, value)
        setattr(config.decoder, key, value)
    model = VisionEncoderDecoderModel(config)
    model.generation_config = GenerationConfig(**ids, max_length=args.max_length, num_beams=1)
    side = config.encoder.image_size
    image_processor = ViTImageProcessor(size={"height": side, "width": side}, image_mean=[0.5] * 3,
                                        image_std=[0.5] * 3)
    return model, TrOCRProcessor(image_processor=image_processor, tokenizer=tokenizer)


def add_sincos_positions(model) -> None:
    """Add to a ViT-style encoder's position embeddings (class token first, then a square grid) a 2-D
    sine-cosine code of each patch's row and column, MAE's, scaled to the embeddings' spread. Learned
    embeddings keep only the directions training asked about: the scene captioner's tokens told
    columns and not rows (docs/captioning/position_probe.py), so it could not learn "above"."""
    embeddings = getattr(getattr(model.get_encoder(), "embeddings", None), "position_embeddings", None)
    _, tokens, dim = embeddings.shape if embeddings is not None and embeddings.dim() == 3 else (0, 1, 0)
    patches, side = tokens - 1, math.isqrt(tokens - 1)
    if not patches or side * side != patches or dim % 4:
        raise UserError("--sincos-positions needs a ViT-style vision encoder (a class token and a square grid of "
                        "position embeddings, a width divisible by 4).")
    omega = 1.0 / 10000 ** (np.arange(dim // 4) / (dim / 4))
    rows, columns = np.meshgrid(np.arange(side), np.arange(side), indexing="ij")
    angles = [line.flatten()[:, None].astype(float) * omega for line in (rows, columns)]
    code = torch.tensor(np.concatenate([np.sin(angles[0]), np.cos(angles[0]), np.sin(angles[1]), np.cos(angles[1])],
                                       axis=1))
    with torch.no_grad():
        grid = embeddings[0, 1:]
        grid += (grid.std().item() or 0.02) * code.float() / code.std()


def freeze_vision(model) -> None:
    for parameter in model.get_encoder().parameters():
        parameter.requires_grad = False


def object_scores(hypotheses: list[str], references: list[str], langs: list[str | None]) -> dict[str, float]:
    """The scene world's captions parsed back into (colour, digit) pairs: F1 over all captions
    (pairs as multisets), and on two-digit captions whether the caption states the relation
    right (either digit may come first)."""
    true_positive = predicted = actual = 0
    relations = []
    for hyp, ref, lang in zip(hypotheses, references, langs, strict=True):
        lang = lang or "en"
        hyp_pairs, ref_pairs = scenes.parse_objects(hyp, lang), scenes.parse_objects(ref, lang)
        true_positive += sum((Counter(hyp_pairs) & Counter(ref_pairs)).values())
        predicted, actual = predicted + len(hyp_pairs), actual + len(ref_pairs)
        if len(ref_pairs) == 2 and scenes.parse_relation(ref, lang):
            relations.append(scenes.same_relation(hyp, ref, lang))
    if not actual:
        return {}
    precision, recall = true_positive / max(predicted, 1), true_positive / actual
    scores = {"object_f1": 2 * precision * recall / max(precision + recall, 1e-9)}
    if relations:
        scores.update({"relation_correct": float(np.mean(relations)), "relation_captions": len(relations)})
    return scores


@torch.inference_mode()
def generate_texts(model, processor, pixels: torch.Tensor, prompts: list[list[int]] | None = None,
                   batch_size: int = 64, **generate_kwargs) -> list[str]:
    """Greedy or beam-search texts for `pixels`; with `prompts`, what follows each prompt."""
    model.eval()
    device = next(model.parameters()).device
    if prompts is not None:  # prompts of one length go together, as generate() takes them
        texts = [""] * len(prompts)
        by_length: dict[int, list[int]] = {}
        for i, prompt in enumerate(prompts):
            by_length.setdefault(len(prompt), []).append(i)
        for rows in by_length.values():
            for i in range(0, len(rows), batch_size):
                chunk = rows[i:i + batch_size]
                start = torch.tensor([[model.config.decoder_start_token_id, *prompts[j]] for j in chunk])
                out = model.generate(pixel_values=pixels[chunk].to(device), decoder_input_ids=start.to(device),
                                     **generate_kwargs)
                for j, row in zip(chunk, out[:, start.shape[1]:], strict=True):
                    texts[j] = processor.tokenizer.decode(row, skip_special_tokens=True)
        return [t.strip() for t in texts]
    texts = []
    for i in range(0, len(pixels), batch_size):
        out = model.generate(pixel_values=pixels[i:i + batch_size].to(device), **generate_kwargs)
        texts += processor.tokenizer.batch_decode(out, skip_special_tokens=True)
    return [t.strip() for t in texts]


def evaluate_captions(model, processor, examples: list[Example], num_beams: int, max_length: int) -> dict:
    """BLEU, chrF (sacrebleu) and object scores per language, each caption generated in its language."""
    metrics = {}
    for lang in sorted({e.lang for e in examples}, key=str):
        some = [e for e in examples if e.lang == lang]
        pixels = pixel_values(processor, [e.image for e in some])
        token = language_token(processor.tokenizer, lang)
        forced = {"forced_bos_token_id": token} if token is not None else {}
        hypotheses = generate_texts(model, processor, pixels, num_beams=num_beams, max_length=max_length, **forced)
        references = [e.text for e in some]
        key = f"test_{lang}" if lang else "test"
        metrics.update({f"{key}_captions": len(some),
                        f"{key}_bleu": sacrebleu.corpus_bleu(hypotheses, [references]).score,
                        f"{key}_chrf": sacrebleu.corpus_chrf(hypotheses, [references]).score})
        metrics.update({f"{key}_{name}": v for name, v in object_scores(hypotheses, references,
                                                                        [lang] * len(some)).items()})
        metrics[f"{key}_example"] = f"{references[0]} -> {hypotheses[0]}"
    return metrics


def run(args, argv: list[str], examples_of, evaluate, card, task: str) -> dict:
    """The shared loop of captioning and VQA: build, train with early stopping, evaluate, save."""
    set_seed(args.seed)
    folder = loader.model_folder(registry.resolve(task, args.model or None)) if not Path(
        args.model).is_dir() else Path(args.model)
    examples, held_out = load_examples(args, examples_of)
    images = sorted({e.image for e in examples if isinstance(e.image, str)})
    order = np.random.default_rng(args.seed).permutation(len(images))
    validation_images = {images[i] for i in order[:max(1, int(len(images) * args.validation_fraction))]}
    train = [e for e in examples if e.image not in validation_images]
    validation = [e for e in examples if e.image in validation_images] or train[:max(1, len(train) // 10)]

    with tempfile.TemporaryDirectory() as scratch:
        texts = [t for e in train for t in (e.text, e.question) if t]
        model, processor = build(args, folder, texts, Path(scratch), args.max_length)
        if args.sincos_positions:
            add_sincos_positions(model)
        if args.freeze_vision:
            freeze_vision(model)
        pooler = getattr(model.get_encoder(), "pooler", None)
        if pooler is not None:  # the decoder reads the encoder's tokens, never its pooled output: under
            pooler.requires_grad_(False)  # torchrun a parameter that never gets a gradient stops DDP
        encoder = model.config.encoder
        # the digit head only where every training image has a mask: under torchrun every
        # parameter must get a gradient at every step
        has_masks = all(e.mask for e in train)
        mask_patch = getattr(encoder, "patch_size", None) if args.mask_loss_weight and has_masks else None
        if mask_patch:
            model.patch_head = torch.nn.Linear(encoder.hidden_size, 11)
        train_set = ImageTextSet(train, processor, model, args.max_length, mask_patch)
        validation_set = ImageTextSet(validation, processor, model, args.max_length, mask_patch)
        ImageTextTrainer.mask_loss_weight = args.mask_loss_weight
        ImageTextTrainer.background_weight = args.background_weight
        pad = model.config.pad_token_id if model.config.pad_token_id is not None else processor.tokenizer.pad_token_id
        trainer = ImageTextTrainer(
            model=model, processing_class=processor.tokenizer,
            args=training.trainer_arguments(args, len(train_set), "loss", Seq2SeqTrainingArguments,
                                            label_names=["labels"], logging_strategy="steps", logging_steps=50,
                                            # the encoder runs outside the DDP wrapper (once per image, see
                                            # compute_loss), so DDP must not look for unused parameters
                                            ddp_find_unused_parameters=False),
            train_dataset=train_set, eval_dataset=validation_set,
            callbacks=[EarlyStoppingCallback(early_stopping_patience=args.patience)])
        collate_train = collate(train_set.pixels, pad, args.targets_per_image, args.seed)
        collate_validation = collate(validation_set.pixels, pad)
        trainer.get_train_dataloader = _loader(trainer, train_set, collate_train, shuffle=True)
        trainer.get_eval_dataloader = lambda eval_dataset=None: _loader(
            trainer, validation_set, collate_validation, shuffle=False)()
        result = trainer.train(resume_from_checkpoint=True if args.resume else None)
        training.reload_best(trainer, VisionEncoderDecoderModel)
        model = trainer.model
        if hasattr(model, "patch_head"):
            del model.patch_head
        metrics = {"train_loss": result.training_loss, "epochs_run": trainer.state.epoch,
                   "train_examples": len(train), "train_images": len(images) - len(validation_images),
                   "parameters": sum(p.numel() for p in model.parameters())}
        metrics.update(trainer.evaluate(metric_key_prefix="eval"))
        if held_out and trainer.is_world_process_zero():  # the others would only repeat it
            metrics.update(evaluate(model, processor, held_out, args))
        metrics = training.rounded(metrics)
        trainer.model = model
        training.save(trainer, processor, args, metrics, card(Path(args.out), args, metrics, argv))
        if trainer.is_world_process_zero():
            write_answers(Path(args.out), train)
    return metrics


def write_answers(out: Path, examples: list[Example], limit: int = 200) -> None:
    """The training answers, most common first: the candidates the VQA app scores for its top-k."""
    answers = Counter(e.text for e in examples if e.question is not None)
    if answers:
        ranked = [a for a, _ in answers.most_common(limit)]
        (out / "answers.json").write_text(json.dumps(ranked, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")


def _loader(trainer, dataset, collate_fn, shuffle: bool):
    """Batches of whole images (a row holds all of an image's texts); under torchrun each process
    takes its share of them (accelerate shards the loader, as the Trainer does its own)."""
    def make(*_args, **_kwargs):
        generator = torch.Generator().manual_seed(trainer.args.seed + int(trainer.state.epoch or 0))
        batches = torch.utils.data.DataLoader(dataset, batch_size=trainer.args.per_device_train_batch_size,
                                              shuffle=shuffle, collate_fn=collate_fn, generator=generator)
        return trainer.accelerator.prepare(batches) if trainer.args.world_size > 1 else batches

    return make


def model_card(out: Path, args, metrics: dict, argv: list[str], task: str = TASK) -> str:
    """The card; `task` names the script that trained it (VQA's --with-captions writes this card too)."""
    origin = f"`{args.model}`" + (" (architecture only, trained from scratch)" if args.from_scratch else "")
    lines = [f"# {out.name}", "", f"Captioning model trained by `apps/{task}/finetune.py` from {origin}",
             f"on `{args.data or args.dataset}`.", ""]
    for lang in (*LANGUAGES, None):
        key = f"test_{lang}" if lang else "test"
        if f"{key}_bleu" in metrics:
            line = (f"- {lang or 'captions'}, held-out `{args.eval_data or 'test split'}` "
                    f"({metrics[f'{key}_captions']} "
                    f"captions, beam {args.num_beams}): **BLEU {metrics[f'{key}_bleu']:.2f}**, chrF "
                    f"{metrics[f'{key}_chrf']:.2f}")
            if f"{key}_object_f1" in metrics:
                line += f", object F1 **{metrics[f'{key}_object_f1']:.3f}**"
            if f"{key}_relation_correct" in metrics:
                line += (f", relation correct **{metrics[f'{key}_relation_correct']:.3f}** "
                         f"({metrics[f'{key}_relation_captions']} two-digit captions)")
            lines.append(line)
    lines += [f"- Validation loss: {metrics['eval_loss']:.4f}",
              "- All metrics: `metrics.json`; arguments: `finetune_args.json`", "",
              "Rebuild:", "", "```", f"demohub finetune {task} " + shlex.join(argv), "```", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    args = training.parse(argv, CaptionArguments, f"demohub finetune {TASK}", __doc__)
    return run(args, argv, caption_examples, lambda m, p, held, a: evaluate_captions(
        m, p, held, a.num_beams, a.max_length), model_card, TASK)


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
