"""Transfer learning for image classification: any Hub or local classifier onto your images.

Data: an image folder with one subfolder per class (`--data DIR`; `train/` plus `validation/`
or `test/` subfolders are used as those splits), or a `datasets` dataset (`--dataset NAME`).
Without a validation split, 10% of train (stratified) becomes one.

    # linear probe (frozen backbone) from the embedded model, then full fine-tuning from a Hub model
    demohub finetune classification --data my_photos --out runs/probe --freeze-backbone
    demohub finetune classification --data my_photos --out runs/vit --model google/vit-base-patch16-224

    # the embedded digits model, from scratch (held-out accuracy 0.99; see its model card)
    demohub data digits --out data/digits
    demohub finetune classification --data data/digits --out models/classification/digits-convnext \
        --model apps/classification/digits_recipe --from-scratch --epochs 40 --learning-rate 3e-3

Features: AdamW with linear warm-up and cosine decay, early stopping on validation accuracy,
checkpoints each epoch (`--resume` continues), mixed precision on GPU, a progress bar,
metrics in `metrics.json`, a model card, and `--push-to-hub REPO`. The output folder loads
in the app and the CLI like any other model (`--model DIR`, `demohub serve --add-model`).
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import shutil
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from datasets import DatasetDict, load_dataset
from torchvision.transforms import v2
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModelForImageClassification,
    EarlyStoppingCallback,
    HfArgumentParser,
    Trainer,
    TrainingArguments,
    set_seed,
)

from shared import loader, registry
from shared.errors import UserError


@dataclass
class FinetuneArguments:
    out: str = field(metadata={"help": "Folder for the fine-tuned model, its card and metrics.json."})
    data: str | None = field(default=None, metadata={"help": "Image folder: one subfolder per class."})
    dataset: str | None = field(default=None, metadata={"help": "A `datasets` dataset name or path instead."})
    image_column: str = "image"
    label_column: str = "label"
    model: str = field(default="digits-convnext",
                       metadata={"help": "Registry name, local model folder, or repo_id@40-hex-revision."})
    from_scratch: bool = field(default=False, metadata={"help": "Initialise weights from the config only."})
    freeze_backbone: bool = field(default=False, metadata={"help": "Linear probe: train the head only."})
    epochs: int = 10
    batch_size: int = 32
    learning_rate: float = 5e-4
    weight_decay: float = 0.05
    warmup_fraction: float = 0.1
    patience: int = field(default=5, metadata={"help": "Epochs without better validation accuracy before stopping."})
    validation_fraction: float = 0.1
    augment: bool = field(default=True, metadata={"help": "Random resized crops and colour jitter."})
    hflip: bool = field(default=False, metadata={"help": "Also flip horizontally (not for digits or text)."})
    seed: int = 0
    resume: bool = field(default=False, metadata={"help": "Continue from the last checkpoint in OUT/checkpoints."})
    keep_checkpoints: bool = False
    push_to_hub: str | None = field(default=None, metadata={"help": "Hub repo id to push the result to."})

    def __post_init__(self):
        if (self.data is None) == (self.dataset is None):
            raise UserError("Give exactly one of --data DIR or --dataset NAME.")
        if self.data is not None and not Path(self.data).is_dir():
            raise UserError(f"--data {self.data}: no such folder.")
        if self.epochs < 1 or self.batch_size < 1 or self.learning_rate <= 0:
            raise UserError("--epochs and --batch-size must be at least 1 and --learning-rate positive.")
        if not 0 < self.validation_fraction < 1:
            raise UserError("--validation-fraction must be between 0 and 1.")


def load_splits(args: FinetuneArguments) -> DatasetDict:
    if args.data:
        splits = load_dataset("imagefolder", data_dir=args.data)
    else:
        splits = load_dataset(args.dataset)
    splits = splits.rename_columns({args.image_column: "image", args.label_column: "label"})
    if "validation" not in splits:
        held_out = splits["train"].train_test_split(
            test_size=args.validation_fraction, stratify_by_column="label", seed=args.seed)
        splits["train"], splits["validation"] = held_out["train"], held_out["test"]
    return splits


def image_side(processor) -> int:
    size = getattr(processor, "crop_size", None) or processor.size
    return size.get("height") or size.get("shortest_edge")


def train_transform(processor, args: FinetuneArguments) -> v2.Compose:
    side = image_side(processor)
    steps = [v2.RandomResizedCrop(side, scale=(0.7, 1.0), ratio=(0.9, 1.1)), v2.ColorJitter(0.3, 0.3, 0.3)]
    if args.hflip:
        steps.append(v2.RandomHorizontalFlip())
    return v2.Compose([
        *(steps if args.augment else [v2.Resize((side, side))]),
        v2.PILToTensor(), v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(processor.image_mean, processor.image_std),
    ])


def build_model(folder: Path, labels: list[str], args: FinetuneArguments):
    id2label = dict(enumerate(labels))
    label2id = {label: i for i, label in id2label.items()}
    if args.from_scratch:
        config = AutoConfig.from_pretrained(folder, id2label=id2label, label2id=label2id)
        return AutoModelForImageClassification.from_config(config)
    if not any(folder.glob("*.safetensors")):
        raise UserError(f"{folder} has no safetensors weights; add --from-scratch to train its config from scratch.")
    return AutoModelForImageClassification.from_pretrained(
        folder, id2label=id2label, label2id=label2id,
        ignore_mismatched_sizes=True, use_safetensors=True)


def freeze_backbone(model) -> None:
    for parameter in getattr(model, model.base_model_prefix).parameters():
        parameter.requires_grad = False


def collate(batch: list[dict]) -> dict[str, torch.Tensor]:
    return {"pixel_values": torch.stack([row["pixel_values"] for row in batch]),
            "labels": torch.tensor([row["label"] for row in batch])}


def accuracy(prediction) -> dict[str, float]:
    return {"accuracy": float((np.argmax(prediction.predictions, axis=-1) == prediction.label_ids).mean())}


def model_card(out: Path, args: FinetuneArguments, metrics: dict, labels: list[str], argv: list[str]) -> str:
    split_name, key = ("test", "test_accuracy") if "test_accuracy" in metrics else ("validation", "eval_accuracy")
    origin = f"`{args.model}`" + (" (architecture only, trained from scratch)" if args.from_scratch else "")
    return "\n".join([
        f"# {out.name}", "",
        f"Image classifier trained by `apps/classification/finetune.py` from {origin}",
        f"on `{args.data or args.dataset}`.", "",
        f"- Labels ({len(labels)}): {', '.join(labels)}",
        f"- Held-out accuracy ({split_name} split): **{metrics[key]:.4f}**",
        "- All metrics: `metrics.json`; arguments: `finetune_args.json`", "",
        "Rebuild:", "", "```", "demohub finetune classification " + shlex.join(argv), "```", "",
    ])


def parse(argv: list[str], arguments_class=FinetuneArguments, prog: str = "demohub finetune classification",
          description: str = __doc__):
    parser = HfArgumentParser(arguments_class, prog=prog, description=description,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    (args,) = parser.parse_args_into_dataclasses(args=argv)
    return args


def train(args: FinetuneArguments, trainer_class=Trainer):
    """Fine-tune as `args` say; returns the trainer (its model the best one), processor, splits, metrics."""
    set_seed(args.seed)
    folder = loader.model_folder(registry.resolve("classification", args.model))
    processor = AutoImageProcessor.from_pretrained(folder)
    splits = load_splits(args)
    model = build_model(folder, splits["train"].features["label"].names, args)
    if args.freeze_backbone:
        freeze_backbone(model)

    augment = train_transform(processor, args)
    splits["train"].set_transform(lambda b: {"pixel_values": [augment(im.convert("RGB")) for im in b["image"]],
                                             "label": b["label"]})
    for name in splits.keys() - {"train"}:
        splits[name].set_transform(lambda b: {
            "pixel_values": list(processor(images=[im.convert("RGB") for im in b["image"]],
                                           return_tensors="pt")["pixel_values"]),
            "label": b["label"]})

    steps = args.epochs * math.ceil(len(splits["train"]) / args.batch_size)
    cuda = torch.cuda.is_available()
    training_args = TrainingArguments(
        output_dir=str(Path(args.out) / "checkpoints"), num_train_epochs=args.epochs,
        per_device_train_batch_size=args.batch_size, per_device_eval_batch_size=args.batch_size,
        learning_rate=args.learning_rate, weight_decay=args.weight_decay, lr_scheduler_type="cosine",
        warmup_steps=int(args.warmup_fraction * steps), eval_strategy="epoch", save_strategy="epoch",
        logging_strategy="epoch", load_best_model_at_end=True, metric_for_best_model="accuracy",
        save_total_limit=2, seed=args.seed, remove_unused_columns=False, report_to=[],
        bf16=cuda and torch.cuda.is_bf16_supported(), fp16=cuda and not torch.cuda.is_bf16_supported(),
        dataloader_num_workers=0, dataloader_pin_memory=cuda,
        push_to_hub=bool(args.push_to_hub), hub_model_id=args.push_to_hub,
    )
    trainer = trainer_class(model=model, args=training_args, train_dataset=splits["train"],
                            eval_dataset=splits["validation"], data_collator=collate, compute_metrics=accuracy,
                            callbacks=[EarlyStoppingCallback(early_stopping_patience=args.patience)])
    train_result = trainer.train(resume_from_checkpoint=True if args.resume else None)

    metrics = {"train_loss": train_result.training_loss, "epochs_run": trainer.state.epoch}
    metrics.update(trainer.evaluate(splits["validation"], metric_key_prefix="eval"))
    if "test" in splits:
        metrics.update(trainer.evaluate(splits["test"], metric_key_prefix="test"))
    metrics = {k: round(v, 6) if isinstance(v, float) else v for k, v in metrics.items()}
    return trainer, processor, splits, metrics


def save(trainer, processor, args: FinetuneArguments, metrics: dict, card: str) -> None:
    """The model, processor, metrics, arguments and card into args.out; then push and tidy up."""
    out = Path(args.out)
    trainer.save_model(str(out))
    processor.save_pretrained(out)
    (out / "training_args.bin").unlink(missing_ok=True)  # a pickle; finetune_args.json says the same
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    (out / "finetune_args.json").write_text(json.dumps(asdict(args), indent=2) + "\n")
    (out / "README.md").write_text(card)
    if args.push_to_hub:
        trainer.push_to_hub()
    if not args.keep_checkpoints:
        shutil.rmtree(out / "checkpoints", ignore_errors=True)


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    args = parse(argv)
    trainer, processor, splits, metrics = train(args)
    labels = splits["train"].features["label"].names
    save(trainer, processor, args, metrics, model_card(Path(args.out), args, metrics, labels, argv))
    return metrics


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
