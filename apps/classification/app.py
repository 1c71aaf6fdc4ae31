"""Image classification: the top-k labels of a photo, from the embedded digits model or a Hub model.

    python apps/classification/app.py          # this app alone, as a Space runs it
    demohub serve                              # with every other app, at /classification

API: `Client(url).predict(image=handle_file(path), model=..., backend="torch"|"onnx",
top_k=5, api_name="/classification")` returns the label scores and the "served by" line.
"""

from pathlib import Path

import gradio as gr
from PIL import Image

from apps.classification import task
from shared import ui
from shared.examples import PHOTOS

EXAMPLES = [*sorted(Path(__file__).parent.glob("examples/*.png")), *PHOTOS.values()]


def _drawing(sketch) -> Image.Image:
    """The sketchpad's drawing as the input image, so it takes the upload's path (decode, checks)."""
    drawn = (sketch or {}).get("composite")
    if drawn is None or Image.alpha_composite(Image.new("RGBA", drawn.size, "white"),
                                              drawn.convert("RGBA")).convert("L").getextrema()[0] > 128:
        raise gr.Error("Draw a digit on the sketchpad first (dark strokes), then press the button.")
    return drawn


@ui.user_errors
def classification(image, model, backend, top_k):
    result = task.classify(image, model=model, backend=backend, top_k=top_k, fallback=True)
    scores = {row["label"]: row["score"] for row in result["labels"]}
    return scores, ui.served_line(task.TASK, result)


with gr.Blocks(title="Image classification") as demo:
    gr.Markdown("# Image classification\nUpload a photo, or draw a digit, to get its most likely labels. "
                "The embedded model knows the ten digits; the Hub models know the 1,000 ImageNet classes.")
    with gr.Row():
        with gr.Column():
            image = ui.ImageInput(label="Image", format="png")
            with gr.Accordion("Or draw a digit", open=True):
                sketch = gr.Sketchpad(label="Draw a digit", type="pil", canvas_size=(256, 256), height=300,
                                      brush=gr.Brush(default_size=24, colors=["#000000"], color_mode="fixed"),
                                      layers=False, transforms=())
                use_drawing = gr.Button("Read the drawing")
            model = ui.model_picker(task.TASK)
            backend = ui.backend_radio()
            top_k = gr.Slider(1, task.MAX_TOP_K, value=5, step=1, label="Top k")
            submit = gr.Button("Classify", variant="primary")
        with gr.Column():
            labels = gr.Label(label="Labels")
            served = gr.Markdown()
    gr.Examples([[str(path)] for path in EXAMPLES], inputs=[image])

    submit.click(classification, [image, model, backend, top_k], [labels, served], api_name="classification")
    use_drawing.click(_drawing, sketch, image, api_visibility="private").success(
        classification, [image, model, backend, top_k], [labels, served], api_visibility="private")


if __name__ == "__main__":
    ui.launch(demo)
