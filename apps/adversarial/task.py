"""Adversarial examples, the recipe: image -> [0, 1] pixels at the model's input size -> attack
-> the adversarial image, checked on torch, on the ONNX backend and on a second model.

    from apps.adversarial.task import attack
    attack("cat.png", model="digits-convnext", attack="pgd", eps=0.03, steps=10).answer["after"]

Any classifier the classification app loads can be attacked; its normalisation runs inside the
attacked model, so perturbations and their sizes are in pixel units (1.0 = full range).
"""

from __future__ import annotations

import time

import numpy as np
import torch
from PIL import Image

from apps.adversarial import attacks
from apps.classification import task as classification
from shared import timing
from shared.contract import Result, beyond_what_it_knows
from shared.data.digits import digit_image, labels_are_digits, split
from shared.data.examples import IMAGENET_PHOTOS
from shared.errors import ModelUnavailable, UserError, shown
from shared.inference import backends, gpu
from shared.inputs.checks import number_in, whole_number
from shared.inputs.images import decode_image
from shared.models import registry
from shared.models.loader import LoadedModel

MODELS = classification.MODELS  # the models this app attacks: every classifier
TRANSFER_MODEL = registry.setting("adversarial", "transfer_model")  # the second model a page tries by default
ATTACKS = ("fgsm", "pgd", "pgd-l2", "deepfool")
MAX_EPS = {"linf": 0.5, "l2": 20.0}
MAX_STEPS = 100
TIME_LIMIT_S = timing.TIME_LIMIT_S  # a request never holds the CPU longer than this
onnx_form = classification.onnx_form  # the attacked classifier's graph


def norm_of(name: str) -> str:
    return "l2" if name in ("pgd-l2", "deepfool") else "linf"


def classifier_of(loaded: LoadedModel) -> attacks.PixelSpaceClassifier:
    processor = loaded.processor
    return attacks.PixelSpaceClassifier(loaded.model, processor.image_mean, processor.image_std).to(loaded.device)


def pixels_of(loaded: LoadedModel, images: list[Image.Image]) -> torch.Tensor:
    """Images resized and cropped as the model expects, left in [0, 1] (not normalised)."""
    images = classification.as_the_model_reads(loaded, images)  # a digit framed as Classify frames it
    pixels = loaded.processor(images=images, do_normalize=False, return_tensors="pt")["pixel_values"]
    return pixels.to(loaded.device, torch.float32)


def predicted(loaded: LoadedModel, classifier, pixels: torch.Tensor, k: int) -> list[list[dict]]:
    with torch.inference_mode():
        logits = classifier(pixels).float().cpu().numpy()
    return classification.top_k_labels(loaded, logits, k)


def run_attack(classifier, pixels, labels, name: str, eps: float, steps: int, step_size: float,
               targeted: bool, deadline: float) -> tuple[torch.Tensor, int]:
    if name == "fgsm":
        return attacks.fgsm(classifier, pixels, labels, eps, targeted), 1
    if name in ("pgd", "pgd-l2"):
        return attacks.pgd(classifier, pixels, labels, eps, steps, step_size, targeted, norm_of(name), deadline)
    return attacks.deepfool(classifier, pixels, steps=steps, deadline=deadline,
                            project=lambda adversarial: saved_adversarial(pixels, adversarial, budget=False))


def check_settings(loaded: LoadedModel, name: str, eps, steps, step_size, target) -> tuple:
    if name not in ATTACKS:
        raise UserError(f"Unknown attack {shown(name)}; choose one of: {', '.join(ATTACKS)}.")
    eps = number_in("eps", eps, 0.0, MAX_EPS[norm_of(name)])
    steps = whole_number("steps", steps, 1, MAX_STEPS)
    step_size = number_in("step_size", step_size or 2.5 * eps / steps, 0.0, MAX_EPS[norm_of(name)])
    labels = list(loaded.model.config.id2label.values())
    if target not in (None, "", "none") and target not in labels:
        raise UserError(f"{loaded.entry.name} has no label {shown(target)}; pick one of its labels, e.g. "
                        f"{', '.join(labels[:10])}.")
    if target not in (None, "", "none") and name == "deepfool":
        raise UserError("DeepFool is untargeted; choose FGSM or PGD for a targeted attack.")
    return eps, steps, step_size, None if target in (None, "", "none") else target


def read_back(image: Image.Image, device: torch.device) -> torch.Tensor:
    """An 8-bit RGB image as pixels in [0, 1] (1, 3, H, W), at its own size: `as_image` undone."""
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)[None].to(device)


def as_image(pixels: torch.Tensor) -> Image.Image:
    array = (pixels[0].permute(1, 2, 0).clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8)
    return Image.fromarray(array)


