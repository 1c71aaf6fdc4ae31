"""Object detection, as the hub sees it (the contract: shared/contract.py)."""

from pathlib import Path

from apps.detection import cli, task
from shared.contract import AppSpec
from shared.data.examples import PHOTOS


def finetune(argv: list[str]) -> dict:
    from apps.detection import finetune

    return finetune.main(argv)


SPEC = AppSpec(
    name="detection",
    title="Object detection",
    summary="Labelled boxes around the objects a model knows.",
    models=task.MODELS,
    predict=task.detect,
    onnx=task.onnx_form,
    example={"image": PHOTOS["coffee"]},
    examples=[[str(PHOTOS[name])] for name in ("coffee", "astronaut", "rocket")],
    plain_examples=[[str(path)] for path in sorted((Path(__file__).parent / "examples").glob("*.png"))],
    cli_arguments=cli.add_arguments,
    cli_predict=cli.predict,
    cli_predict_batch=cli.predict_batch,
    finetune=finetune,
    held_out=task.held_out_map,
)
