"""Object detection: labelled boxes on a photo, from the embedded digits detector or Hub detectors.

    python apps/detection/app.py               # this app alone, as a Space runs it
    demohub serve                              # with every other app, at /detection

API: `Client(url).predict(image=handle_file(path), model=..., backend="torch", threshold=0.5,
classes="", max_detections=20, nms=True, api_name="/detection")` returns the annotated image, the table
of boxes and the "served by" line.
"""


import gradio as gr
from PIL import Image, ImageOps

from apps.detection import task
from apps.detection.spec import SPEC
from shared.errors import UserError
from shared.serving import ui

MAX_CLASSES_CHARACTERS = 500  # the text box's limit, which an API client does not meet
SHOWN_SIDE = 1024


@ui.user_errors
def detection(image, model, backend, threshold, classes, max_detections, nms):
    if len(classes or "") > MAX_CLASSES_CHARACTERS:
        raise UserError(f"The class list has {len(classes):,} characters; the limit is {MAX_CLASSES_CHARACTERS}.")
    wanted = [c.strip() for c in (classes or "").split(",") if c.strip()] or None
    result = task.detect(image, model=model, backend=backend, threshold=threshold, classes=wanted,
                         max_detections=max_detections, nms=nms, fallback=True)
    table = [[d["label"], ui.score(d["score"]), *d["box"]] for d in result["detections"]]
    return shown(result["image"], result["detections"]), table, ui.served_line(result)


def shown(image: Image.Image, detections: list[dict]) -> tuple[Image.Image, list]:
    """The picture with its boxes as the page draws them: at most SHOWN_SIDE px a side (gradio draws
    each box as a mask of the picture's size: 100 boxes on a 40 MP upload took 110 s and 6 GB; found
    by a hostile client), a small scene enlarged to about 512 px; the table keeps the input's pixels."""
    picture = ImageOps.contain(image, (SHOWN_SIDE, SHOWN_SIDE)) if max(image.size) > SHOWN_SIDE else \
        ui.enlarged(image, 512)
    scale = picture.width / image.width
    return picture, [(tuple(round(v * scale) for v in d["box"]), f"{d['label']} {d['score']:.2f}")
                     for d in detections]


with gr.Blocks(title="Object detection") as demo:
    gr.Markdown("# Object detection\nBoxes around what the model knows: the embedded detector finds the ten "
                "digits in scenes; the Hub detectors find the 80 COCO object classes.")
    with gr.Row():
        with gr.Column():
            image = ui.ImageInput(label="Image")
            model = ui.model_picker(task.MODELS.task)
            backend = ui.backend_radio(task.MODELS.task, model)
            threshold = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="Score threshold")
            classes = gr.Textbox("", label="Only these classes (comma-separated; empty: all)",
                                 max_length=MAX_CLASSES_CHARACTERS)
            max_detections = gr.Slider(1, task.MAX_DETECTIONS, value=20, step=1, label="Max detections")
            nms = gr.Checkbox(True, label="One box per object (drop a box that repeats a better one of its class)")
            submit = gr.Button("Detect", variant="primary")
        with gr.Column():
            annotated = gr.AnnotatedImage(label="Detections")
            table = gr.Dataframe(headers=["label", "score", "xmin", "ymin", "xmax", "ymax"], label="Boxes")
            served = gr.Markdown()
    ui.model_examples(SPEC, model, [image])

    ui.clear_on(submit.click, [annotated, table, served])
    ui.clear_on(model.change, [annotated, table, served])  # the last model's answer stayed under the new one's name
    submit.click(detection, [image, model, backend, threshold, classes, max_detections, nms],
                 [annotated, table, served], api_name="detection",
                 concurrency_limit=ui.BATCHED_CONCURRENCY)


if __name__ == "__main__":
    ui.launch(demo)