def in_8_bits(pixels: torch.Tensor) -> torch.Tensor:
    """Pixels rounded to the 256 levels an image file holds."""
    return (pixels.clamp(0, 1) * 255).round() / 255


def saved_adversarial(original: torch.Tensor, adversarial: torch.Tensor, budget: bool) -> torch.Tensor:
    """The adversarial image as an 8-bit file holds it. Under an eps budget each pixel's change is
    rounded toward the original (rounding to nearest took an eps of 0.03, 7.65 levels, to 8 levels),
    so no pixel moves further than the attack moved it and both norms stay within eps. DeepFool has
    no budget: its steps are rounded to nearest, and it steps on until the 8-bit image crosses."""
    levels = (adversarial - original) * 255
    levels = torch.trunc(levels + 1e-4 * torch.sign(levels)) if budget else levels.round()
    return (original + levels / 255).clamp(0, 1)


@timing.whole_request
def attack(image, model: str | None = None, attack: str = "pgd", eps: float = 0.03, steps: int = 10,
           step_size: float = 0.0, target: str | None = None, transfer_model: str | None = None,
           top_k: int = 5, fallback: bool = False) -> Result:
    """Attack one image: Result with the top-k `before` and `after`, the perturbation's sizes,
    `success`, the answers of the ONNX backend and of `transfer_model` on the adversarial image,
    and as images the model's input, the perturbation and the adversarial image."""
    decoded = decode_image(image)
    top_k = classification.check_top_k(top_k)
    loaded = MODELS.load(model, fallback=fallback)
    eps, steps, step_size, target = check_settings(loaded, attack, eps, steps, step_size, target)
    classifier = classifier_of(loaded)
    pixels = in_8_bits(pixels_of(loaded, [decoded.image]))  # the original as it is shown and saved
    before = gpu.on_gpu(predicted)(loaded, classifier, pixels, top_k)[0]
    if target == before[0]["label"]:
        raise UserError(f"{loaded.entry.name} already reads this image as {shown(target)}; pick another target "
                        "label, or none to make it read anything else.")
    label2id = {v: k for k, v in loaded.model.config.id2label.items()}
    wanted = torch.tensor([label2id[target or before[0]["label"]]], device=pixels.device)

    started = time.monotonic()
    adversarial, steps_run = gpu.on_gpu(run_attack)(classifier, pixels, wanted, attack, eps, steps, step_size,
                                                    targeted=target is not None, deadline=started + TIME_LIMIT_S)
    seconds = time.monotonic() - started
    # every answer is about the image the user gets
    adversarial = saved_adversarial(pixels, adversarial, budget=attack != "deepfool")
    after = gpu.on_gpu(predicted)(loaded, classifier, adversarial, top_k)[0]
    delta = adversarial - pixels
    success = after[0]["label"] == target if target else after[0]["label"] != before[0]["label"]
    notes = [*decoded.notes, *beyond_what_it_knows(loaded, decoded.image)]
    if steps_run < steps and attack in ("pgd", "pgd-l2"):  # FGSM is one step; DeepFool stops once fooled
        notes.append(f"stopped after {steps_run} of {steps} steps at the {TIME_LIMIT_S:.0f} s time limit")
    if attack == "deepfool":
        notes.append("DeepFool has no budget: it takes the smallest step across the nearest boundary it finds, "
                     "so epsilon and the step size were not used")

    answer = {"before": before, "after": after, "linf": float(delta.abs().max()),
              "l2": float(delta.flatten().norm()), "success": bool(success), "attack": attack,
              "target": target, "steps_run": steps_run, "seconds": round(seconds, 3)}
    images = {"original": as_image(pixels), "adversarial": as_image(adversarial),
              "perturbation": as_image(0.5 + delta / (2 * max(float(delta.abs().max()), 1e-8)))}
    if loaded.entry.onnx:
        run = backends.runner(loaded, "onnx", onnx_form(loaded))
        # the saved 8-bit image at its own size: the processor's centre crop (crop_pct 0.875) would zoom it again
        saved = read_back(images["adversarial"], pixels.device)
        onnx_logits = run({"pixel_values": classifier.normalise(saved).cpu().numpy()})["logits"]
        answer["onnx_after"] = classification.top_k_labels(loaded, onnx_logits, 1)[0][0]
    if transfer_model and MODELS.resolve(transfer_model).name == loaded.entry.name:
        notes.append(f"transfer not checked: the second model is {loaded.entry.name}, the model attacked here")
    elif transfer_model:
        try:
            answer["transfer"] = transfer(images["original"], images["adversarial"], transfer_model)
        except ModelUnavailable as err:  # the attack itself stands; say why the transfer check is missing
            notes.append(f"transfer not checked: {err}")
    return Result(loaded, "torch", seconds * 1e3, answer, images=images, notes=notes)


