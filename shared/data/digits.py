"""scikit-learn's digits as an image folder: the embedded classifier's data.

    demohub data digits --out data/digits

writes `train/<label>/*.png` and `test/<label>/*.png`: a fixed, stratified 80/20 split
(`train_test_split(..., test_size=0.2, stratify=labels, random_state=0)`) of the 1,797 8x8
digits, upscaled to 32x32 and drawn dark on white like ink on paper.

`accuracy_as_users_draw(predict)` measures a classifier on the held-out digits as users send
them: dark on white, white on black (the MNIST convention), and shifted by 1/8 of the side.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

SIDE = 32
SPLIT_SEED = 0
LABELS = [str(d) for d in range(10)]
# one source pixel (1/8 of the side) in x, y or both: the 8 directions
SHIFTS = [(dx, dy) for dx in (-1, 0, 1) for dy in (-1, 0, 1) if (dx, dy) != (0, 0)]


def labels_are_digits(id2label: dict) -> bool:
    """Whether a model's labels are the ten digits (it can be measured on the held-out digits or scenes)."""
    return sorted(id2label.values()) == LABELS


def digit_image(pixels: np.ndarray, side: int = SIDE) -> Image.Image:
    """An 8x8 array of ink levels 0-16 as a `side`x`side` grayscale image, ink dark on white."""
    ink = Image.fromarray((255 - pixels.reshape(8, 8) * (255 / 16)).round().astype(np.uint8), mode="L")
    return ink.resize((side, side), Image.Resampling.BICUBIC)


def split() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    from sklearn.datasets import load_digits  # here: scikit-learn takes seconds to import (cold start)
    from sklearn.model_selection import train_test_split

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


def shifted(image: Image.Image, dx: int, dy: int) -> Image.Image:
    """`image` moved by (dx, dy) pixels; the uncovered border takes the background (corner) colour."""
    canvas = Image.new(image.mode, image.size, image.getpixel((0, 0)))
    canvas.paste(image, (dx, dy))
    return canvas


def as_users_draw(images: Sequence[Image.Image]) -> dict[str, list[Image.Image]]:
    """Dark-on-white digits as the four sets users send: as drawn, inverted, and both shifted by
    1/8 of the side, every digit in each of the 8 directions (SHIFTS order, then digit order, so
    a shifted set's labels are the digits' labels repeated 8 times)."""
    images = [image.convert("RGB") for image in images]
    moved = [shifted(image, dx * image.width // 8, dy * image.height // 8) for dx, dy in SHIFTS for image in images]
    return {"dark_on_white": images, "white_on_black": [ImageOps.invert(im) for im in images],
            "shifted": moved, "shifted_white_on_black": [ImageOps.invert(im) for im in moved]}


def held_out() -> tuple[list[Image.Image], list[int]]:
    """The 360 held-out digits, rendered as `demohub data digits` writes them, and their labels."""
    pixels, labels = split()["test"]
    return [digit_image(p) for p in pixels], [int(label) for label in labels]


def accuracy_as_users_draw(predict: Callable[[list[Image.Image]], Sequence[int]],
                           images: Sequence[Image.Image] | None = None,
                           labels: Sequence[int] | None = None) -> dict[str, float]:
    """Accuracy of `predict` (RGB images -> class indices) on each set of `as_users_draw`;
    by default on the held-out digits, whose class index is the digit."""
    if images is None:
        images, labels = held_out()
    labels = np.asarray(labels)
    return {name: round(float(np.mean(np.asarray(predict(batch)) == np.tile(labels, len(batch) // len(labels)))), 4)
            for name, batch in as_users_draw(images).items()}
