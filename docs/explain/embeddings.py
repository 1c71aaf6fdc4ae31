"""The README's embedding-map picture and k-NN numbers, rebuilt:

    PYTHONPATH=. python docs/explain/embeddings.py      # about a minute on 2 cores

Writes docs/explain/embedding-map.png (the 360 held-out digits in the t-SNE map of digits-convnext's
penultimate layer) and docs/explain/embeddings.json: 5-NN accuracy on the held-out digits, the 1,437
training digits as the neighbours, in the embedding and in the model's input pixels, for the digits
as drawn and as users send them; and within the 2-D maps themselves (10-fold, held-out digits only).
"""

import json
from pathlib import Path

import numpy as np
import torch

from apps.classification import task
from shared.data.digits import as_users_draw, digit_image, split
from shared.inference import embeddings

HERE = Path(__file__).resolve().parent


def main() -> dict:
    torch.set_num_threads(1)
    loaded = task.MODELS.load("digits-convnext")
    data = split()

    def pixels(images):
        return torch.from_numpy(task.preprocess(loaded, images)["pixel_values"])

    train = pixels([digit_image(p).convert("RGB") for p in data["train"][0]])
    train_labels, test_labels = data["train"][1], data["test"][1]
    train_features = embeddings.penultimate(loaded, train)
    report = {"k": embeddings.K, "train_digits": len(train), "held_out_digits": len(test_labels)}
    sets = as_users_draw([digit_image(p) for p in data["test"][0]])
    for name, images in sets.items():
        test = pixels(images)
        labels = np.tile(test_labels, len(images) // len(test_labels))  # shifted sets: 8 copies, digit order
        report[name] = {
            "embedding": embeddings.knn_accuracy(train_features, train_labels, embeddings.penultimate(loaded, test),
                                                 labels),
            "pixels": embeddings.knn_accuracy(train.flatten(1).numpy(), train_labels, test.flatten(1).numpy(), labels)}
    test = pixels(sets["dark_on_white"])
    report["in_2d_map"] = {
        "embedding": embeddings.cross_validated_accuracy(embeddings.tsne(embeddings.penultimate(loaded, test)),
                                                       test_labels),
        "pixels": embeddings.cross_validated_accuracy(embeddings.tsne(test.flatten(1).numpy()), test_labels)}
    task.embedding_map().images["map"].save(HERE / "embedding-map.png")
    (HERE / "embeddings.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
