"""How a classifier arranges images in its feature space: the penultimate layer's vectors (what its
last linear layer reads), a 2-D map of them by scikit-learn's t-SNE, nearest neighbours, and the
k-NN accuracy that says whether the arrangement means anything.

    features = embeddings.penultimate(loaded, pixels)        # (N, D), pixels (N, 3, H, W) as the processor gives
    xy = embeddings.tsne(features)                           # (N, 2)
    embeddings.knn_accuracy(train_features, train_labels, test_features, test_labels)   # 5-NN accuracy
"""

from __future__ import annotations

import time

import numpy as np
import torch

from shared.errors import UserError
from shared.inference.attribution import on_this_thread
from shared.models.loader import LoadedModel

BATCH = 64
K = 5  # neighbours for the k-NN accuracy and the neighbours list
MIN_IMAGES = 5  # t-SNE needs a few points more than its neighbourhood


def penultimate(loaded: LoadedModel, pixels: torch.Tensor, deadline: float | None = None) -> np.ndarray:
    """The input of the model's `classifier` (the Hub classifiers' last layer) for each image: (N, D).
    Past `deadline` (a time.monotonic() value) it raises TimeoutError(how many images it had embedded)."""
    head = getattr(loaded.model, "classifier", None)
    if not isinstance(head, torch.nn.Module):
        raise UserError(f"{loaded.entry.name} has no `classifier` layer whose input is its embedding; "
                        "the embedding map needs one (ConvNeXt, ResNet, EfficientNet, ViT, Swin have it).")
    seen: list[torch.Tensor] = []
    # a hook on the model every request shares: it collects this thread's forward passes only
    with torch.no_grad():
        handle = head.register_forward_pre_hook(
            on_this_thread(lambda module, args: seen.append(args[0].flatten(1).float().cpu())))
        try:
            for start in range(0, len(pixels), BATCH):
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(start)
                batch = pixels[start:start + BATCH].to(loaded.device, loaded.model.dtype)
                loaded.model(pixel_values=batch)
        finally:
            handle.remove()
    return torch.cat(seen).numpy()


def tsne(features: np.ndarray, seed: int = 0) -> np.ndarray:
    """A 2-D map of `features` (N, D) in which near neighbours stay near (t-SNE, PCA start, seeded)."""
    from sklearn.manifold import TSNE

    if len(features) < MIN_IMAGES:
        raise UserError(f"An embedding map needs at least {MIN_IMAGES} images; got {len(features)}.")
    perplexity = min(30.0, (len(features) - 1) / 3)
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(features)


def neighbours(features: np.ndarray, k: int = K) -> tuple[np.ndarray, np.ndarray]:
    """For every image, the indices (N, k) of the `k` images nearest to it (itself left out) and their
    Euclidean distances (N, k), nearest first."""
    from sklearn.neighbors import NearestNeighbors

    # with no query, scikit-learn leaves each point itself out (not merely column 0: with duplicate
    # images, column 0 may be the duplicate and the image itself come second)
    distances, found = NearestNeighbors().fit(features).kneighbors(n_neighbors=min(k, len(features) - 1))
    return found, distances


def knn_accuracy(train: np.ndarray, train_labels, test: np.ndarray, test_labels, k: int = K) -> float:
    """Accuracy of a k-NN vote over `train` on `test`: high when images of a class sit together."""
    from sklearn.neighbors import KNeighborsClassifier

    return float(KNeighborsClassifier(n_neighbors=k).fit(train, train_labels).score(test, test_labels))


def cross_validated_accuracy(points: np.ndarray, labels, k: int = K) -> float:
    """The same vote within one set, 10-fold (each point by its k nearest in the other folds): for a 2-D map."""
    from sklearn.model_selection import cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    labels = np.asarray(labels)
    folds = min(10, int(np.bincount(np.unique(labels, return_inverse=True)[1]).min()))
    return float(cross_val_score(KNeighborsClassifier(n_neighbors=k), points, labels, cv=max(2, folds)).mean())
