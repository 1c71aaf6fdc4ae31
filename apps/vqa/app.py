"""Visual question answering: answers with scores to questions about an image.

    python apps/vqa/app.py          # this app alone, as a Space runs it
    demohub serve                   # with every other app, at /vqa

API: `Client(url).predict(image=handle_file(path), questions="how many digits are there?", model=...,
backend="torch", top_k=5, api_name="/vqa")` (one question per line) returns a table of answers with
their scores, the top-k of each, and the "served by" line.
"""

import gradio as gr

from apps.vqa import task
from apps.vqa.spec import SPEC
from shared.serving import ui


@ui.user_errors
def vqa(image, questions, model, backend, top_k):
    lines = [line for line in (questions or "").splitlines() if line.strip()] or [questions]
    result = task.answer(image, lines, model=model, backend=backend, top_k=top_k, fallback=True)
    table = [[a["question"], a["answer"], ui.score(a["score"]),
              ", ".join(f"{t['answer']} ({t['score']:.2f})" for t in a["top_k"] if t["score"] is not None)]
             for a in result["answers"]]
    return table, ui.served_line(result)


with gr.Blocks(title="Visual question answering") as demo:
    gr.Markdown("# Visual question answering\nAsk questions about an image, one per line. The embedded model "
                "knows the synthetic scenes and the questions it learnt, in English and German: \"how many "
                "digits are there?\", \"is there a 3?\", \"what colour is the 3?\", \"is the 3 to the left "
                "of the 7?\", \"where is the 3, seen from the 7?\" (its card says how often it is right). "
                "Other questions get a guess; a note says so where the words or the answer show it.")
    with gr.Row():
        with gr.Column():
            image = ui.ImageInput(label="Image")
            questions = gr.Textbox("how many digits are there?", lines=3, label="Questions (one per line)",
                                   max_length=task.MAX_QUESTIONS * (task.MAX_QUESTION_CHARACTERS + 1))
            model = ui.model_picker(task.TASK)
            backend = ui.backend_radio(task.TASK, model)
            top_k = gr.Slider(1, task.MAX_TOP_K, value=5, step=1, label="Top k answers")
            submit = gr.Button("Answer", variant="primary")
        with gr.Column():
            answers = gr.Dataframe(headers=["question", "answer", "score", "top k"], label="Answers", wrap=True,
                                   column_widths=["32%", "16%", "12%", "40%"])
            served = gr.Markdown()
    ui.model_examples(SPEC, model, [image, questions])

    ui.clear_on(submit.click, [answers, served])
    ui.clear_on(model.change, [answers, served])  # the last model's answer stayed under the new one's name
    submit.click(vqa, [image, questions, model, backend, top_k], [answers, served], api_name="vqa")


if __name__ == "__main__":
    ui.launch(demo)
