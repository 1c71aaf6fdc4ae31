"""Real photos that ship inside installed packages: the apps' examples and the tests' inputs."""

from __future__ import annotations

from pathlib import Path

import matplotlib.cbook
import skimage


def _skimage_photo(file: str) -> Path:
    return Path(skimage.__file__).parent / "data" / file


PHOTOS = {
    "cat": _skimage_photo("chelsea.png"),
    "coffee": _skimage_photo("coffee.png"),
    "astronaut": _skimage_photo("astronaut.png"),
    "rocket": _skimage_photo("rocket.jpg"),
    "grace_hopper": Path(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)),
}
