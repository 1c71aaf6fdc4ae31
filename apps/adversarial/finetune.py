"""Adversarial training: fine-tune a classifier on PGD examples of its own making (Madry et al., 2018).

Takes every argument of apps/classification/finetune.py, plus the attack used in training and
for the robust accuracy in the card. Clean and robust accuracy on the held-out split are
measured before (the source model) and after; with `--ink-augment` also on the held-out digits
as users draw them (white on black, shifted by 1/8 of the side), and PGD examples are made from
the augmented training images.

    demohub data digits --out data/digits
    demohub finetune adversarial --data data/digits --out models/classification/digits-convnext-robust \
        --model digits-convnext --epochs 5 --learning-rate 1e-3 --batch-size 64 --eps 0.03 --attack-steps 5 \
        --ink-augment true
"""

from __future__ import annotations

import functools
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import Trainer

from apps.adversarial import attacks
from apps.classification import finetune
from apps.classification.task import MODELS as CLASSIFIERS
from shared import training
from shared.data import digits


@dataclass
class AdversarialArguments(finetune.FinetuneArguments):
    eps: float = 0.1
    attack_steps: int = 5
    eval_attack_steps: int = 20


class AdversarialTrainer(Trainer):
    """A Trainer whose training batches are replaced by PGD examples against the current model."""

    def __init__(self, *args, eps: float, attack_steps: int, processor, **kwargs):
        super().__init__(*args, **kwargs)
        self.eps, self.attack_steps, self.attack_processor = eps, attack_steps, processor

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if model.training:
            processor = self.attack_processor
            mean = torch.tensor(processor.image_mean, device=inputs["pixel_values"].device).view(1, -1, 1, 1)
            std = torch.tensor(processor.image_std, device=inputs["pixel_values"].device).view(1, -1, 1, 1)
            classifier = attacks.PixelSpaceClassifier(model, processor.image_mean, processor.image_std)
            classifier.to(inputs["pixel_values"].device)
            model.eval()  # craft against the deterministic model, then train on the result
            pixels = (inputs["pixel_values"] * std + mean).clamp(0, 1)
            adversarial, _ = attacks.pgd(classifier, pixels, inputs["labels"], self.eps, self.attack_steps,
                                         2.5 * self.eps / self.attack_steps)
            model.train()
            inputs = {**inputs, "pixel_values": (adversarial - mean) / std}
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)


def held_out_accuracy(model, processor, splits, args: AdversarialArguments) -> dict[str, float]:
    """Clean and PGD accuracy on the test split (validation if there is none), as drawn; with
    --ink-augment also inverted, shifted by 1/8 of the side, and both (`shared.data.digits.as_users_draw`)."""
    split = (splits["test"] if "test" in splits else splits["validation"]).with_format(None)
    drawn = digits.as_users_draw(split["image"])
    sets = drawn if args.ink_augment else {"dark_on_white": drawn["dark_on_white"]}
    device = next(model.parameters()).device
    labels = torch.tensor(split["label"], device=device)
    classifier = attacks.PixelSpaceClassifier(model.eval(), processor.image_mean, processor.image_std).to(device)
    result = {}
    for name, images in sets.items():
        pixels = processor(images=images, do_normalize=False, return_tensors="pt")["pixel_values"].to(device)
        wanted = labels.repeat(len(images) // len(labels))  # a shifted set holds every digit 8 times
        adversarial, _ = attacks.pgd(classifier, pixels, wanted, args.eps, args.eval_attack_steps,
                                     2.5 * args.eps / args.eval_attack_steps)
        with torch.inference_mode():
            clean = (classifier(pixels).argmax(1) == wanted).float().mean().item()
            robust = (classifier(adversarial).argmax(1) == wanted).float().mean().item()
        suffix = "" if name == "dark_on_white" else f"_{name}"
        result[f"clean_accuracy{suffix}"], result[f"robust_accuracy{suffix}"] = round(clean, 4), round(robust, 4)
    return result


def model_card(out: Path, args: AdversarialArguments, before: dict, after: dict, argv: list[str]) -> str:
    attack = f"L-inf PGD, eps={args.eps}, {args.eval_attack_steps} steps of 2.5*eps/steps, no random start"
    sets = [name for name in finetune.USER_SETS if name == "dark_on_white" or f"clean_accuracy_{name}" in after]
    keys = [(kind, "" if name == "dark_on_white" else f"_{name}") for kind in ("clean", "robust") for name in sets]

    def row(title: str, figures: dict) -> str:
        return f"| {title} | " + " | ".join(f"{figures[f'{k}_accuracy{s}']:.4f}" for k, s in keys) + " |"

    return "\n".join([
        f"# {out.name}", "",
        f"`{args.model}` adversarially trained by `apps/adversarial/finetune.py` (PGD-{args.attack_steps} "
        f"examples at eps={args.eps}) on `{args.data or args.dataset}`.", "",
        f"Held-out accuracy, clean and under attack ({attack}), on the test split as drawn"
        + (", inverted (white on black), shifted by 1/8 of the side, and both:" if len(sets) > 1 else ":"), "",
        "| model | " + " | ".join(f"{k} {s[1:].replace('_', ' ') or 'dark on white'}" for k, s in keys) + " |",
        "| --- |" + " --- |" * len(keys),
        row(f"before: `{args.model}`", before), row(f"after: `{out.name}`", after), "",
        f"Robust accuracy (dark on white) is {after['robust_accuracy'] / max(before['robust_accuracy'], 1e-4):.1f}x "
        "the undefended model's. Pixel units: 1.0 is a channel's full range.", "",
        "Rebuild:", "", "```", "demohub finetune adversarial " + " ".join(argv), "```", "",
    ])


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    args = finetune.parse(argv, AdversarialArguments, "demohub finetune adversarial", __doc__)
    source = CLASSIFIERS.load(CLASSIFIERS.resolve(args.model).name)
    trainer_class = functools.partial(AdversarialTrainer, eps=args.eps, attack_steps=args.attack_steps,
                                      processor=source.processor)
    trainer, processor, splits, metrics = finetune.train(args, trainer_class)
    before = held_out_accuracy(source.model, processor, splits, args)
    after = held_out_accuracy(trainer.model, processor, splits, args)
    metrics.update({f"before_{k}": v for k, v in before.items()})
    metrics.update({f"after_{k}": v for k, v in after.items()})
    training.save(trainer, processor, args, metrics, model_card(Path(args.out), args, before, after, argv))
    return metrics


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
