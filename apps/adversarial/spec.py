"""Adversarial examples, as the hub sees it (the contract: shared/contract.py)."""

from pathlib import Path

from apps.adversarial import cli, task
from shared.contract import AppSpec
from shared.data.examples import PHOTOS

DIGITS = Path(__file__).resolve().parent.parent / "classification" / "examples"



def finetune(argv: list[str]) -> dict:
    from apps.adversarial import finetune

    return finetune.main(argv)


SPEC = AppSpec(
    name="adversarial",
    title="Adversarial examples",
    summary="A small change of the pixels that changes a classifier's answer.",
    models=task.MODELS,
    predict=task.attack,
    onnx=task.onnx_form,
    example={"image": PHOTOS["cat"]},
    examples=[[str(PHOTOS["cat"])], [str(PHOTOS["coffee"])]],
    plain_examples=[[str(path)] for path in sorted(DIGITS.glob("*.png"))],
    cli_arguments=cli.add_arguments,
    cli_predict=cli.predict,
    finetune=finetune,
)
