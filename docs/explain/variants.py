"""Why plain saliency, SmoothGrad and Grad-CAM did not pass the deletion check on digits-convnext,
measured: the variants of each method in the literature, and what the check itself can see there.

    PYTHONPATH=. python docs/explain/variants.py     # about 2 minutes on 2 cores

The same 50 held-out digits and checks as make.py (`attribution.sanity_check`), each variant's map
from captum or pytorch-grad-cam; a few rows change the digits (white on black, training digits) or,
to diagnose the check and not to replace it, the colour that hides a pixel. Writes
docs/explain/variants.json and prints the README's table.
"""

import json
import tempfile
from pathlib import Path

import numpy as np
import torch
from captum.attr import InputXGradient, NoiseTunnel, Saliency
from PIL import ImageOps
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from apps.classification import task
from shared.data.digits import digit_image, split
from shared.inference import attribution
from shared.models import registry
from tests.tiny import make_tiny_digits_classifier

HERE = Path(__file__).resolve().parent
N = 50
PAPER = 1.0  # the white of the page after the processor's normalisation (mean 0.5, std 0.5)


def gradient(absolute: bool, over_colours: str):
    def heat(loaded, image, target):
        grads = Saliency(attribution.Logits(loaded.model).eval()).attribute(image, target=target, abs=absolute)[0]
        return (grads.sum(0) if over_colours == "sum" else grads.max(0).values).detach().numpy()
    return heat


def input_x_gradient(loaded, image, target):
    """gradient x (input - the mean colour), the first-order change of the logit when a pixel is hidden."""
    products = InputXGradient(attribution.Logits(loaded.model).eval()).attribute(image, target=target)
    return products[0].sum(0).detach().numpy()


def smoothgrad(noise: float, kind: str = "smoothgrad"):
    def heat(loaded, image, target):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            grads = NoiseTunnel(Saliency(attribution.Logits(loaded.model).eval())).attribute(
                image, nt_type=kind, nt_samples=attribution.SMOOTHGRAD_SAMPLES, nt_samples_batch_size=attribution.BATCH,
                stdevs=noise * float(image.max() - image.min()), target=target, abs=True)
        return grads.max(dim=1).values[0].detach().numpy()
    return heat


def gradcam(stage: int, first_block: bool = False):
    def heat(loaded, image, target):
        encoder = getattr(loaded.model, loaded.model.config.model_type).encoder
        layer = encoder.stages[stage].layers[0] if first_block else encoder.stages[stage]
        with GradCAM(model=attribution.Logits(loaded.model).eval(), target_layers=[layer]) as cam:
            return cam(input_tensor=image, targets=[ClassifierOutputTarget(target)])[0]
    return heat


def random_grid(cells: int):
    """A random cells x cells map, upsampled: Grad-CAM's blocky structure without its information."""
    rng = np.random.default_rng(0)

    def heat(loaded, image, target):
        grid = torch.from_numpy(rng.random((1, 1, cells, cells), dtype=np.float32))
        return torch.nn.functional.interpolate(grid, size=image.shape[-2:], mode="bilinear")[0, 0].numpy()
    return heat


def digits(loaded, which: str = "test", inverted: bool = False):
    pixels, labels = split()[which]
    images = [digit_image(p).convert("RGB") for p in pixels[:N]]
    images = [ImageOps.invert(image) for image in images] if inverted else images
    return torch.from_numpy(task.preprocess(loaded, images)["pixel_values"]), [int(x) for x in labels[:N]]


def scores(loaded, pixels, targets) -> dict[str, float]:
    """The label's mean softmax score with the ink, or the paper, set to the mean grey (the check's
    hiding colour), and on SmoothGrad's noisy copies (10 of each digit, as SmoothGrad draws)."""
    logits = attribution.Logits(loaded.model).eval()
    ink = pixels.mean(dim=1, keepdim=True) < 0
    copies, labels = pixels.repeat(attribution.SMOOTHGRAD_SAMPLES, 1, 1, 1), targets * attribution.SMOOTHGRAD_SAMPLES
    spread = float(pixels.max() - pixels.min())
    torch.manual_seed(0)
    seen = {"as drawn": (pixels, targets), "ink hidden (grey)": (pixels * ~ink, targets),
            "paper hidden (grey)": (pixels * ink, targets),
            **{f"noise {noise:.0%}": (copies + noise * spread * torch.randn_like(copies), labels)
               for noise in (0.15, 0.3)}}
    with torch.no_grad():
        return {name: float(torch.softmax(logits(x), -1)[torch.arange(len(y)), y].mean())
                for name, (x, y) in seen.items()}


