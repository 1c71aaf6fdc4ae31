"""Judging generated digits against independent references, the way the field does.

The judge shares nothing with the generators: it is a different model family (scikit-learn's
PCA to 20 components, then an RBF support-vector classifier) fitted on the HELD-OUT split
only, on digits brought back to scikit-learn's 8x8 ink levels (4x4 area means). Its accuracy is
measured on the training split, which it never saw. Its features are the 20 PCA components.

- class accuracy: how often the judge reads a conditional sample as the asked class, per class;
- Fréchet distance in the judge's features (FID's formula), beside the real-vs-real floor;
- precision and recall (Kynkäänniemi et al. 2019): a sample is "real-looking" if it falls inside
  some real point's k-NN ball (k = 3); a real image is "covered" if it falls inside some sample's;
- diversity: mean pairwise L2 distance between samples at 8x8, over that of real digits.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
import torch
import torch.nn.functional as F
from scipy import linalg
from scipy.spatial.distance import cdist, pdist
from sklearn.decomposition import PCA
from sklearn.pipeline import Pipeline
from sklearn.svm import SVC

K_NEAREST = 3  # as in Kynkäänniemi et al. 2019


def ink8(images01: torch.Tensor) -> np.ndarray:
    """(B, 1, 32, 32) in [0, 1], ink dark on white -> (B, 64) ink levels 0-16, as scikit-learn's digits."""
    return (16 * (1 - F.adaptive_avg_pool2d(images01.float().cpu(), 8))).flatten(1).numpy()


@dataclass
class Judge:
    pipeline: Pipeline
    labels: list[str]

    def features(self, images01: torch.Tensor) -> np.ndarray:
        return self.pipeline[:-1].transform(ink8(images01))

    def predict(self, images01: torch.Tensor) -> list[str]:
        return [self.labels[i] for i in self.pipeline.predict(ink8(images01))]


def fit_judge(images01: torch.Tensor, label_ids: torch.Tensor, labels: list[str]) -> Judge:
    """Fit the judge on (held-out) images; deterministic."""
    pipeline = Pipeline([("pca", PCA(20, random_state=0)), ("svc", SVC())])
    pipeline.fit(ink8(images01), np.asarray(label_ids))
    return Judge(pipeline, list(labels))


def to_unit(pixels: np.ndarray) -> torch.Tensor:
    """uint8 (B, 32, 32) as the app returns them -> (B, 1, 32, 32) in [0, 1]."""
    return torch.from_numpy(pixels.astype(np.float32) / 255)[:, None]


@cache
def digits_held_out() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's held-out digits as this project renders them (shared/digits.py)."""
    from shared.data.digits import digit_image, split

    pixels, labels = split()["test"]
    images = np.stack([np.asarray(digit_image(p)) for p in pixels])
    return to_unit(images), torch.from_numpy(labels)


@cache
def digits_judge() -> Judge:
    """The judge for the embedded models: fitted on the held-out digits only."""
    images, label_ids = digits_held_out()
    return fit_judge(images, label_ids, [str(d) for d in range(10)])


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    mean_a, mean_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(cov_a @ cov_b)  # no `disp`: deprecated in SciPy 1.17, gone in 1.18
    return float(((mean_a - mean_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * covmean.real))


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = K_NEAREST) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) of `fake` against `real` features."""
    def radii(points):  # distance to the k-th nearest other point (column 0 is the point itself)
        return np.sort(cdist(points, points), axis=1)[:, k]

    across = cdist(fake, real)
    precision = (across <= radii(real)[None, :]).any(axis=1).mean()
    recall = (across.T <= radii(fake)[None, :]).any(axis=1).mean()
    return float(precision), float(recall)


def diversity(images01: torch.Tensor) -> float:
    """Mean pairwise L2 distance between images at 8x8 (ink levels 0-16)."""
    return float(pdist(ink8(images01)).mean())


def class_accuracy(predicted: list[str], requested: list[str]) -> float:
    return float(np.mean([p == r for p, r in zip(predicted, requested, strict=True)]))


def per_class(values: list[str], requested: list[str], labels: list[str]) -> dict[str, float]:
    """Class accuracy for each label."""
    return {label: class_accuracy([v for v, r in zip(values, requested, strict=True) if r == label],
                                  [label] * requested.count(label)) for label in labels if label in requested}
