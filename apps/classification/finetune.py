"""Transfer learning for image classification: any Hub or local classifier onto your images.

Data: an image folder with one subfolder per class (`--data DIR`; `train/` plus `validation/`
or `test/` subfolders are used as those splits), or a `datasets` dataset (`--dataset NAME`).
Without a validation split, 10% of train (stratified) becomes one.

    # linear probe (frozen backbone) from the embedded model, then full fine-tuning from a Hub model
    demohub finetune classification --data my_photos --out runs/probe --freeze-backbone
    demohub finetune classification --data my_photos --out runs/vit --model google/vit-base-patch16-224

    # the embedded digits model, from scratch, reading digits as users draw them (see its model card)
    demohub data digits --out data/digits
    demohub finetune classification --data data/digits --out models/classification/digits-convnext \
        --model apps/classification/digits_recipe --from-scratch --epochs 80 --learning-rate 3e-3 \
        --batch-size 64 --ink-augment true

`--ink-augment` trains a reader of drawn ink (digits, letters): random polarity, shift, scale,
rotation, stroke width, blur and noise; the validation split gets the same augmentations (drawn
once, with the seed, so every epoch sees the same set), and the test split is also measured as
users send it (inverted, shifted by 1/8 of the side: `shared.data.digits.accuracy_as_users_draw`).

Features: AdamW with linear warm-up and cosine decay, early stopping on validation loss
(`--stop-on accuracy` for the old behaviour; accuracy saturates on small validation sets),
seeded weights, augmentations and data order,
checkpoints each epoch (`--resume` continues), mixed precision on GPU, a progress bar,
metrics in `metrics.json`, a model card, and `--push-to-hub REPO`. The output folder loads
in the app and the CLI like any other model (`--model DIR`, `demohub serve --add-model`).
"""

from __future__ import annotations

import json
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from datasets import DatasetDict, load_dataset
from PIL import ImageFilter
from torchvision.transforms import v2
from transformers import (
    AutoImageProcessor,
    AutoModelForImageClassification,
    EarlyStoppingCallback,
    Trainer,
    set_seed,
)

from shared import training
from shared.data import digits
from shared.errors import UserError
from shared.models import loader, registry


@dataclass
class FinetuneArguments(training.TrainingOptions):
    data: str | None = field(default=None, metadata={"help": "Image folder: one subfolder per class."})
    dataset: str | None = field(default=None, metadata={"help": "A `datasets` dataset name or path instead."})
    image_column: str = "image"
    label_column: str = "label"
    model: str = field(default="digits-convnext",
                       metadata={"help": "Registry name, local model folder, or repo_id@40-hex-revision."})
    batch_size: int = 32
    augment: bool = field(default=True, metadata={"help": "Random resized crops and colour jitter."})
    hflip: bool = field(default=False, metadata={"help": "Also flip horizontally (not for digits or text)."})
    ink_augment: bool = field(default=False, metadata={
        "help": "Augment as drawn ink, dark on light (digits, letters): polarity, shift, scale, rotation, stroke "
                "width, blur, noise; validation gets the same augmentations, drawn once."})
    validation_copies: int = field(default=4, metadata={"help": "With --ink-augment: augmented copies of each "
                                                                "validation image."})
    stop_on: str = field(default="loss", metadata={
        "help": "Validation signal for early stopping and the best checkpoint: loss or accuracy.",
        "choices": ["loss", "accuracy"]})

    def check(self) -> None:
        super().check()
        if self.validation_copies < 1:
            raise UserError("--validation-copies must be at least 1.")
        if (self.data is None) == (self.dataset is None):
            raise UserError("Give exactly one of --data DIR or --dataset NAME.")
        if self.data is not None and not Path(self.data).is_dir():
            raise UserError(f"--data {self.data}: no such folder.")


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


class StrokeWidth:
    """Thicker or thinner ink, or neither (a third each): a 3x3 min or max filter is the
    morphological dilation or erosion of dark strokes."""

    def __call__(self, image):
        choice = int(torch.randint(3, ()))
        return image if choice == 0 else image.filter(ImageFilter.MinFilter(3) if choice == 1 else
                                                      ImageFilter.MaxFilter(3))


def ink_steps(side: int) -> list:
    """A drawn digit as users send it: any stroke width, off-centre by up to 1/8 of the side and a
    little more, larger or smaller, tilted a few degrees, soft or noisy, either ink polarity."""
    return [
        v2.Resize((side, side)), StrokeWidth(),
        v2.RandomAffine(degrees=8, translate=(0.15, 0.15), scale=(0.85, 1.1), fill=255),
        v2.RandomApply([v2.GaussianBlur(3, sigma=(0.3, 1.0))], p=0.2),
        v2.PILToTensor(), v2.ToDtype(torch.float32, scale=True),
        v2.RandomInvert(p=0.5), v2.RandomApply([v2.GaussianNoise(sigma=0.05)], p=0.2),
    ]


def train_transform(processor, args: FinetuneArguments) -> v2.Compose:
    side = image_side(processor)
    steps = [v2.RandomResizedCrop(side, scale=(0.7, 1.0), ratio=(0.9, 1.1)), v2.ColorJitter(0.3, 0.3, 0.3)]
    if args.hflip:
        steps.append(v2.RandomHorizontalFlip())
    if args.ink_augment:
        return v2.Compose([*ink_steps(side), v2.Normalize(processor.image_mean, processor.image_std)])
    return v2.Compose([
        *(steps if args.augment else [v2.Resize((side, side))]),
        v2.PILToTensor(), v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(processor.image_mean, processor.image_std),
    ])


