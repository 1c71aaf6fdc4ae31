"""Translation: text in one language to another, by Marian opus-mt, M2M100 or the embedded model.

    python apps/translation/app.py          # this app alone, as a Space runs it
    demohub serve                           # with every other app, at /translation

API: `Client(url).predict(text="...", src_lang="en", tgt_lang="de", model="scenes-marian",
backend="torch"|"onnx"|"int8", num_beams=4, max_new_tokens=127, api_name="/translation")` returns the
translation and the "served by" line (`submit()` streams the translation so far, batch by batch).
The sliders start at the selected model's own settings.
"""

import queue
import threading
from concurrent.futures import ThreadPoolExecutor

import gradio as gr

from apps.translation import task
from apps.translation.spec import SPEC
from shared.errors import UserError
from shared.inputs.text import MAX_CHARACTERS
from shared.models import registry
from shared.serving import ui

LANGUAGE_CHOICES = [(f"{name} ({code})", code) for code, name in task.LANGUAGES.items()]
DEFAULT_MODEL = registry.default(task.TASK).name


def model_choices() -> list[tuple[str, str]]:
    """Each family once (the pair picks its model), then every other model of the task."""
    entries = registry.entries(task.TASK)
    families = sorted({e.family for e in entries if e.family})
    return [*((f"{family} (chosen by the languages)", family) for family in families),
            *((f"{e.name} ({e.source}, {e.license})", e.name) for e in entries if not e.family)]


def model_line(model: str, src_lang: str, tgt_lang: str) -> str:
    try:
        model = task.pick_model(model, src_lang, tgt_lang).name
    except UserError as err:
        return str(err)
    return ui.model_card_line(task.TASK, model)


def model_for_pair(model: str, src_lang: str, tgt_lang: str):
    """The picked model, or where it does not translate the pair the first choice that does (a family
    such as opus-mt first): the model follows the languages, as the backends follow the model."""
    try:
        task.pick_model(model, src_lang, tgt_lang)
        return gr.skip()
    except UserError:
        pass
    for _, choice in model_choices():
        try:
            task.pick_model(choice, src_lang, tgt_lang)
            return choice
        except UserError:
            continue
    return gr.skip()  # no offered model translates the pair: the card line says so


def model_settings(model: str):
    """The beam and length sliders at the model's own generation settings (unchanged if unknown here)."""
    defaults = task.generation_defaults(model) if model in {e.name for e in registry.entries(task.TASK)} else {}
    return (gr.update(value=defaults["num_beams"]) if defaults else gr.update(),
            gr.update(value=min(defaults["max_new_tokens"], task.MAX_NEW_TOKENS)) if defaults else gr.update())


class Abandoned(Exception):
    """Raised in the translating thread once the client that asked has gone away."""


@ui.user_errors
def translation(text, src_lang, tgt_lang, model, backend, num_beams, max_new_tokens,
                progress=gr.Progress()):  # noqa: B008 (gradio's way: the default marks the progress bar)
    # streams the translation so far as each batch of sentences finishes, then the whole answer
    # (no docstring: the MCP tool's description is written from the spec and the page, shared/serving/mcp.py)
    heard, abandoned = queue.SimpleQueue(), threading.Event()

    def hear(*told):
        if abandoned.is_set():  # the client went away: stop after the batch that just finished
            raise Abandoned
        heard.put(told)

    pool = ThreadPoolExecutor(1)
    try:
        running = pool.submit(task.translate, text, src_lang=src_lang, tgt_lang=tgt_lang, model=model,
                              backend=backend, num_beams=num_beams, max_new_tokens=max_new_tokens, fallback=True,
                              on_progress=hear, time_limit_s=task.PAGE_TIME_LIMIT_S)
        while not (running.done() and heard.empty()):
            try:
                done, total, so_far = heard.get(timeout=0.1)
            except queue.Empty:
                continue
            progress(done / total, desc=f"{done} of {ui.counted(total, 'sentence')}")
            if done < total:
                yield so_far, f"Translating: {done} of {ui.counted(total, 'sentence')} done."
        result = running.result()
    finally:
        # gradio closes this generator on its event loop when the client disconnects: waiting here for
        # the translation to finish (as `with ThreadPoolExecutor` does) froze the whole hub until it did
        abandoned.set()
        pool.shutdown(wait=False)
    yield result["translation"], f"{ui.counted(result['sentences'], 'sentence')}. " + ui.served_line(result)


DEFAULTS = task.generation_defaults(DEFAULT_MODEL)

with gr.Blocks(title="Translation") as demo:
    gr.Markdown("# Translation\nType or paste text; it is split into sentences and translated in batches. "
                "The embedded model knows only the synthetic scenes' English and German (digits, colours, "
                "places); the Hub models know the languages at large.")
    with gr.Row():
        with gr.Column():
            with gr.Row():
                src_lang = gr.Dropdown(LANGUAGE_CHOICES, value="en", label="From")
                swap = gr.Button("⇄ Swap", scale=0, min_width=80)
                tgt_lang = gr.Dropdown(LANGUAGE_CHOICES, value="de", label="To")
            # no max_length: the browser would cut a paste mid-word without a word; the count says the limit
            # filled with the example: a placeholder looked like text, and Translate then said "empty"
            text = gr.Textbox(SPEC.example["text"], lines=6, label="Text")
            count = gr.Markdown(f"{len(text.value)} / {MAX_CHARACTERS:,} characters", elem_id="translation-count")
            model = gr.Dropdown(model_choices(), value=DEFAULT_MODEL, label="Model")
            card = gr.Markdown(model_line(model.value, "en", "de"))
            backend = ui.backend_radio(task.TASK, model)
            with gr.Row():
                num_beams = gr.Slider(1, task.MAX_BEAMS, value=DEFAULTS.get("num_beams", 4), step=1,
                                      label="Beam size", info="1 is greedy: fastest. Starts at the model's own.")
                max_new_tokens = gr.Slider(1, task.MAX_NEW_TOKENS, value=DEFAULTS.get("max_new_tokens", 128), step=1,
                                           label="Maximum new tokens per sentence")
            submit = gr.Button("Translate", variant="primary")
        with gr.Column():
            translated = gr.Textbox(lines=6, label="Translation", interactive=False, buttons=["copy"])
            served = gr.Markdown()
    gr.Examples(SPEC.examples, inputs=[text, src_lang, tgt_lang])

    text.change(None, text, count, js=f"(t) => `${{[...(t || '')].length.toLocaleString('en')}} / "
                                      f"{MAX_CHARACTERS:,} characters`")
    swap.click(lambda a, b, text_in, text_out: (b, a, text_out or text_in, text_in if text_out else text_out),
               [src_lang, tgt_lang, text, translated], [src_lang, tgt_lang, text, translated], api_visibility="private")
    for changed in (src_lang.change, tgt_lang.change):
        changed(model_for_pair, [model, src_lang, tgt_lang], model, api_visibility="private")
    for changed in (model.change, src_lang.change, tgt_lang.change):
        changed(model_line, [model, src_lang, tgt_lang], card, api_visibility="private")
    model.change(model_settings, model, [num_beams, max_new_tokens], api_visibility="private")
    ui.clear_on(submit.click, [translated, served])
    submit.click(translation, [text, src_lang, tgt_lang, model, backend, num_beams, max_new_tokens],
                 [translated, served], api_name="translation")


if __name__ == "__main__":
    ui.launch(demo)
