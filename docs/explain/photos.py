"""The README's attribution pictures and sanity-check numbers on real photos, rebuilt:

    PYTHONPATH=. python docs/explain/photos.py      # a few minutes on 2 cores

Writes docs/explain/photo_cat-<method>.png with `demohub explain` on the embedded ImageNet classifier
efficientnet-lite0 (scikit-image's cat photo), and docs/explain/photos.json: both checks of every
method over the real photos that ship with scikit-image, scikit-learn and matplotlib, each explained
for the label the model gives it.
"""

import json
from pathlib import Path

import torch

from apps.classification import task
from shared.data.examples import IMAGENET_PHOTOS, PHOTOS
from shared.inference import attribution
from shared.inputs.images import decode_image
from shared.serving import cli

HERE = Path(__file__).resolve().parent
MODEL = "efficientnet-lite0"
EVALUATED = IMAGENET_PHOTOS



if __name__ == "__main__":
    torch.set_num_threads(1)
    for method in attribution.METHODS:
        cli.main(["explain", "classification", "--image", str(PHOTOS["cat"]), "--model", MODEL,
                  "--method", method, "--out", str(HERE / f"photo_cat-{method}.png")])
    loaded = task.MODELS.load(MODEL)
    images = [decode_image(path).image for path in EVALUATED.values()]
    batch = torch.from_numpy(task.preprocess(loaded, images)["pixel_values"])
    with torch.no_grad():
        targets = [int(i) for i in loaded.model(pixel_values=batch).logits.argmax(-1)]
    labels = {name: loaded.model.config.id2label[t] for name, t in zip(EVALUATED, targets, strict=True)}
    report = {"model": MODEL, "photos": labels}
    for method in attribution.METHODS:
        least = attribution.least_salient_first_area(loaded, batch, targets, method)
        report[method] = {**attribution.sanity_check(loaded, batch, targets, method), "least_salient_first_area": least}
    (HERE / "photos.json").write_text(json.dumps(report, indent=2) + "\n")
    print("| method | deletion area: salient first / random | salient first smaller on | "
          "abs. rank correlation vs random weights | least salient first |")
    print("| --- | --- | --- | --- | --- |")
    for method in attribution.METHODS:
        row = report[method]
        print(f"| {method} | {row['deletion_area']:.3f} / {row['random_deletion_area']:.3f} | "
              f"{row['salient_faster_share']:.0%} | {row['abs_rank_correlation_vs_random_model']:.2f} | "
              f"{row['least_salient_first_area']:.3f} |")