def augmented_copies(split, augment, copies: int, seed: int) -> list[dict]:
    """`copies` augmented versions of each image, drawn once with `seed`: a validation set as hard
    as training, the same every epoch and every run."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return [{"pixel_values": augment(row["image"].convert("RGB")), "label": row["label"]}
                for _ in range(copies) for row in split]


def predictor(model, processor):
    """RGB images -> predicted class indices, for `shared.data.digits.accuracy_as_users_draw`."""
    device = next(model.parameters()).device

    @torch.inference_mode()
    def predict(images):
        pixels = processor(images=images, return_tensors="pt")["pixel_values"].to(device)
        return model.eval()(pixel_values=pixels.to(model.dtype)).logits.argmax(-1).tolist()
    return predict


def collate(batch: list[dict]) -> dict[str, torch.Tensor]:
    return {"pixel_values": torch.stack([row["pixel_values"] for row in batch]),
            "labels": torch.tensor([row["label"] for row in batch])}


def accuracy(prediction) -> dict[str, float]:
    return {"accuracy": float((np.argmax(prediction.predictions, axis=-1) == prediction.label_ids).mean())}


USER_SETS = ("dark_on_white", "white_on_black", "shifted", "shifted_white_on_black")


def model_card(out: Path, args: FinetuneArguments, metrics: dict, labels: list[str], argv: list[str]) -> str:
    split_name, key = ("test", "test_accuracy") if "test_accuracy" in metrics else ("validation", "eval_accuracy")
    origin = f"`{args.model}`" + (" (architecture only, trained from scratch)" if args.from_scratch else "")
    return "\n".join([
        f"# {out.name}", "",
        f"Image classifier trained by `apps/classification/finetune.py` from {origin}",
        f"on `{args.data or args.dataset}`.", "",
        f"- Labels ({len(labels)}): {', '.join(labels)}",
        f"- Held-out accuracy ({split_name} split): **{metrics[key]:.4f}**",
        *[f"- Held-out accuracy, {name.replace('_', ' ')}: **{metrics[f'test_accuracy_{name}']:.4f}**"
          for name in USER_SETS if f"test_accuracy_{name}" in metrics],
        "- All metrics: `metrics.json`; arguments: `finetune_args.json`", "",
        "Rebuild:", "", "```", "demohub finetune classification " + shlex.join(argv), "```", "",
    ])


def parse(argv: list[str], arguments_class=FinetuneArguments, prog: str = "demohub finetune classification",
          description: str = __doc__):
    return training.parse(argv, arguments_class, prog, description)


def train(args: FinetuneArguments, trainer_class=Trainer):
    """Fine-tune as `args` say; returns the trainer (its model the best one), processor, splits, metrics."""
    set_seed(args.seed)
    folder = loader.model_folder(registry.resolve("classification", args.model))
    processor = AutoImageProcessor.from_pretrained(folder)
    splits = load_splits(args)
    labels = splits["train"].features["label"].names
    model = training.build_model(AutoModelForImageClassification, folder, dict(enumerate(labels)), args.from_scratch)
    if args.freeze_backbone:
        training.freeze_backbone(model)

    augment = train_transform(processor, args)
    validation = (augmented_copies(splits["validation"], augment, args.validation_copies, args.seed)
                  if args.ink_augment else splits["validation"])
    splits["train"].set_transform(lambda b: {"pixel_values": [augment(im.convert("RGB")) for im in b["image"]],
                                             "label": b["label"]})
    for name in splits.keys() - {"train"}:
        splits[name].set_transform(lambda b: {
            "pixel_values": list(processor(images=[im.convert("RGB") for im in b["image"]],
                                           return_tensors="pt")["pixel_values"]),
            "label": b["label"]})

    trainer = trainer_class(model=model, args=training.trainer_arguments(args, len(splits["train"]), args.stop_on),
                            train_dataset=splits["train"],
                            eval_dataset=validation, data_collator=collate, compute_metrics=accuracy,
                            callbacks=[EarlyStoppingCallback(early_stopping_patience=args.patience)])
    train_result = trainer.train(resume_from_checkpoint=True if args.resume else None)

    metrics = {"train_loss": train_result.training_loss, "epochs_run": trainer.state.epoch}
    metrics.update(trainer.evaluate(validation, metric_key_prefix="eval"))
    if "test" in splits:
        metrics.update(trainer.evaluate(splits["test"], metric_key_prefix="test"))
        if args.ink_augment:
            test = splits["test"].with_format(None)
            seen = digits.accuracy_as_users_draw(predictor(trainer.model, processor), test["image"], test["label"])
            metrics.update({f"test_accuracy_{name}": value for name, value in seen.items()})
    return trainer, processor, splits, training.rounded(metrics)


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    args = parse(argv)
    trainer, processor, splits, metrics = train(args)
    labels = splits["train"].features["label"].names
    training.save(trainer, processor, args, metrics, model_card(Path(args.out), args, metrics, labels, argv))
    return metrics


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
