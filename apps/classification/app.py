"""Image classification: the top-k labels of a photo, from the embedded digits model or a Hub model.

    python apps/classification/app.py          # this app alone, as a Space runs it
    demohub serve                              # with every other app, at /classification

API: `Client(url).predict(image=handle_file(path), model=..., backend="torch"|"onnx",
top_k=5, api_name="/classification")` returns the label scores and the "served by" line;
`api_name="/explain"` (image, model, backend, method, label, window, stride) the heat map, what it
explains and the "served by" line.
"""

import html
import io

import gradio as gr
import pandas as pd
from PIL import Image

from apps.classification import task
from apps.classification.spec import SPEC
from shared.inference import heatmaps
from shared.inference.attribution import CHOICES, CLASS_VISUALISATION
from shared.inputs.checks import whole_number
from shared.serving import ui


@ui.user_errors
def classification(image, model, backend, top_k):
    result = task.classify(image, model=model, backend=backend, top_k=top_k, fallback=True)
    scores = {row["label"]: row["score"] for row in result["labels"]}
    return scores, ui.served_line(result)


# Explain requests run at once: an occlusion may take its whole 20 s, and one at a time, two of them held a
# quick saliency map behind them for 37 s. Hooked methods (Grad-CAM) still take turns (attribution.HOOKED).
EXPLAIN_CONCURRENCY = 3
MAX_OCCLUSION_PX = 224  # the sliders' end: the largest input of the offered models


def occlusion_px(name: str, value) -> int | None:
    """An occlusion setting as the API hands it (a float, perhaps NaN or 3.5: never cut to a whole
    number quietly); None for 0, the default."""
    return whole_number(f"The occlusion {name}", value or 0, 0, MAX_OCCLUSION_PX) or None


@ui.user_errors
def explain(image, model, backend, method, label, window, stride):
    """Where the model looks: a heat map over the image of which pixels its score for a label depends on.

    Args:
        image: the image to explain (an upload, an http(s) URL or a base64 data URI).
        model: the classifier, by registry name.
        backend: torch, or onnx (occlusion only: it needs forward passes, no gradients).
        method: saliency, smoothgrad, integrated-gradients, gradcam or occlusion; or class-visualisation
            (no image: what the model thinks `label` looks like, by gradient ascent; small models only).
        label: the label to explain; empty for the predicted one (class-visualisation: the label to draw).
        window: occlusion's grey patch, in px of the model's input; 0 for a quarter of its side.
        stride: occlusion's step in px; 0 for an eighth of the side (a quarter on inputs over 64 px).

    Returns:
        the heat map (PNG), what it explains (label, score, deletion areas), the "served by" line.
    """
    result = task.explain(image, model=model, backend=backend, method=method, label=label or None,
                          window=occlusion_px("window", window), stride=occlusion_px("stride", stride), fallback=True)
    if method == CLASS_VISUALISATION:
        return result["heatmap"], (f"What the model thinks **{html.escape(result['label'])}** looks like: "
                                   f"{result['steps']} steps of gradient ascent took its score from "
                                   f"{result['start_score']:.3f} to **{result['score']:.3f}**."), ui.served_line(result)
    summary = (f"**{result['method']}** for **{html.escape(result['label'])}** (score {result['score']:.3f}). "
               f"Deletion check: hiding the most salient pixels first leaves an area of "
               f"**{result['deletion_area']:.3f}** under the score's curve, random pixels "
               f"**{result['random_deletion_area']:.3f}**: "
               + deletion_verdict(result["deletion_area"], result["random_deletion_area"], result["method"]))
    return result["heatmap"], summary, ui.served_line(result)


# how long a page keeps its map's points and thumbnails (for its neighbours list) after the last map:
# kept per visitor, and gradio keeps up to 10,000 visitors' state
MAP_KEPT_S = 900
DELETION_MARGIN = 0.1  # the salient-first area must be this much (relative) below random's to count as found


def deletion_verdict(salient_area: float, random_area: float, method: str = "") -> str:
    """What the two deletion areas say, with a margin: 0.016 against 0.017 is a draw, not a pass. The
    advice names the methods that pass most often, other than the one just run."""
    others = " or ".join(m for m in ("integrated-gradients", "occlusion") if m != method)
    if salient_area < (1 - DELETION_MARGIN) * random_area:
        return "clearly smaller, so the map found what the score depends on."
    if salient_area <= (1 + DELETION_MARGIN) * random_area:
        return (f"within {DELETION_MARGIN:.0%} of each other, so this map did no better than random pixels here "
                f"(try {others}).")
    return f"larger, so this map did not find what the score depends on here (try {others})."


@ui.user_errors
def embedding_map(files, model):
    """The t-SNE map of the model's penultimate layer for the uploads (none: the held-out digits, or photos)."""
    result = task.embedding_map(list(files) if files else None, model=model, fallback=True)
    colour = result["colour"]
    table = pd.DataFrame([{"x": p["x"], "y": p["y"], "name": p["name"], "predicted": p["predicted"],
                           "label": p["label"] if colour == "true" else p["predicted"]} for p in result["points"]])
    table = table.sort_values("label", kind="stable")  # the plot's legend lists labels in the rows' order
    found = result.to_json().get("knn_accuracy_in_map")
    summary = (f"{len(table)} images, coloured by their {colour} label; embeddings of {result['embedding_size']} "
               "numbers, mapped to 2-D by t-SNE." + (f" A 5-nearest-neighbour vote in the map gets "
                                                    f"**{found:.1%}** of the true labels." if found else ""))
    names = [p["name"] for p in result["points"]]
    state = (result["points"], {name: _packed(image) for name, image in result.images["thumbnails"].items()})
    scatter = gr.ScatterPlot(table, color_map=heatmaps.label_colours(list(table["label"])))  # as the thumbnail map
    return scatter, result["map"], summary, gr.Dropdown(choices=names, value=names[0]), state


