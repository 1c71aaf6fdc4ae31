"""`demohub predict adversarial`: attack one image and print what changed, as JSON."""

from __future__ import annotations

import argparse

from apps.adversarial import task
from shared.serving import many


def add_arguments(parser: argparse.ArgumentParser) -> None:
    many.add_image_argument(parser)
    parser.add_argument("--attack", choices=task.ATTACKS, default="pgd")
    parser.add_argument("--eps", type=float, default=0.03, help="Perturbation budget in pixel units (1 = full range).")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--step-size", type=float, default=0.0, help="0: 2.5 * eps / steps.")
    parser.add_argument("--target", help="A label to push the model towards (targeted attack).")
    parser.add_argument("--model", help="Classifier to attack: registry name or local model folder.")
    parser.add_argument("--transfer-model", help="A second classifier to try the adversarial image on.")
    parser.add_argument("--top-k", type=int, default=5)


def predict(args: argparse.Namespace) -> dict:
    entry = task.MODELS.resolve(args.model)
    transfer = task.MODELS.resolve(args.transfer_model).name if args.transfer_model else None
    result = task.attack(args.image, model=entry.name, attack=args.attack, eps=args.eps, steps=args.steps,
                         step_size=args.step_size, target=args.target, transfer_model=transfer, top_k=args.top_k)
    return result.to_json()
