"""Image classification: the top-k labels of a photo, from the embedded digits model or a Hub model.

    python apps/classification/app.py          # this app alone, as a Space runs it
    demohub serve                              # with every other app, at /classification

API: `Client(url).predict(image=handle_file(path), model=..., backend="torch"|"onnx",
top_k=5, api_name="/classification")` returns the label scores and the "served by" line.
"""


import gradio as gr

from apps.classification import task
from apps.classification.spec import SPEC
from shared.serving import ui


@ui.user_errors
def classification(image, model, backend, top_k):
    result = task.classify(image, model=model, backend=backend, top_k=top_k, fallback=True)
    scores = {row["label"]: row["score"] for row in result["labels"]}
    return scores, ui.served_line(result)


with gr.Blocks(title="Image classification") as demo:
    gr.Markdown("# Image classification\nUpload a photo, or draw a digit, to get its most likely labels. "
                "The embedded model knows the ten digits; the Hub models know the 1,000 ImageNet classes.")
    with gr.Row():
        with gr.Column():
            image = ui.ImageInput(label="Image", format="png")
            sketch, use_drawing = ui.digit_sketchpad("Read the drawing")
            model = ui.model_picker(task.MODELS.task)
            backend = ui.backend_radio()
            top_k = gr.Slider(1, task.MAX_TOP_K, value=5, step=1, label="Top k")
            submit = gr.Button("Classify", variant="primary")
        with gr.Column():
            labels = gr.Label(label="Labels")
            served = gr.Markdown()
    ui.model_examples(SPEC, model, [image])

    submit.click(classification, [image, model, backend, top_k], [labels, served], api_name="classification")
    use_drawing.click(ui.drawing, sketch, image, api_visibility="private").success(
        classification, [image, model, backend, top_k], [labels, served], api_visibility="private")


if __name__ == "__main__":
    ui.launch(demo)
