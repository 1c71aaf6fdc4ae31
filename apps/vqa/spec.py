"""Visual question answering, as the hub sees it (the contract: shared/contract.py)."""

from apps.captioning.spec import SCENES  # the held-out scenes both apps show
from apps.vqa import cli, task
from shared.contract import AppSpec
from shared.data.examples import PHOTOS

SCENE = SCENES[0]


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
    # photos for a model of photos (added by --add-model or repo@revision); scenes for the embedded one
    examples=[[str(PHOTOS["astronaut"]), "what is in the picture?"],
              [str(PHOTOS["coffee"]), "what colour is the cup?"]],
    plain_examples=[[str(SCENES[0]), "how many digits are there?"], [str(SCENES[0]), "what colour is the 1?"],
                    [str(SCENES[1]), "how many digits are there?"],
                    [str(SCENES[2]), "where is the 5, seen from the 9?"]],
    cli_arguments=cli.add_arguments,
    cli_predict=cli.predict,
    finetune=finetune,
)
