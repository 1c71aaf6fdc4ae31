"""Semantic segmentation: a class for every pixel, shown as a coloured overlay with a legend.

    python apps/segmentation/app.py            # this app alone, as a Space runs it
    demohub serve                              # with every other app, at /segmentation

API: `Client(url).predict(image=handle_file(path), model=..., backend="torch", opacity=0.5,
api_name="/segmentation")` returns the overlay (a small image's enlarged to about 512 px, pixels kept sharp),
the legend, the table of classes and the "served by" line.
"""

import html

import gradio as gr

from apps.segmentation import task
from apps.segmentation.spec import SPEC
from shared.inputs.checks import number_in
from shared.serving import ui

SWATCH = '<span style="display:inline-block;width:1em;height:1em;background:rgb{}"></span>'
LEGEND_MIN_SHARE = 0.01  # smaller classes (edge pixels of a larger one, mostly) are summed in one line
SHOWN_SIDE = 512  # a 128-px scene's overlay is shown 4x, pixels kept sharp


def legend(rows: list[dict], clear: list[int] = ()) -> str:
    """Each class's swatch and area; a class left untinted (background) says so instead of a swatch."""
    shown = [r for r in rows if r["area_fraction"] >= LEGEND_MIN_SHARE]
    items = "".join(f"<li>{'' if r['id'] in clear else SWATCH.format(task.colour_of(r['id'])) + ' '}"
                    f"{html.escape(r['label'])}: {100 * r['area_fraction']:.1f}%{' (not tinted)' * (r['id'] in clear)}"
                    "</li>" for r in shown)
    small = rows[len(shown):]
    if small:
        share = 100 * sum(r["area_fraction"] for r in small)
        items += (f"<li>and {len(small)} class{'es' * (len(small) != 1)} under {100 * LEGEND_MIN_SHARE:.0f}% each "
                  f"({share:.1f}% in all; the table lists them)</li>")
    return f'<ul style="list-style:none;padding:0">{items}</ul>'


@ui.user_errors
def segmentation(image, model, backend, opacity):
    opacity = number_in("opacity", opacity, 0.0, 1.0)
    result = task.segment(image, model=model, backend=backend, fallback=True)
    clear = task.clear_ids(result["model"])
    picture = ui.enlarged(task.overlay(result["image"], result["mask"], opacity, clear), SHOWN_SIDE)
    table = [[r["label"], round(100 * r["area_fraction"], 2)] for r in result["segments"]]
    return picture, legend(result["segments"], clear), table, ui.served_line(result)


with gr.Blocks(title="Semantic segmentation") as demo:
    gr.Markdown("# Semantic segmentation\nEvery pixel gets a class: the embedded model knows the ten digits "
                "and the background of synthetic scenes; the Hub models know the 150 ADE20K classes.")
    with gr.Row():
        with gr.Column():
            image = ui.ImageInput(label="Image")
            model = ui.model_picker(task.MODELS.task)
            backend = ui.backend_radio(task.MODELS.task, model)
            opacity = gr.Slider(0.0, 1.0, value=0.6, step=0.05, label="Overlay opacity")
            submit = gr.Button("Segment", variant="primary")
        with gr.Column():
            picture = gr.Image(label="Classes", type="pil", format="png")
            key = gr.HTML(label="Legend")
            table = gr.Dataframe(headers=["class", "area %"], label="Area by class")
            served = gr.Markdown()
    ui.model_examples(SPEC, model, [image])

    ui.clear_on(submit.click, [picture, key, table, served])
    ui.clear_on(model.change, [picture, key, table, served])  # the last model's answer stayed under the new one's name
    submit.click(segmentation, [image, model, backend, opacity], [picture, key, table, served], api_name="segmentation")


if __name__ == "__main__":
    ui.launch(demo)
