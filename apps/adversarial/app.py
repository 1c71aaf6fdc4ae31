"""Adversarial examples: perturb an image until a classifier changes its mind, and see whether
the attack survives the ONNX backend and transfers to a second model.

    python apps/adversarial/app.py             # this app alone, as a Space runs it
    demohub serve                              # with every other app, at /adversarial

API: `Client(url).predict(image=handle_file(path), model=..., attack="pgd", eps=0.03, steps=10,
step_size=0, target="none", transfer_model=..., api_name="/adversarial")`.
"""

import gradio as gr
import pandas as pd

from apps.adversarial import task
from apps.adversarial.spec import SPEC
from shared.errors import UserError
from shared.inputs.checks import number_in
from shared.serving import ui


def _labels(rows: list[dict]) -> dict:
    return {row["label"]: row["score"] for row in rows}


def result_image(caption: str) -> gr.Image:
    """A result picture with its caption written below it."""
    with gr.Column(min_width=160):
        image = gr.Image(label=caption, show_label=False, type="pil", format="png", height=240,
                         buttons=["download"], elem_classes="adversarial-result")
        gr.Markdown(f"**{caption}**", elem_classes="adversarial-caption")
    return image


@ui.user_errors
def adversarial(image, model, attack, eps, steps, step_size, target, transfer_model):
    result = task.attack(image, model=model, attack=attack, eps=eps, steps=steps, step_size=step_size,
                         target=target, transfer_model=transfer_model, fallback=True)
    answer, images = result.answer, result.images
    verdict = "fooled" if answer["success"] else "not fooled"
    steps = ui.counted(answer["steps_run"], "step")
    lines = [f"**{verdict}** · L-inf {answer['linf']:.4f} · L2 {answer['l2']:.3f} · {steps}"]
    if "onnx_after" in answer:
        lines.append(f"ONNX backend on the adversarial image: **{answer['onnx_after']['label']}**")
    if "transfer" in answer:
        t = answer["transfer"]
        fooled = ("transfers" if answer["success"] else "it is fooled, though the attacked model is not") \
            if t["fooled"] else "not fooled"
        lines.append(f"{t['model']}: **{t['before']['label']}** on the original, **{t['after']['label']}** "
                     f"on the adversarial image ({fooled})")
    summary = "\n\n".join(lines) + "\n\n" + ui.served_line(result)
    shown = (ui.enlarged(images[k], 224) for k in ("original", "perturbation", "adversarial"))
    return (*shown, _labels(answer["before"]), _labels(answer["after"]), summary)


# the slider for each attack's budget: L-inf in pixel units, PGD-L2's radius over the whole image
EPS_SLIDERS = {"linf": dict(maximum=0.3, value=0.05, step=0.005, label="Epsilon: the L-inf budget"),
               "l2": dict(maximum=5.0, value=1.0, step=0.05, label="Epsilon: the L2 radius")}


def eps_slider(attack: str) -> gr.Slider:
    if attack == "deepfool":
        return gr.Slider(label="Epsilon (not used: DeepFool takes the smallest step it finds)")
    return gr.Slider(**EPS_SLIDERS[task.norm_of(attack)])


@ui.user_errors
def robustness(model, attack, eps):
    eps = number_in("eps", eps, 0.0, task.MAX_EPS[task.norm_of(attack)])
    if eps == 0:
        raise UserError("Set epsilon above 0: the curve sweeps epsilon from 0 to twice the value set.")
    curve = task.robustness_curve(model=model, attack=attack, max_eps=2 * eps)
    caption = f"Accuracy of {curve[0]['model']} under {attack} on {curve[0]['measured_on']}."
    if len(curve) < task.CURVE_POINTS:
        caption += (f" The curve stopped at the {task.TIME_LIMIT_S:.0f} s limit after {len(curve)} of "
                    f"{task.CURVE_POINTS} epsilons, at {curve[-1]['eps']}: fgsm, or fewer steps, draws all of them.")
    return pd.DataFrame(curve), caption


with gr.Blocks(title="Adversarial examples") as demo:
    gr.Markdown("# Adversarial examples\nA small, targeted change of the pixels that changes a classifier's answer. "
                "Sizes are in pixel units: 1.0 is the full range of a channel.")
    with gr.Row():
        with gr.Column():
            image = ui.ImageInput(label="Image", format="png")
            sketch, use_drawing = ui.digit_sketchpad("Use the drawing")
            model = ui.model_picker(task.MODELS.task, label="Classifier to attack")
            attack = gr.Radio(list(task.ATTACKS), value="pgd", label="Attack")
            # 0.05: enough for PGD to fool digits-convnext on both example digits (0.03 fooled only the 7),
            # and not the PGD-trained model (trained at 0.03), which the transfer check shows
            eps = gr.Slider(0.0, **EPS_SLIDERS["linf"])
            steps = gr.Slider(1, task.MAX_STEPS, value=10, step=1, label="Steps")
            step_size = gr.Slider(0.0, 0.1, value=0.0, step=0.001, label="Step size (0: 2.5 x eps / steps)")
            target = gr.Textbox("none", label="Target label (none: untargeted)", max_lines=1, max_length=100)
            transfer = ui.model_dropdown(task.MODELS.task, label="Second model (transfer)",
                                         value=task.transfer_model_for(model.value),
                                         info="follows the model attacked: another that knows the same kind of image")
            run = gr.Button("Attack", variant="primary")
        with gr.Column():
            with gr.Row():  # captions below the pictures: a label on top would sit under their buttons
                original, perturbation, adversarial_image = (
                    result_image(caption) for caption in ("Original (model input)", "Perturbation (amplified)",
                                                          "Adversarial"))
            with gr.Row():
                before = gr.Label(label="Before", num_top_classes=5)
                after = gr.Label(label="After", num_top_classes=5)
            summary = gr.Markdown()
    with gr.Accordion("Robustness curve: accuracy against epsilon (a digits model: on 100 held-out digits; a photo "
                      "model: the share of the shipped photos that keep their clean top label)", open=False):
        curve_button = gr.Button("Compute for this model and attack (up to 2 x epsilon)")
        curve = gr.LinePlot(x="eps", y="accuracy", y_lim=[0, 1], label="Accuracy")
        curve_caption = gr.Markdown()
    ui.model_examples(SPEC, model, [image])
    model.change(task.transfer_model_for, model, transfer, api_visibility="private")
    attack.change(eps_slider, attack, eps, api_visibility="private")

    results = [original, perturbation, adversarial_image, before, after, summary]
    ui.clear_on(run.click, results)
    ui.clear_on(model.change, results)  # the last model's answer stayed under the new one's name
    run.click(adversarial, [image, model, attack, eps, steps, step_size, target, transfer],
              [original, perturbation, adversarial_image, before, after, summary], api_name="adversarial")
    use_drawing.click(ui.drawing, sketch, image, api_visibility="private").success(
        adversarial, [image, model, attack, eps, steps, step_size, target, transfer],
        [original, perturbation, adversarial_image, before, after, summary], api_visibility="private")
    ui.clear_on(curve_button.click, [curve, curve_caption])
    curve_button.click(robustness, [model, attack, eps], [curve, curve_caption], api_name="robustness",
                       api_visibility="undocumented")


if __name__ == "__main__":
    ui.launch(demo)
