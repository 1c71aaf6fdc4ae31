"""Transfer learning for semantic segmentation: any Hub or local segmenter onto image/mask folders.

A folder holds `images/`, `masks/` (class ids, same file names) and `labels.json`; `--eval-data`
names a held-out folder of the same form. Augmentation moves masks with images
(torchvision.transforms.v2 with tv_tensors); mean IoU (torchmetrics) on validation drives
early stopping, and is measured on the held-out folder at the end.

    # the embedded segmenter (held-out mIoU 0.81-0.83 on four seeds, its card): from scratch at
    # 128 px on 3,000 scenes, then fine-tuned at 256 px on 20,000
    demohub data synth --out data/scenes-train-3k --n 3000 --seed 0
    demohub data synth --out data/scenes-train --n 20000 --seed 0
    demohub data synth --out data/scenes-test --n 300 --seed 1
    demohub finetune segmentation --data data/scenes-train-3k --eval-data data/scenes-test \\
        --out runs/digits-upernet-128 --model apps/segmentation/digits_recipe --from-scratch \\
        --epochs 20 --batch-size 16 --learning-rate 2e-3 --weight-decay 0.05 --patience 5 --balance-classes
    demohub finetune segmentation --data data/scenes-train --eval-data data/scenes-test \\
        --out models/segmentation/digits-upernet --model runs/digits-upernet-128 --image-size 256 \\
        --epochs 2 --batch-size 16 --learning-rate 5e-4 --warmup-fraction 0.05 --validation-fraction 0.025 \\
        --balance-classes
"""

from __future__ import annotations

import functools
import json
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from datasets import load_dataset
from transformers import (
    AutoImageProcessor,
    AutoModelForSemanticSegmentation,
    EarlyStoppingCallback,
    Trainer,
    set_seed,
)

from apps.segmentation import task
from apps.segmentation.data import MaskFolder, MaskPairs, MaskRows, train_transform
from shared import training
from shared.errors import UserError
from shared.models import loader, registry


@dataclass
class SegmentationArguments(training.TrainingOptions):
    data: str = field(default="", metadata={"help": "Folder with images/, masks/ and labels.json."})
    eval_data: str | None = field(default=None, metadata={"help": "A held-out folder for the final mIoU."})
    dataset: str | None = field(default=None, metadata={"help": "A `datasets` dataset instead of --data; its "
                                                                "test (or validation) split is the held-out one."})
    image_column: str = "image"
    mask_column: str = "mask"
    labels: str | None = field(default=None, metadata={"help": "With --dataset: a labels.json naming mask ids."})
    balance_classes: bool = field(default=False, metadata={"help": "Weight the loss by 1/sqrt(class frequency): "
                                                                    "for small objects on a large background."})
    image_size: int | None = field(default=None, metadata={"help": "Side in px the processor resizes images to "
                                                                   "(default: the model's own); saved with the model."})

    def check(self) -> None:
        super().check()
        if self.dataset:
            if not self.labels or not Path(self.labels).is_file():
                raise UserError("--dataset needs --labels FILE: a JSON object naming the mask ids.")
        elif not self.data or not Path(self.data).is_dir():
            raise UserError(f"--data {self.data!r}: no such folder (or give --dataset NAME).")
        if self.image_size is not None and (self.image_size < 32 or self.image_size % 32):
            raise UserError(f"--image-size {self.image_size}: give a multiple of 32 (the backbone halves it 5 times).")


def load_data(args: SegmentationArguments) -> tuple[MaskPairs, MaskPairs, MaskPairs | None]:
    """(augmented train, plain train, held-out) from a folder or a `datasets` dataset."""
    if not args.dataset:
        held_out = MaskFolder(args.eval_data) if args.eval_data else None
        return MaskFolder(args.data, train_transform()), MaskFolder(args.data), held_out
    splits = load_dataset(args.dataset)
    id2label = {int(k): v for k, v in json.loads(Path(args.labels).read_text()).items()}
    columns = dict(image_column=args.image_column, mask_column=args.mask_column)
    held_name = next((name for name in ("test", "validation") if name in splits), None)
    held_out = MaskRows(splits[held_name], id2label, **columns) if held_name else None
    return (MaskRows(splits["train"], id2label, **columns, transform=train_transform()),
            MaskRows(splits["train"], id2label, **columns), held_out)


