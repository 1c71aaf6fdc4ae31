"""An attribution map drawn over the image it explains, with its colour scale, as a PNG-ready picture.

    picture = heatmaps.overlay(image, heat, title="saliency for 'tabby cat' (0.61)", scale="|d logit / d pixel|")

matplotlib's object API (no pyplot), so concurrent requests never share a figure.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

SIZE_INCHES, DPI = (8.0, 4.0), 100


def overlay(image: np.ndarray, heat: np.ndarray, title: str, scale: str, signed: bool = False) -> Image.Image:
    """The image (H, W, 3 uint8) on the left; on the right `heat` (H, W) over it at 55% opacity, with a
    colour bar labelled `scale`. A signed map is centred on 0 (red: for the class, blue: against it);
    others run from their minimum."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # here: seconds to import (cold start)
    from matplotlib.figure import Figure

    figure = Figure(figsize=SIZE_INCHES, dpi=DPI)
    FigureCanvasAgg(figure)
    plain, axes = figure.subplots(1, 2)
    plain.imshow(image, interpolation="nearest")
    plain.set_axis_off()
    plain.set_title("as the model sees it", fontsize=10)
    axes.imshow(image, interpolation="nearest")
    if signed:
        limit = float(np.abs(heat).max()) or 1.0
        shown = axes.imshow(heat, cmap="RdBu_r", vmin=-limit, vmax=limit, alpha=0.55, interpolation="nearest")
    else:
        shown = axes.imshow(heat, cmap="inferno", alpha=0.55, interpolation="nearest")
    axes.set_axis_off()
    axes.set_title(title, fontsize=10)
    figure.colorbar(shown, ax=axes, fraction=0.046, pad=0.04).set_label(scale, fontsize=8)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight")
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
