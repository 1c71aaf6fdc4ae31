"""Judging generated digits offline, with the embedded digits classifier as the judge.

- Fréchet distance between generated and held-out real images in the judge's feature space
  (its pooled last-stage features): FID's formula with a judge that needs no download.
- Class accuracy: how often the judge assigns a conditional sample to the requested class.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from scipy import linalg

from apps.classification.task import MODELS as CLASSIFIERS


def to_pil(images01: torch.Tensor) -> list[Image.Image]:
    """(B, 1, H, W) in [0, 1] -> grayscale PIL images."""
    pixels = (images01.clamp(0, 1) * 255).round().to(torch.uint8).squeeze(1).cpu().numpy()
    return [Image.fromarray(p, mode="L") for p in pixels]


@torch.inference_mode()
def judge(images01: torch.Tensor, judge_name: str = "digits-convnext") -> tuple[np.ndarray, list[str]]:
    """The judge's features and predicted labels for (B, 1, H, W) images in [0, 1]."""
    loaded = CLASSIFIERS.load(judge_name)
    pixels = loaded.processor(images=[im.convert("RGB") for im in to_pil(images01)], return_tensors="pt")
    pixel_values = pixels["pixel_values"].to(loaded.device, loaded.dtype)
    base = getattr(loaded.model, loaded.model.base_model_prefix)
    features = base(pixel_values).pooler_output
    predicted = loaded.model.classifier(features).argmax(-1).tolist()
    return features.float().cpu().numpy(), [loaded.model.config.id2label[i] for i in predicted]


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    mean_a, mean_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean, _ = linalg.sqrtm(cov_a @ cov_b, disp=False)
    return float(((mean_a - mean_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * covmean.real))


def class_accuracy(predicted: list[str], requested: list[str]) -> float:
    return float(np.mean([p == r for p, r in zip(predicted, requested, strict=True)]))
