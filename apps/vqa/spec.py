"""Visual question answering, as the hub sees it (the contract: shared/contract.py)."""

from pathlib import Path

from apps.vqa import cli, task
from shared.contract import AppSpec

SCENE = Path(__file__).resolve().parent.parent / "detection" / "examples" / "scene_0.png"  # held out: seed 1


def finetune(argv: list[str]) -> dict:
    from apps.vqa import finetune

    return finetune.main(argv)


SPEC = AppSpec(
    name="vqa",
    title="Visual question answering",
    summary="Answers to questions about an image, with scores.",
    models=task.MODELS,
    predict=task.answer,
    onnx=task.onnx_form,
    example={"image": SCENE, "questions": "how many digits are there?"},
    examples=[[str(SCENE), "how many digits are there?"], [str(SCENE), "what colour is the 6?"]],
    cli_arguments=cli.add_arguments,
    cli_predict=cli.predict,
    finetune=finetune,
)
