"""Semantic segmentation, as the hub sees it (the contract: shared/contract.py)."""

from pathlib import Path

from apps.segmentation import cli, task
from shared.contract import AppSpec
from shared.data.examples import PHOTOS


def finetune(argv: list[str]) -> dict:
    from apps.segmentation import finetune

    return finetune.main(argv)


SPEC = AppSpec(
    name="segmentation",
    title="Semantic segmentation",
    summary="A class for every pixel, as a coloured overlay.",
    models=task.MODELS,
    predict=task.segment,
    onnx=task.onnx_form,
    example={"image": PHOTOS["astronaut"]},
    examples=[[str(PHOTOS[name])] for name in ("astronaut", "coffee", "rocket")],
    plain_examples=[[str(path)] for path in sorted(
        (Path(__file__).parent.parent / "detection" / "examples").glob("*.png"))],
    cli_arguments=cli.add_arguments,
    cli_predict=cli.predict,
    cli_predict_batch=cli.predict_batch,
    finetune=finetune,
    held_out=task.held_out_mean_iou,
)
