"""Real photos that ship inside installed packages: the apps' examples and the tests' inputs."""

from __future__ import annotations

import importlib.util
from pathlib import Path


def package_file(package: str, file: str) -> Path:
    """A file inside an installed package, found without importing it (matplotlib takes seconds: cold start)."""
    return Path(importlib.util.find_spec(package).origin).parent / file


def _skimage_photo(file: str) -> Path:
    return package_file("skimage", f"data/{file}")


PHOTOS = {
    "cat": _skimage_photo("chelsea.png"),
    "coffee": _skimage_photo("coffee.png"),
    "astronaut": _skimage_photo("astronaut.png"),
    "rocket": _skimage_photo("rocket.jpg"),
    "grace_hopper": package_file("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
}

# Every photo of a thing ImageNet has a label for that these packages ship (textures, microscopy,
# astronomy and greyscale test charts left out): the photo models' evaluation and embedding-map set.
IMAGENET_PHOTOS = {
    **PHOTOS,
    "motorcycle": _skimage_photo("motorcycle_left.png"),
    "clock": _skimage_photo("clock_motion.png"),
    "cameraman": _skimage_photo("camera.png"),
    "coins": _skimage_photo("coins.png"),
    "china": package_file("sklearn", "datasets/images/china.jpg"),
    "flower": package_file("sklearn", "datasets/images/flower.jpg"),
}
