"""GAN/VAE sampling, as the hub sees it (the contract: shared/contract.py)."""

from pathlib import Path

from apps.generative import cli, task
from shared.contract import AppSpec


def finetune(argv: list[str]) -> dict | None:
    from apps.generative import finetune

    return finetune.main(argv)


SPEC = AppSpec(
    name="generative",
    title="GAN/VAE sampling",
    summary="Digits drawn by a class-conditional GAN or a VAE, from a seed.",
    models=task.MODELS,
    predict=task.generate,
    onnx=task.onnx_form,
    example={"seed": 0},
    examples=[],
    card_image=Path(__file__).resolve().parent / "examples" / "digits-gan_seed0.png",  # predict --seed 0 --n 16
    cli_arguments=cli.add_arguments,
    cli_predict=cli.predict,
    finetune=finetune,
)