def class_weights(dataset: MaskFolder, num_classes: int, sample: int = 300) -> torch.Tensor:
    """1/sqrt(pixel frequency) over a sample of the training masks, scaled to average 1."""
    counts = torch.zeros(num_classes)
    for index in range(min(sample, len(dataset))):
        counts += torch.bincount(torch.from_numpy(dataset.pair(index)[1].astype(np.int64)).flatten(),
                                 minlength=num_classes)[:num_classes].float()
    weights = 1 / torch.sqrt(counts.clamp(min=1) / counts.sum())
    return weights / weights.mean()


class WeightedLossTrainer(Trainer):
    """Cross-entropy with per-class weights (the models' own loss has none)."""

    def __init__(self, *args, weights: torch.Tensor, **kwargs):
        super().__init__(*args, **kwargs)
        self.weights = weights

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs["labels"]
        outputs = model(pixel_values=inputs["pixel_values"])
        logits = F.interpolate(outputs.logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)
        loss = F.cross_entropy(logits, labels, weight=self.weights.to(logits.device), ignore_index=255)
        return (loss, outputs) if return_outputs else loss


def mean_iou_metric(num_classes: int):
    def compute(evaluation) -> dict[str, float]:
        logits = torch.from_numpy(evaluation.predictions)
        labels = torch.from_numpy(evaluation.label_ids).long()
        predicted = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False).argmax(1)
        return {"mean_iou": task.mean_iou(predicted, labels, num_classes)}

    return compute


def model_card(out: Path, args: SegmentationArguments, metrics: dict, argv: list[str]) -> str:
    held = "test" if "test_mean_iou" in metrics else "eval"
    origin = f"`{args.model}`" + (" (architecture only, trained from scratch)" if args.from_scratch else "")
    return "\n".join([
        f"# {out.name}", "",
        f"Semantic segmenter trained by `apps/segmentation/finetune.py` from {origin}",
        f"on `{args.data or args.dataset}`.", "",
        f"- Held-out mean IoU ({held}: `{args.eval_data or 'validation split'}`): "
        f"**{metrics[f'{held}_mean_iou']:.4f}**",
        f"- Validation mean IoU: {metrics['eval_mean_iou']:.4f}",
        "- All metrics: `metrics.json`; arguments: `finetune_args.json`", "",
        "Rebuild:", "", "```", "demohub finetune segmentation " + shlex.join(argv), "```", "",
    ])


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    args = training.parse(argv, SegmentationArguments, "demohub finetune segmentation", __doc__)
    set_seed(args.seed)
    folder = loader.model_folder(registry.resolve(task.TASK, args.model or None))
    # A larger side than the model was trained at is a cheap gain for thin shapes: a UperNet's logits
    # are at 1/4 of its input, so at 128 px a digit's 2-px strokes fall between logit cells.
    resize = {"size": {"height": args.image_size, "width": args.image_size}} if args.image_size else {}
    processor = AutoImageProcessor.from_pretrained(folder, **resize)
    augmented, plain, held_out = load_data(args)
    order = torch.randperm(len(plain), generator=torch.Generator().manual_seed(args.seed)).tolist()
    cut = max(1, int(len(order) * args.validation_fraction))
    model = training.build_model(AutoModelForSemanticSegmentation, folder, plain.id2label, args.from_scratch)
    if args.freeze_backbone:
        training.freeze_backbone(model)

    def collate(samples: list[dict]) -> dict:
        encoded = processor(images=[s["image"] for s in samples], segmentation_maps=[s["mask"] for s in samples],
                            return_tensors="pt")
        return {"pixel_values": encoded["pixel_values"], "labels": encoded["labels"]}

    trainer_class = Trainer
    if args.balance_classes:
        trainer_class = functools.partial(WeightedLossTrainer, weights=class_weights(plain, len(plain.id2label)))
    trainer = trainer_class(
        model=model, data_collator=collate, compute_metrics=mean_iou_metric(len(plain.id2label)),
        args=training.trainer_arguments(args, len(order) - cut, "mean_iou"),
        train_dataset=torch.utils.data.Subset(augmented, sorted(order[cut:])),
        eval_dataset=torch.utils.data.Subset(plain, sorted(order[:cut])),
        callbacks=[EarlyStoppingCallback(early_stopping_patience=args.patience)])
    result = trainer.train(resume_from_checkpoint=True if args.resume else None)
    training.reload_best(trainer, AutoModelForSemanticSegmentation)

    metrics = {"train_loss": result.training_loss, "epochs_run": trainer.state.epoch}
    metrics.update(trainer.evaluate(metric_key_prefix="eval"))
    if held_out is not None:
        metrics.update(trainer.evaluate(held_out, metric_key_prefix="test"))
    metrics = training.rounded(metrics)
    training.save(trainer, processor, args, metrics, model_card(Path(args.out), args, metrics, argv))
    return metrics


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
