"""Image classification, as the hub sees it (the contract: shared/contract.py)."""

from pathlib import Path

from apps.classification import cli, task
from shared.contract import AppSpec
from shared.data.examples import PHOTOS


def finetune(argv: list[str]) -> dict:
    from apps.classification import finetune

    return finetune.main(argv)


SPEC = AppSpec(
    name="classification",
    title="Image classification",
    summary="The most likely labels of a photo or a digit.",
    models=task.MODELS,
    predict=task.classify,
    onnx=task.onnx_form,
    example={"image": PHOTOS["cat"]},
    examples=[[str(path)] for path in PHOTOS.values()],
    plain_examples=[[str(path)] for path in sorted((Path(__file__).parent / "examples").glob("*.png"))],
    cli_arguments=cli.add_arguments,
    cli_predict=cli.predict,
    cli_predict_batch=cli.predict_batch,
    finetune=finetune,
    held_out=cli.digits_accuracy,
    explain=task.explain,
)