def _packed(thumbnail: Image.Image) -> bytes:
    """A thumbnail as the page's state keeps it: 500 of them as pictures were 14 MB a visitor, as JPEG 2 MB."""
    buffer = io.BytesIO()
    thumbnail.convert("RGB").save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def nearest(name, state):
    """The chosen image and its nearest neighbours in the embedding, nearest first."""
    if not state or name is None:
        return []
    points, thumbnails = state
    point = next((p for p in points if p["name"] == name), None)
    if point is None:
        return []

    def thumbnail(of: str) -> Image.Image:
        return Image.open(io.BytesIO(thumbnails[of]))

    return [(thumbnail(name), f"{name}: predicted {point['predicted']}")] + [  # distances first: long names get cut
        (thumbnail(n["name"]), f"{n['distance']:.2f} away: {n['name']}") for n in point["neighbours"]]


with gr.Blocks(title="Image classification") as demo:
    gr.Markdown("# Image classification\nUpload a photo, or draw a digit, to get its most likely labels. "
                "The embedded digits models know the ten digits; efficientnet-lite0 (embedded too) and the Hub "
                "models know the 1,000 ImageNet classes.")
    with gr.Row():
        with gr.Column():
            image = ui.ImageInput(label="Image", format="png")
            sketch, use_drawing = ui.digit_sketchpad("Read the drawing")
            model = ui.model_picker(task.MODELS.task)
            backend = ui.backend_radio(task.MODELS.task, model)
            top_k = gr.Slider(1, task.MAX_TOP_K, value=5, step=1, label="Top k")
            submit = gr.Button("Classify", variant="primary")
        with gr.Column():
            labels = gr.Label(label="Labels")
            served = gr.Markdown()
    with gr.Accordion("Explain: which pixels the answer depends on", open=True):
        with gr.Row():
            with gr.Column():
                method = gr.Radio(list(CHOICES), value="integrated-gradients", label="Method",
                                  info="integrated-gradients (the default) passes the deletion check on average "
                                       "on every model measured (not on every image); plain saliency fails it on "
                                       "digits-convnext and on photos. "
                                       "Gradient methods and Grad-CAM run on torch; occlusion on any backend. "
                                       "class-visualisation needs no image: what the model thinks a label looks "
                                       "like.")
                label = gr.Textbox(label="Label to explain", placeholder="empty: the predicted label")
                window = gr.Slider(0, MAX_OCCLUSION_PX, value=0, step=1,
                                   label="Occlusion window (px of the model's input; 0: a quarter of its side)")
                stride = gr.Slider(0, MAX_OCCLUSION_PX, value=0, step=1,
                                   label="Occlusion stride (px; 0: an eighth of the side, a quarter over 64 px)")
                explain_button = gr.Button("Explain")
            with gr.Column():
                heatmap = gr.Image(label="Heat map (or class visualisation)", type="pil", format="png",
                                   interactive=False, elem_id="heatmap")
                explained = gr.Markdown()
                explained_by = gr.Markdown()
    with gr.Accordion("Embedding map: how the model arranges images", open=False):
        with gr.Row():
            with gr.Column():
                files = gr.File(file_count="multiple", type="filepath",
                                label="Images (none: the 360 held-out digits; for photo models, the 11 photos shipped)")
                map_button = gr.Button("Map")
                mapped = gr.Markdown()
                chosen = gr.Dropdown(label="Nearest neighbours of", choices=[])
                gallery = gr.Gallery(label="Nearest neighbours (distance in the embedding)", columns=4, height="auto")
            with gr.Column():
                scatter = gr.ScatterPlot(x="x", y="y", color="label", tooltip=["name", "label", "predicted"],
                                         label="t-SNE of the penultimate layer (hover: name and labels)")
                thumbnails = gr.Image(label="The same map with thumbnails", type="pil", interactive=False)
        map_state = gr.State(time_to_live=MAP_KEPT_S)
    ui.model_examples(SPEC, model, [image])

    ui.clear_on(submit.click, [labels, served])
    ui.clear_on(model.change, [labels, served])  # the last model's labels stayed under the new one's name
    submit.click(classification, [image, model, backend, top_k], [labels, served], api_name="classification",
                 concurrency_limit=ui.BATCHED_CONCURRENCY)
    use_drawing.click(ui.drawing, sketch, image, api_visibility="private").success(
        classification, [image, model, backend, top_k], [labels, served], api_visibility="private")
    ui.clear_on(explain_button.click, [heatmap, explained, explained_by])
    explain_button.click(explain, [image, model, backend, method, label, window, stride],
                         [heatmap, explained, explained_by], api_name="explain", concurrency_limit=EXPLAIN_CONCURRENCY)
    ui.clear_on(map_button.click, [scatter, thumbnails, mapped, gallery])
    map_button.click(embedding_map, [files, model], [scatter, thumbnails, mapped, chosen, map_state],
                     api_visibility="private")
    chosen.change(nearest, [chosen, map_state], gallery, api_visibility="private")


if __name__ == "__main__":
    ui.launch(demo)
