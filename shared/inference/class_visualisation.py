"""What a classifier thinks a class looks like: the input that maximises its score for one label,
found by gradient ascent from a plain image (Simonyan et al. 2013) and kept image-like by the usual
regularisers (Yosinski et al. 2015; Olah et al. 2017, "Feature Visualization"):

- the image is drawn at a quarter of the model's resolution and upsampled (a smooth parametrisation),
- random jitter (a shift of a few pixels) before each step, so no single pixel grid is exploited,
- a Gaussian blur every few steps,
- an L2 penalty on the distance from the plain start, within the range of real pixels.

    picture, scores = class_visualisation.ascend(logits, target=7, side=32, mean=..., std=..., style=DRAWN)
    # picture: (1, 3, side, side) in the model's input space; scores: the label's softmax score, start then each step

Plain torch and torchvision's gaussian_blur: the loop is short, and the library that offers it for
torch (lucent) is no longer maintained.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as Fn
from torchvision.transforms.v2 import functional as F


@dataclass(frozen=True)
class Style:
    """Where the ascent starts and how the image is drawn: grey ink on white paper (the digits models
    read drawings, either polarity) or colour from the mean colour (photos)."""
    grey: bool
    start: float  # the plain image, as a pixel value from 0 (black) to 1 (white)
    steps: int = 100
    learning_rate: float = 0.1
    jitter: int = 2  # px
    blur_every: int = 4  # steps
    blur_sigma: float = 0.5  # px of the drawn (quarter-resolution) image
    l2: float = 0.2  # weight of the squared distance from the start, in the model's normalised units


DRAWN = Style(grey=True, start=1.0)
PHOTO = Style(grey=False, start=0.5, l2=0.01)


def ascend(logits: torch.nn.Module, target: int, side: int, mean, std, style: Style = DRAWN,
           seed: int = 0) -> tuple[torch.Tensor, list[float]]:
    """The input (1, 3, side, side) that gradient ascent on `target`'s logit reaches from `style`'s plain
    image (plus faint noise drawn with `seed`), and the label's softmax score at the start and after each step."""
    device = next(logits.parameters()).device
    mean = torch.as_tensor(mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    std = torch.as_tensor(std, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    generator = torch.Generator().manual_seed(seed)
    drawn = max(2, side // 4)
    start = torch.full((1, 1 if style.grey else 3, drawn, drawn), style.start)
    paint = (start + 0.01 * torch.randn(start.shape, generator=generator)).to(device).requires_grad_(True)  # 0-1
    start = start.to(device)

    def model_input(values: torch.Tensor) -> torch.Tensor:
        image = Fn.interpolate(values, size=(side, side), mode="bilinear", align_corners=False)
        return (image.expand(-1, 3, -1, -1) - mean) / std

    optimiser = torch.optim.Adam([paint], lr=style.learning_rate)
    scores = [_score(logits, model_input(start), target)]
    for step in range(style.steps):
        dy, dx = (int(v) for v in torch.randint(-style.jitter, style.jitter + 1, (2,), generator=generator))
        logit = logits(torch.roll(model_input(paint), shifts=(dy, dx), dims=(2, 3)))[0, target]
        loss = -logit + style.l2 * (paint - start).pow(2).sum()
        (paint.grad,) = torch.autograd.grad(loss, paint)  # the shared model's own .grad stays untouched
        optimiser.step()
        with torch.no_grad():
            if style.blur_every and (step + 1) % style.blur_every == 0:
                paint.copy_(F.gaussian_blur(paint, kernel_size=3, sigma=style.blur_sigma))
            paint.clamp_(0, 1)
        scores.append(_score(logits, model_input(paint), target))
    return model_input(paint).detach(), scores


def _score(logits: torch.nn.Module, pixels: torch.Tensor, target: int) -> float:
    with torch.no_grad():
        return float(torch.softmax(logits(pixels).float(), dim=-1)[0, target])