def transfer(original: Image.Image, adversarial: Image.Image, model: str) -> dict:
    """A second model's top label on the attacked model's input and on its adversarial copy. Both are
    already that model's crop: each is only resized to the second model's input, never cropped again
    (a centre crop would zoom the perturbation away from the first model's pixels)."""
    loaded = MODELS.load(model)
    side = classification.input_side(loaded)
    pixels = torch.cat([read_back(image.resize((side, side), Image.Resampling.BICUBIC), loaded.device)
                        for image in (original, adversarial)])
    before, after = (labels[0] for labels in gpu.on_gpu(predicted)(loaded, classifier_of(loaded), pixels, 1))
    return {"model": loaded.entry.name, "before": before, "after": after, "fooled": after["label"] != before["label"]}


def transfer_model_for(model: str | None) -> str:
    """The second model a page tries by default for `model`: the registry's choice where it knows the
    same kind of image, else the first other classifier that does (a Hub photo model for efficientnet-lite0)."""
    entry = registry.get(MODELS.task, model)
    candidates = [registry.get(MODELS.task, TRANSFER_MODEL), *registry.entries(MODELS.task)]
    return next((c.name for c in candidates if c.name != entry.name and c.knows == entry.knows), TRANSFER_MODEL)


def digits_evaluation_set(loaded: LoadedModel, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `n` held-out digits as pixels and label ids, for models that know the digits."""
    images, labels = split()["test"]
    label2id = {v: k for k, v in loaded.model.config.id2label.items()}
    pixels = pixels_of(loaded, [digit_image(p).convert("RGB") for p in images[:n]])
    return pixels, torch.tensor([label2id[str(lab)] for lab in labels[:n]], device=pixels.device)


def photos_evaluation_set(loaded: LoadedModel) -> tuple[torch.Tensor, torch.Tensor]:
    """The photos the packages ship of things ImageNet names, labelled by the model's own clean answer:
    no labelled photo set is reachable offline, so a photo model's curve is the share of photos
    whose top label an attack of each size leaves alone."""
    pixels = pixels_of(loaded, [decode_image(path).image for path in IMAGENET_PHOTOS.values()])
    with torch.no_grad():  # not inference_mode: the attacks take gradients through a loss on these labels
        return pixels, classifier_of(loaded)(pixels).argmax(1)


def robust_accuracy(loaded: LoadedModel, pixels: torch.Tensor, labels: torch.Tensor, name: str, eps: float,
                    steps: int = 10, deadline: float | None = None) -> float | None:
    """Accuracy on untargeted adversarial versions of `pixels` (eps 0: clean accuracy), or None
    if the attack did not finish by `deadline`."""
    classifier = classifier_of(loaded)
    if eps > 0:
        pixels, steps_run = run_attack(classifier, pixels, labels, name, eps, steps, 2.5 * eps / steps, False,
                                       deadline or time.monotonic() + 3600)
        if name != "fgsm" and steps_run < steps:
            return None
    with torch.inference_mode():
        return float((classifier(pixels).argmax(1) == labels).float().mean())


CURVE_POINTS = 6


def robustness_curve(model: str | None = None, attack: str = "pgd", max_eps: float = 0.1, points: int = CURVE_POINTS,
                     n: int = 100, steps: int = 10) -> list[dict]:
    """Accuracy against epsilon on `n` held-out digits (a photo model: the share of the shipped photos that
    keep their clean top label, `photos_evaluation_set`); the points that fit in the time limit."""
    if attack == "deepfool":
        raise UserError("The robustness curve sweeps epsilon; DeepFool has none. Choose FGSM or PGD.")
    loaded = MODELS.load(model)
    max_eps, steps, _, _ = check_settings(loaded, attack, max_eps, steps, 0, None)
    points = whole_number("points", points, 2, 11)
    n = whole_number("n", n, 10, 360)
    if labels_are_digits(loaded.model.config.id2label):
        pixels, labels = digits_evaluation_set(loaded, n)
        measured_on = f"{n} held-out digits"
    else:
        pixels, labels = photos_evaluation_set(loaded)
        measured_on = f"{len(labels)} shipped photos, against the model's clean top label"
    deadline = time.monotonic() + TIME_LIMIT_S
    curve = []
    for eps in np.linspace(0, max_eps, points):
        accuracy = robust_accuracy(loaded, pixels, labels, attack, float(eps), steps, deadline)
        if accuracy is None:
            break
        curve.append({"eps": round(float(eps), 4), "accuracy": accuracy, "model": loaded.entry.name,
                      "measured_on": measured_on})
    return curve
