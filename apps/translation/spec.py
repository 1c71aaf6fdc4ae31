"""Translation, as the hub sees it (the contract: shared/contract.py)."""

from apps.translation import cli, task
from shared.contract import AppSpec


def finetune(argv: list[str]) -> dict:
    from apps.translation import finetune

    return finetune.main(argv)


SPEC = AppSpec(
    name="translation",
    title="Translation",
    summary="Text in one language to another, sentence by sentence.",
    models=task.MODELS,
    predict=task.translate,
    onnx=task.onnx_form,
    example={"text": "A red 3 to the left of a blue 7.", "src_lang": "en", "tgt_lang": "de"},
    examples=[["A red 3 to the left of a blue 7.\nIs there an 8?", "en", "de"],
              ["Eine grüne 6 über einer gelben 2. Gibt es eine 8?", "de", "en"]],
    cli_arguments=cli.add_arguments,
    cli_predict=cli.predict,
    finetune=finetune,
    held_out=task.held_out_bleu,
)
