"""Image captioning: a sentence about an image, from the embedded scene captioner or a Hub captioner.

    python apps/captioning/app.py          # this app alone, as a Space runs it
    demohub serve                          # with every other app, at /captioning

API: `Client(url).predict(image=handle_file(path), lang="en", prompt="", model=..., backend="torch",
num_beams=4, num_captions=3, max_new_tokens=32, repetition_penalty=1.0, no_repeat_ngram_size=0,
api_name="/captioning")` returns the best caption, the n best with scores, and the "served by" line.
"""

import gradio as gr

from apps.captioning import task
from apps.captioning.spec import SPEC
from shared.serving import ui


@ui.user_errors
def captioning(image, lang, prompt, model, backend, num_beams, num_captions, max_new_tokens, repetition_penalty,
               no_repeat_ngram_size):
    result = task.caption(image, model=model, backend=backend, lang=lang, prompt=prompt or None,
                          num_beams=num_beams, num_captions=num_captions, max_new_tokens=max_new_tokens,
                          repetition_penalty=repetition_penalty, no_repeat_ngram_size=no_repeat_ngram_size,
                          fallback=True)
    table = [[c["text"], ui.score(c["score"])] for c in result["captions"]]
    return result["caption"], table, ui.served_line(result)


def captions_slider(beams: int, wanted: int) -> gr.Slider:
    """The captions are the best beams: never more than the beam size. At a beam of 1 the slider is
    fixed at 1 (gradio refuses a slider whose maximum is its minimum, and the slider stayed at 3)."""
    beams = int(beams)
    return gr.Slider(maximum=max(beams, 2), value=min(wanted, beams), interactive=beams > 1)


with gr.Blocks(title="Image captioning") as demo:
    gr.Markdown("# Image captioning\nA sentence that describes an image. The embedded model knows the synthetic "
                "scenes (coloured digits on textures) in English and German (its card gives its scores on held-out "
                "scenes); the Hub models describe photos.")
    with gr.Row():
        with gr.Column():
            image = ui.ImageInput(label="Image")
            lang = gr.Dropdown([(f"{name} ({code})", code) for code, name in task.LANGUAGE_NAMES.items()], value="en",
                               label="Language", allow_custom_value=True)
            prompt = gr.Textbox("", label="Prompt (models that continue one, e.g. BLIP; empty: none)",
                                max_length=task.MAX_PROMPT_CHARACTERS)
            model = ui.model_picker(task.TASK)
            backend = ui.backend_radio(task.TASK, model)
            with gr.Row():
                num_beams = gr.Slider(1, task.MAX_BEAMS, value=4, step=1, label="Beam size")
                num_captions = gr.Slider(1, 4, value=3, step=1, label="Captions (best beams, up to the beam size)")
            with gr.Row():
                max_new_tokens = gr.Slider(1, task.MAX_NEW_TOKENS, value=32, step=1, label="Maximum new tokens")
                repetition_penalty = gr.Slider(1.0, 2.0, value=1.0, step=0.05, label="Repetition penalty")
                no_repeat_ngram_size = gr.Slider(0, task.MAX_NGRAM, value=0, step=1, label="No repeated n-grams of")
            submit = gr.Button("Caption", variant="primary")
        with gr.Column():
            best = gr.Textbox(label="Caption", interactive=False)
            captions = gr.Dataframe(headers=["caption", "score"], wrap=True, column_widths=["82%", "18%"],
                                    label="Best beams, in beam search's order; score: mean token probability")
            served = gr.Markdown()
    ui.model_examples(SPEC, model, [image])

    num_beams.change(captions_slider, [num_beams, num_captions], num_captions, api_visibility="private")
    settings = [lang, prompt, model, backend, num_beams, num_captions, max_new_tokens, repetition_penalty,
                no_repeat_ngram_size]
    ui.clear_on(submit.click, [best, captions, served])
    ui.clear_on(model.change, [best, captions, served])  # the last model's answer stayed under the new one's name
    submit.click(captioning, [image, *settings], [best, captions, served], api_name="captioning")


if __name__ == "__main__":
    ui.launch(demo)
