"""An attribution map drawn over the image it explains, with its colour scale, as a PNG-ready picture.

    picture = heatmaps.overlay(image, heat, title="saliency for 'tabby cat' (0.61)", scale="|d logit / d pixel|")

matplotlib's object API (no pyplot), so concurrent requests never share a figure.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

SIZE_INCHES, DPI = (8.0, 4.0), 100


def _figure(size_inches: tuple[float, float]):
    """A matplotlib figure on the Agg canvas; imported here, as matplotlib takes seconds to import
    (cold start) and most requests draw nothing."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=size_inches, dpi=DPI)
    FigureCanvasAgg(figure)
    return figure


# The colours saturate at this percentile of |value|, as captum's `visualize_image_attr` does (its
# outlier_perc=2): pixel maps of a photo have a few pixels far above the rest (integrated gradients on
# a cat's pupil), which would otherwise leave the rest of the map one colour.
SATURATE_AT_PERCENTILE = 98
PAD_INCHES = 0.4  # room above the title: a page's label badge covers the image's top-left corner


def overlay(image: np.ndarray, heat: np.ndarray, title: str, scale: str, signed: bool = False) -> Image.Image:
    """The image (H, W, 3 uint8) on the left; on the right `heat` (H, W) over it at 55% opacity, with a
    colour bar labelled `scale`. A signed map is centred on 0 (red: for the class, blue: against it);
    others run from their minimum. Both saturate at SATURATE_AT_PERCENTILE."""
    figure = _figure(SIZE_INCHES)
    plain, axes = figure.subplots(1, 2)
    plain.imshow(image, interpolation="nearest")
    plain.set_axis_off()
    plain.set_title("as the model sees it", fontsize=10)
    axes.imshow(image, interpolation="nearest")
    if signed:
        limit = float(np.percentile(np.abs(heat), SATURATE_AT_PERCENTILE)) or float(np.abs(heat).max()) or 1.0
        shown = axes.imshow(heat, cmap="RdBu_r", vmin=-limit, vmax=limit, alpha=0.55, interpolation="nearest")
    else:
        low, high = float(heat.min()), float(np.percentile(heat, SATURATE_AT_PERCENTILE))
        if high <= low:  # most of the map at its minimum (Grad-CAM of a small object): its whole range
            high = max(float(heat.max()), low + 1e-12)
        shown = axes.imshow(heat, cmap="inferno", vmin=low, vmax=high, alpha=0.55, interpolation="nearest")
    axes.set_axis_off()
    axes.set_title("the map over it", fontsize=10)
    figure.suptitle(title, fontsize=11)  # across the figure: over one panel a long title ran past the picture
    figure.colorbar(shown, ax=axes, fraction=0.046, pad=0.04).set_label(scale, fontsize=8)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight", pad_inches=PAD_INCHES)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def ascent(start: np.ndarray, reached: np.ndarray, scores: list[float], title: str) -> Image.Image:
    """Class visualisation: the plain start (H, W, 3 uint8), the image gradient ascent reached, and the
    label's softmax score after each step."""
    figure = _figure((10.0, 3.6))
    before, after, curve = figure.subplots(1, 3, gridspec_kw={"width_ratios": [1, 1, 1.4]})
    for axes, image, name in ((before, start, f"start (score {scores[0]:.3f})"),
                              (after, reached, f"after {len(scores) - 1} steps (score {scores[-1]:.3f})")):
        axes.imshow(image, interpolation="nearest")
        axes.set_xticks([])  # a frame without ticks: a white start is still seen as an image
        axes.set_yticks([])
        axes.set_title(name, fontsize=10)
    curve.plot(range(len(scores)), scores)
    curve.set_xlabel("step", fontsize=9)
    curve.set_ylabel("softmax score", fontsize=9)
    curve.set_ylim(0, 1.02)
    figure.suptitle(title, fontsize=11)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight", pad_inches=PAD_INCHES)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def label_colours(labels: list[str]) -> dict[str, str]:
    """A colour ("#rrggbb") for each distinct label, the same in every picture of one map."""
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    names = sorted(set(labels))
    palette = colormaps["tab10" if len(names) <= 10 else "tab20"]
    return {name: to_hex(palette(i % palette.N)) for i, name in enumerate(names)}


def thumbnail_map(points: np.ndarray, thumbnails: list[Image.Image], labels: list[str], title: str) -> Image.Image:
    """A 2-D map (N, 2) drawn with each image's thumbnail at its point, framed in its label's colour."""
    from matplotlib.offsetbox import AnnotationBbox, OffsetImage

    figure = _figure((9.0, 9.0))
    axes = figure.subplots()
    colours = label_colours(labels)
    for (x, y), thumbnail, label in zip(points, thumbnails, labels, strict=True):
        picture = OffsetImage(np.asarray(thumbnail.convert("RGB").resize((24, 24))), zoom=0.8)
        axes.add_artist(AnnotationBbox(picture, (x, y), frameon=True, pad=0.1, bboxprops={"edgecolor": colours[label]}))
    axes.scatter(points[:, 0], points[:, 1], s=0)  # sets the limits
    for name, colour in colours.items():
        axes.scatter([], [], color=colour, label=name)
    axes.legend(fontsize=8, loc="best", title="label", markerscale=1.5)
    axes.set_xticks([])
    axes.set_yticks([])
    axes.set_title(title, fontsize=11)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight", pad_inches=PAD_INCHES)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
