"""Transfer learning for object detection: any Hub or local detector onto a COCO-format folder.

A folder holds `detection.json` (COCO) and its images; `--eval-data` names a held-out folder
of the same form. The model's labels become the dataset's category names (the head is
re-initialised where they differ); boxes move with the pixels under augmentation
(torchvision.transforms.v2 with tv_tensors). Validation loss drives early stopping; mAP and
mAP@0.5 (torchmetrics) are measured on the validation split and the held-out folder.

    # the embedded detector, from scratch on synthetic scenes (held-out mAP@0.5 in its card)
    demohub data synth --out data/scenes-train --n 3000 --seed 0
    demohub data synth --out data/scenes-test --n 300 --seed 1
    demohub finetune detection --data data/scenes-train --eval-data data/scenes-test \\
        --out models/detection/digits-rtdetr --model apps/detection/digits_recipe --from-scratch --epochs 40

    # a Hub detector onto your data, backbone frozen
    demohub finetune detection --data my_coco --out runs/yolos --model hustvl/yolos-tiny --freeze-backbone
"""

from __future__ import annotations

import json
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import (
    AutoImageProcessor,
    AutoModelForObjectDetection,
    EarlyStoppingCallback,
    Trainer,
    set_seed,
)

from apps.detection import task
from apps.detection.data import CocoFolder, coco_annotations, train_transform
from shared import training
from shared.errors import UserError
from shared.models import loader, registry
from shared.models.loader import LoadedModel


@dataclass
class DetectionArguments(training.TrainingOptions):
    data: str = field(default="", metadata={"help": "COCO folder: detection.json and the images it names."})
    eval_data: str | None = field(default=None, metadata={"help": "A held-out COCO folder for the final mAP."})
    annotations: str = "detection.json"

    def check(self) -> None:
        super().check()
        if not self.data or not Path(self.data).is_dir():
            raise UserError(f"--data {self.data!r}: no such folder.")


def split(dataset: CocoFolder, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed)).tolist()
    cut = max(1, int(len(order) * fraction))
    return sorted(order[cut:]), sorted(order[:cut])


def model_card(out: Path, args: DetectionArguments, metrics: dict, argv: list[str]) -> str:
    held = "test" if "test_map_50" in metrics else "validation"
    origin = f"`{args.model}`" + (" (architecture only, trained from scratch)" if args.from_scratch else "")
    return "\n".join([
        f"# {out.name}", "",
        f"Object detector trained by `apps/detection/finetune.py` from {origin} on `{args.data}`.", "",
        f"- Held-out mAP@0.5 ({held}: `{args.eval_data or 'validation split'}`): **{metrics[f'{held}_map_50']:.4f}**",
        f"- Held-out mAP@[0.5:0.95]: {metrics[f'{held}_map']:.4f}",
        f"- Validation mAP@0.5: {metrics['validation_map_50']:.4f}",
        "- All metrics: `metrics.json`; arguments: `finetune_args.json`", "",
        "Rebuild:", "", "```", "demohub finetune detection " + shlex.join(argv), "```", "",
    ])


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    args = training.parse(argv, DetectionArguments, "demohub finetune detection", __doc__)
    set_seed(args.seed)
    folder = loader.model_folder(registry.resolve(task.TASK, args.model or None))
    processor = AutoImageProcessor.from_pretrained(folder)
    augmented = CocoFolder(args.data, args.annotations, train_transform())
    plain = CocoFolder(args.data, args.annotations)
    train_ids, validation_ids = split(plain, args.validation_fraction, args.seed)
    model = training.build_model(AutoModelForObjectDetection, folder, dict(enumerate(plain.label_names)),
                                 args.from_scratch)
    if args.freeze_backbone:
        training.freeze_backbone(model)

    def collate(samples: list[dict]) -> dict:
        encoded = processor(images=[s["image"] for s in samples], annotations=[coco_annotations(s) for s in samples],
                            return_tensors="pt")
        return {"pixel_values": encoded["pixel_values"], "labels": encoded["labels"]}

    trainer = Trainer(
        model=model, data_collator=collate,
        args=training.trainer_arguments(args, len(train_ids), "loss", greater_is_better=False,
                                        prediction_loss_only=True),
        train_dataset=torch.utils.data.Subset(augmented, train_ids),
        eval_dataset=torch.utils.data.Subset(plain, validation_ids),
        callbacks=[EarlyStoppingCallback(early_stopping_patience=args.patience)])
    result = trainer.train(resume_from_checkpoint=True if args.resume else None)
    training.reload_best(trainer, AutoModelForObjectDetection)

    trained = LoadedModel(registry.ModelEntry("trained", task.TASK, "local", "", True, 0), trainer.model.eval(),
                          processor, folder, next(trainer.model.parameters()).device, torch.float32)
    metrics = {"train_loss": result.training_loss, "epochs_run": trainer.state.epoch}
    validation = task.mean_average_precision(trained, plain, validation_ids)
    metrics.update({f"validation_{k}": v for k, v in validation.items()})
    if args.eval_data:
        held_out = CocoFolder(args.eval_data, args.annotations)
        metrics.update({f"test_{k}": v for k, v in task.mean_average_precision(trained, held_out).items()})
    metrics = training.rounded(metrics)
    training.save(trainer, processor, args, metrics, model_card(Path(args.out), args, metrics, argv))
    return metrics


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
