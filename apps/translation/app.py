"""Translation: text in one language to another, by Marian opus-mt, M2M100 or the embedded model.

    python apps/translation/app.py          # this app alone, as a Space runs it
    demohub serve                           # with every other app, at /translation

API: `Client(url).predict(text="...", src="en", tgt="de", model="scenes-marian", backend="torch"|"onnx",
num_beams=4, max_new_tokens=128, api_name="/translation")` returns the translation and the
"served by" line.
"""

import gradio as gr

from apps.translation import task
from shared import registry, ui

LANGUAGE_CHOICES = [(f"{name} ({code})", code) for code, name in task.LANGUAGES.items()]


def model_choices() -> list[tuple[str, str]]:
    """opus-mt once (the pair picks the model), then every other model of the task."""
    others = [e for e in registry.entries(task.TASK) if not e.name.startswith("Helsinki-NLP/opus-mt-")]
    return [("Helsinki-NLP/opus-mt-* (chosen by the languages; hub, CC-BY-4.0)", task.OPUS_MT),
            *((f"{e.name} ({e.source}, {e.license})", e.name) for e in others)]


def model_line(model: str, src: str, tgt: str) -> str:
    if model == task.OPUS_MT:
        model = f"Helsinki-NLP/opus-mt-{src}-{tgt}"
    return ui.model_card_line(task.TASK, model)


@ui.user_errors
def translation(text, src, tgt, model, backend, num_beams, max_new_tokens):
    result = task.translate(text, src=src, tgt=tgt, model=model, backend=backend, num_beams=num_beams,
                            max_new_tokens=max_new_tokens, fallback=True)
    return result["translation"], ui.served_line(task.TASK, result) + f" ({result['sentences']} sentences)"


with gr.Blocks(title="Translation") as demo:
    gr.Markdown("# Translation\nType or paste text; it is split into sentences and translated in batches. "
                "The embedded model knows only the synthetic scenes' English and German (digits, colours, "
                "places); the Hub models know the languages at large.")
    with gr.Row():
        with gr.Column():
            with gr.Row():
                src = gr.Dropdown(LANGUAGE_CHOICES, value="en", label="From")
                swap = gr.Button("⇄ Swap", scale=0, min_width=80)
                tgt = gr.Dropdown(LANGUAGE_CHOICES, value="de", label="To")
            source_text = gr.Textbox(lines=6, label="Text", max_length=task.text.MAX_CHARACTERS,
                                     placeholder="A red 3 to the left of a blue 7.")
            model = gr.Dropdown(model_choices(), value=registry.default(task.TASK).name, label="Model")
            card = gr.Markdown(model_line(model.value, "en", "de"))
            backend = ui.backend_radio()
            with gr.Row():
                num_beams = gr.Slider(1, task.MAX_BEAMS, value=4, step=1, label="Beam size",
                                      info="1 is greedy: fastest")
                max_new_tokens = gr.Slider(1, task.MAX_NEW_TOKENS, value=128, step=1,
                                           label="Maximum new tokens per sentence")
            submit = gr.Button("Translate", variant="primary")
        with gr.Column():
            translated = gr.Textbox(lines=6, label="Translation", interactive=False, buttons=["copy"])
            served = gr.Markdown()
    gr.Examples([["A red 3 to the left of a blue 7.\nIs there an 8?", "en", "de"],
                 ["Eine grüne 6 über einer gelben 2. Welche Farbe hat die 6?", "de", "en"]],
                inputs=[source_text, src, tgt])

    swap.click(lambda a, b, text_in, text_out: (b, a, text_out or text_in, text_in if text_out else text_out),
               [src, tgt, source_text, translated], [src, tgt, source_text, translated], api_visibility="private")
    for changed in (model.change, src.change, tgt.change):
        changed(model_line, [model, src, tgt], card, api_visibility="private")
    submit.click(translation, [source_text, src, tgt, model, backend, num_beams, max_new_tokens],
                 [translated, served], api_name="translation")


if __name__ == "__main__":
    ui.launch(demo)