if __name__ == "__main__":
    torch.set_num_threads(1)
    convnext = task.MODELS.load("digits-convnext")
    held_out, inverted, training = digits(convnext), digits(convnext, inverted=True), digits(convnext, "train")
    rows = [  # (method, variant, digits, hiding colour, map)
        ("saliency", "\\|gradient\\|, max over colours (Simonyan et al.; the method)", "held out", "grey",
         gradient(True, "max")),
        ("saliency", "\\|gradient\\|, sum over colours", "held out", "grey", gradient(True, "sum")),
        ("saliency", "signed gradient (captum abs=False)", "held out", "grey", gradient(False, "max")),
        ("saliency", "signed gradient (captum abs=False)", "white on black", "grey", gradient(False, "max")),
        ("saliency", "\\|gradient\\|, max over colours", "white on black", "grey", gradient(True, "max")),
        ("saliency", "\\|gradient\\|, max over colours", "held out", "paper", gradient(True, "max")),
        ("(other method)", "input x gradient (captum InputXGradient), summed", "held out", "grey", input_x_gradient),
        ("(other method)", "input x gradient (captum InputXGradient), summed", "white on black", "grey",
         input_x_gradient),
        *[("smoothgrad", f"noise {noise:.0%}", "training", "grey", smoothgrad(noise))
          for noise in (0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5)],
        ("smoothgrad", "noise 15% (before)", "held out", "grey", smoothgrad(0.15)),
        ("smoothgrad", "SmoothGrad-Squared, noise 15%", "held out", "grey", smoothgrad(0.15, "smoothgrad_sq")),
        ("smoothgrad", "noise 30% (now)", "held out", "grey", smoothgrad(0.3)),
        ("smoothgrad", "SmoothGrad-Squared, noise 30%", "held out", "grey", smoothgrad(0.3, "smoothgrad_sq")),
        ("smoothgrad", "noise 15% (before)", "white on black", "grey", smoothgrad(0.15)),
        ("smoothgrad", "noise 30% (now)", "white on black", "grey", smoothgrad(0.3)),
        ("gradcam", "last stage, 4 x 4 (the method)", "held out", "grey", gradcam(-1)),
        ("gradcam", "last stage's first block, 4 x 4", "held out", "grey", gradcam(-1, first_block=True)),
        ("gradcam", "stage 2, 8 x 8", "held out", "grey", gradcam(-2)),
        ("gradcam", "stage 1, 16 x 16", "held out", "grey", gradcam(-3)),
        ("(control)", "a random 4 x 4 map, upsampled", "held out", "grey", random_grid(4)),
        ("gradcam", "last stage, 4 x 4", "white on black", "grey", gradcam(-1)),
        ("gradcam", "last stage, 4 x 4", "held out", "paper", gradcam(-1)),
        ("gradcam", "stage 2, 8 x 8", "held out", "paper", gradcam(-2)),
        ("(control)", "a random 4 x 4 map, upsampled", "held out", "paper", random_grid(4)),
    ]
    sets = {"held out": held_out, "white on black": inverted, "training": training}
    report = {"images": N, "digits-convnext": [], "scores": {"digits-convnext": scores(convnext, *held_out)}}
    for method, variant, which, colour, heat in rows:
        checked = attribution.sanity_check(convnext, *sets[which], heat, fill=PAPER if colour == "paper" else 0.0)
        report["digits-convnext"].append({"method": method, "variant": variant, "digits": which,
                                          "hidden with": colour, **checked})
        print(json.dumps(report["digits-convnext"][-1]), flush=True)
    with tempfile.TemporaryDirectory() as scratch:
        folder, _ = make_tiny_digits_classifier("resnet", Path(scratch) / "tiny-resnet-digits", 5, 1e-2)
        resnet = task.MODELS.load(registry.add_local("classification", folder).name)
        resnet_digits = digits(resnet)
        report["scores"]["tiny-resnet-digits"] = scores(resnet, *resnet_digits)
        report["tiny-resnet-digits"] = [
            {"method": method, "variant": variant, **attribution.sanity_check(resnet, *resnet_digits, heat)}
            for method, variant, heat in (("gradcam", "last stage, 4 x 4", gradcam(-1)),
                                          ("gradcam", "stage 1, 8 x 8", gradcam(-2)),
                                          ("smoothgrad", "noise 15% (before)", smoothgrad(0.15)),
                                          ("smoothgrad", "noise 30% (now)", smoothgrad(0.3)))]
    (HERE / "variants.json").write_text(json.dumps(report, indent=2) + "\n")
    print("| method | variant | digits | hidden with | deletion area: salient first / random | "
          "salient first smaller on | abs. rank correlation vs re-initialised |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for row in report["digits-convnext"]:
        print(f"| {row['method']} | {row['variant']} | {row['digits']} | {row['hidden with']} | "
              f"{row['deletion_area']:.3f} / {row['random_deletion_area']:.3f} | {row['salient_faster_share']:.0%} | "
              f"{row['abs_rank_correlation_vs_random_model']:.2f} |")
    for row in report["tiny-resnet-digits"]:
        print(f"| tiny ResNet: {row['method']} | {row['variant']} | held out | grey | {row['deletion_area']:.3f} / "
              f"{row['random_deletion_area']:.3f} | {row['salient_faster_share']:.0%} | "
              f"{row['abs_rank_correlation_vs_random_model']:.2f} |")
    print(json.dumps(report["scores"], indent=2))
