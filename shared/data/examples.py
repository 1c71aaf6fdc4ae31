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
