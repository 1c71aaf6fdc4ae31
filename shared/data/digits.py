"""scikit-learn's digits as an image folder: the embedded classifier's data.

    demohub data digits --out data/digits

writes `train/<label>/*.png` and `test/<label>/*.png`: a fixed, stratified 80/20 split
(`train_test_split(..., test_size=0.2, stratify=labels, random_state=0)`) of the 1,797 8x8
digits, upscaled to 32x32 and drawn dark on white like ink on paper.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

SIDE = 32
SPLIT_SEED = 0


def digit_image(pixels: np.ndarray, side: int = SIDE) -> Image.Image:
    """An 8x8 array of ink levels 0-16 as a `side`x`side` grayscale image, ink dark on white."""
    ink = Image.fromarray((255 - pixels.reshape(8, 8) * (255 / 16)).round().astype(np.uint8), mode="L")
    return ink.resize((side, side), Image.Resampling.BICUBIC)


def split() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    digits = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        digits.data, digits.target, test_size=0.2, stratify=digits.target, random_state=SPLIT_SEED
    )
    return {"train": (x_train, y_train), "test": (x_test, y_test)}


def write_imagefolder(out: str | Path) -> Path:
    out = Path(out)
    for split_name, (images, labels) in split().items():
        for index, (pixels, label) in enumerate(zip(images, labels, strict=True)):
            folder = out / split_name / str(label)
            folder.mkdir(parents=True, exist_ok=True)
            digit_image(pixels).save(folder / f"{index:04d}.png")
    return out
