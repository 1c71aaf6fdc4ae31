"""Image captioning, as the hub sees it (the contract: shared/contract.py)."""

from pathlib import Path

from apps.captioning import cli, task
from shared.contract import AppSpec
from shared.data.examples import PHOTOS

SCENES = sorted((Path(__file__).resolve().parent / "examples").glob("*.png"))  # held out: seed 1
SCENE = SCENES[0]


def finetune(argv: list[str]) -> dict:
    from apps.captioning import finetune

    return finetune.main(argv)


SPEC = AppSpec(
    name="captioning",
    title="Image captioning",
    summary="A sentence that describes an image, in English or German.",
    models=task.MODELS,
    predict=task.caption,
    onnx=task.onnx_form,
    example={"image": SCENE},
    examples=[[str(PHOTOS[name])] for name in ("astronaut", "coffee", "cat")],
    plain_examples=[[str(scene)] for scene in SCENES],
    cli_arguments=cli.add_arguments,
    cli_predict=cli.predict,
    finetune=finetune,
)
