"""The README's attribution pictures and sanity-check numbers, rebuilt:

    PYTHONPATH=. python docs/explain/make.py        # about 5 minutes on 2 cores

Writes docs/explain/digit_7-<method>.png (and digit_7-robust-<method>.png, saliency and Grad-CAM
of digits-convnext-robust) with `demohub explain`, and docs/explain/sanity.json: both checks of
every method over the first 50 held-out digits, for the embedded digits-convnext, its PGD-trained
twin digits-convnext-robust, and a tiny ResNet (microsoft/resnet-50's architecture, shrunk)
trained for seconds on the digits.
"""

import json
import tempfile
from pathlib import Path

import torch

from apps.classification import task
from shared.data.digits import digit_image, split
from shared.inference import attribution
from shared.models import registry
from shared.serving import cli
from tests.tiny import make_tiny_digits_classifier

HERE = Path(__file__).resolve().parent
DIGIT = HERE.parent.parent / "apps" / "classification" / "examples" / "digit_7.png"
N = 50

if __name__ == "__main__":
    torch.set_num_threads(1)
    for method in attribution.METHODS:
        cli.main(["explain", "classification", "--image", str(DIGIT), "--method", method,
                  "--out", str(HERE / f"digit_7-{method}.png")])
    for method in ("saliency", "gradcam"):  # the two that fail the deletion check on digits-convnext only
        cli.main(["explain", "classification", "--image", str(DIGIT), "--model", "digits-convnext-robust",
                  "--method", method, "--out", str(HERE / f"digit_7-robust-{method}.png")])
    with tempfile.TemporaryDirectory() as scratch:
        folder, accuracy = make_tiny_digits_classifier("resnet", Path(scratch) / "tiny-resnet-digits", 5, 1e-2)
        models = {"digits-convnext": "digits-convnext", "digits-convnext-robust": "digits-convnext-robust",
                  "tiny-resnet-digits": registry.add_local("classification", folder).name}
        pixels, labels = split()["test"]
        report = {"images": N, "tiny_resnet_held_out_accuracy": accuracy}
        for shown, name in models.items():
            loaded = task.MODELS.load(name)
            images = [digit_image(p).convert("RGB") for p in pixels[:N]]
            batch = torch.from_numpy(task.preprocess(loaded, images)["pixel_values"])
            targets = [int(x) for x in labels[:N]]
            report[shown] = {method: {**attribution.sanity_check(loaded, batch, targets, method),
                                      "least_salient_first_area": attribution.least_salient_first_area(
                                          loaded, batch, targets, method)}
                             for method in attribution.METHODS}
    (HERE / "sanity.json").write_text(json.dumps(report, indent=2) + "\n")
    print("| model | method | deletion area: salient first / random | salient first smaller on | "
          "abs. rank correlation vs random weights | least salient first |")
    print("| --- | --- | --- | --- | --- | --- |")
    for shown in models:
        for method, row in report[shown].items():
            print(f"| {shown} | {method} | {row['deletion_area']:.3f} / {row['random_deletion_area']:.3f} | "
                  f"{row['salient_faster_share']:.0%} | {row['abs_rank_correlation_vs_random_model']:.2f} | "
                  f"{row['least_salient_first_area']:.3f} |")
