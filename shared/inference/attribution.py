"""What an image classifier looks at: attribution maps for one image and one label, and the checks
that say whether a map means anything.

    from shared.inference import attribution
    heat = attribution.attribute(loaded, pixels, target, "gradcam")            # (H, W), the model's input grid
    heat = attribution.attribute(loaded, pixels, target, "occlusion", forward=logits_on_onnx, window=8, stride=4)
    curves = attribution.deletion_curves(forward, pixels, target, heat)        # most salient first vs random

The maps come from maintained libraries, called as their docs show: captum's Saliency,
NoiseTunnel (SmoothGrad), IntegratedGradients and Occlusion, and pytorch-grad-cam's GradCAM on an
architecture's last convolutional stage (ViT: the last block's tokens reshaped to the patch grid).
`pixels` are the model's own input (processor output, one image); the baseline that hides a pixel
is 0 there, the processor's mean colour. Gradient methods need torch; occlusion and the deletion
curves need only forward passes, so they run batched on any backend (`forward`).
"""

from __future__ import annotations

import copy
import dataclasses
import threading
from collections.abc import Callable

import numpy as np
import torch

from shared.errors import UserError, shown
from shared.models.loader import LoadedModel

# method -> what its map shows (the colour scale's label)
METHODS = {
    "saliency": "|d logit / d pixel| (max over colours)",
    "smoothgrad": "SmoothGrad: |d logit / d pixel| averaged over noisy copies",
    "integrated-gradients": "integrated gradients from the mean colour (summed over colours)",
    "gradcam": "Grad-CAM on the last stage (scaled 0-1 by pytorch-grad-cam)",
    "occlusion": "drop of the logit when a grey patch covers the pixel",
}
GRADIENT_METHODS = ("saliency", "smoothgrad", "integrated-gradients", "gradcam")
# Not a map of one image but what the model draws for a label (shared/inference/class_visualisation.py).
CLASS_VISUALISATION = "class-visualisation"
CHOICES = (*METHODS, CLASS_VISUALISATION)
# SmoothGrad's noise, a fraction of the input's range (Smilkov et al. 2017, who picked 10-20% by eye on
# ImageNet models): 30% here, the smallest level where the deletion check on 50 training digits stops
# improving (docs/explain/variants.py). At 15% the embedded digits model scores its noisy copies almost
# as it scores the digits (0.98 vs 0.99): they hardly leave the point plain saliency looks at (at 30%: 0.83).
SMOOTHGRAD_SAMPLES, SMOOTHGRAD_NOISE = 10, 0.3
IG_STEPS = 32
BATCH = 8  # images per forward pass for occlusion and the deletion curves
DELETION_STEPS = 10
# Grad-CAM hooks the layer of a model that every request shares: its backward leaves gradients on the
# shared weights, which it clears. One Grad-CAM at a time (milliseconds to a second each) is cheaper
# than a copy of the model per request.
HOOKED = threading.Lock()


def on_this_thread(hook):
    """`hook` for a module every request shares, called only for the forward passes of the thread that
    made it: another request's forward at the same moment (a classification, in the batching thread)
    fires it too, and added its images to an embedding map (an IndexError) and its activations to a
    Grad-CAM's (found by the hostile client)."""
    owner = threading.get_ident()

    def hook_of_owner(*args):
        return hook(*args) if threading.get_ident() == owner else None

    return hook_of_owner


def _vit_tokens_to_grid(tokens: torch.Tensor) -> torch.Tensor:
    """ViT's (N, 1 + h*w, C) tokens as an (N, C, h, w) map, the class token dropped."""
    side = int(round((tokens.shape[1] - 1) ** 0.5))
    return tokens[:, 1:, :].reshape(tokens.shape[0], side, side, tokens.shape[2]).permute(0, 3, 1, 2)


# config.model_type -> (the layer Grad-CAM reads, how its output becomes an (N, C, h, w) map). The last
# stage, as Selvaraju et al. advise, even where it is a 4 x 4 grid (32 px inputs): on digits-convnext
# the finer stages rank pixels worse, not better (README, docs/explain/variants.py).
CAM_LAYERS: dict[str, tuple[Callable, Callable | None]] = {
    "convnext": (lambda m: m.convnext.encoder.stages[-1], None),
    "resnet": (lambda m: m.resnet.encoder.stages[-1], None),
    "efficientnet": (lambda m: m.efficientnet.encoder.top_activation, None),
    "vit": (lambda m: m.vit.layers[-1].layernorm_before, _vit_tokens_to_grid),
}


def check_method(loaded: LoadedModel, method: str, backend: str) -> str:
    """Refuse, with one sentence, a method this model or backend cannot give."""
    if method not in CHOICES:
        raise UserError(f"Unknown method {shown(method)}; choose one of: {', '.join(CHOICES)}.")
    if method in (*GRADIENT_METHODS, CLASS_VISUALISATION) and backend != "torch":
        raise UserError(f"{method} needs the model's gradients, which only the torch backend gives: choose torch, "
                        f"or occlusion (forward passes only) on {backend}.")
    model_type = loaded.model.config.model_type
    if method == "gradcam" and model_type not in CAM_LAYERS:
        raise UserError(f"Grad-CAM needs to know the last convolutional or attention stage, known here for "
                        f"{', '.join(CAM_LAYERS)} models only, and {loaded.entry.name} is a {model_type}: "
                        "choose saliency, smoothgrad, integrated-gradients or occlusion.")
    return method


SMALL_INPUT = 64  # px: the embedded digits models (32 px) cost ~1/1000 of a 224 px Hub model per pass


def default_window(side: int) -> tuple[int, int]:
    """Occlusion's window and stride for an input `side` px wide: a quarter of it, moved by an eighth
    on small inputs (7 x 7 = 49 positions) and by a quarter on larger ones (4 x 4 = 16). With the
    deletion curves in fifths (`deletion_steps`) a request is then 1 + 16 + 10 forward passes on a
    224 px image: about 7.6 s for ViT-B/16 on 2 cores (README: how measured); 49 positions and
    tenths would be 70 passes, about 20 s."""
    return max(1, side // 4), max(1, side // (8 if side <= SMALL_INPUT else 4))


def deletion_steps(side: int) -> int:
    """The deletion curves' resolution in an explain request: tenths on small inputs, fifths on
    larger ones, whose forward passes cost a thousand times more."""
    return DELETION_STEPS if side <= SMALL_INPUT else DELETION_STEPS // 2


def check_window(window: int | None, stride: int | None, side: int) -> tuple[int, int]:
    default = default_window(side)
    window, stride = window or default[0], stride or default[1]
    for name, value in (("window", window), ("stride", stride)):
        if int(value) != value or value < 1:
            raise UserError(f"The occlusion {name} must be a whole number of pixels, at least 1 (got {value}).")
    if window > side:
        raise UserError(f"The occlusion window ({window} px) is larger than the model's input ({side} x {side} px); "
                        f"choose at most {side}.")
    if stride > window:
        raise UserError(f"The occlusion stride ({stride} px) is larger than its window ({window} px), so some "
                        "pixels would never be covered; choose a stride of at most the window.")
    return int(window), int(stride)


class Logits(torch.nn.Module):
    """The model as the libraries want it: pixels in, a logits tensor out."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values.to(self.model.dtype)).logits.float()


def attribute(loaded: LoadedModel, pixels: torch.Tensor, target: int, method: str,
              forward: Callable | None = None, window: int | None = None, stride: int | None = None) -> np.ndarray:
    """The map of `method` for class index `target` on `pixels` (1, 3, H, W): an (H, W) array,
    larger where the pixel matters more (integrated gradients: signed, evidence for the class > 0).

    `forward` (pixels -> logits, no gradients needed) runs occlusion; the torch model by default.
    """
    from captum.attr import IntegratedGradients, NoiseTunnel, Occlusion, Saliency  # here: the CLI and hub start faster

    logits = Logits(loaded.model).eval()
    pixels = pixels.to(loaded.device)
    if method == "saliency":
        return _channels_max(Saliency(logits).attribute(pixels, target=target, abs=True))
    if method == "smoothgrad":
        spread = SMOOTHGRAD_NOISE * float(pixels.max() - pixels.min())
        with torch.random.fork_rng(devices=[]):  # the same request draws the same noise; others' draws untouched
            torch.manual_seed(0)
            return _channels_max(NoiseTunnel(Saliency(logits)).attribute(
                pixels, nt_type="smoothgrad", nt_samples=SMOOTHGRAD_SAMPLES, nt_samples_batch_size=BATCH,
                stdevs=spread, target=target, abs=True))
    if method == "integrated-gradients":
        return _array(IntegratedGradients(logits).attribute(
            pixels, baselines=0.0, target=target, n_steps=IG_STEPS, internal_batch_size=BATCH).sum(dim=1))
    if method == "gradcam":
        return _gradcam(loaded, logits, pixels, target)
    if method == "occlusion":
        window, stride = check_window(window, stride, min(pixels.shape[-2:]))
        with torch.no_grad():
            return _array(Occlusion(forward or logits).attribute(
                pixels, sliding_window_shapes=(3, window, window), strides=(3, stride, stride), baselines=0.0,
                target=target, perturbations_per_eval=BATCH)[:, 0])
    raise UserError(f"Unknown method {shown(method)}; choose one of: {', '.join(METHODS)}.")


def _gradcam(loaded: LoadedModel, logits: Logits, pixels: torch.Tensor, target: int) -> np.ndarray:
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    layer, reshape = CAM_LAYERS[loaded.model.config.model_type]
    with HOOKED, GradCAM(model=logits, target_layers=[layer(loaded.model)], reshape_transform=reshape) as cam:
        hooks = cam.activations_and_grads
        for handle in hooks.handles:  # the library's hooks again, for this thread's passes only
            handle.remove()
        hooks.handles = [hook_layer.register_forward_hook(on_this_thread(save)) for hook_layer in cam.target_layers
                         for save in (hooks.save_activation, hooks.save_gradient)]
        heat = cam(input_tensor=pixels, targets=[ClassifierOutputTarget(target)])[0]
        loaded.model.zero_grad(set_to_none=True)  # its backward left gradients on every weight of the shared model
        return heat


def _channels_max(attributions: torch.Tensor) -> np.ndarray:
    return _array(attributions.max(dim=1).values)


def _array(attributions: torch.Tensor) -> np.ndarray:
    return attributions[0].detach().float().cpu().numpy()


def class_scores(forward: Callable, images: torch.Tensor, target: int) -> np.ndarray:
    """Softmax score of `target` for each image, BATCH images per forward pass."""
    with torch.no_grad():
        logits = torch.cat([forward(images[i:i + BATCH]) for i in range(0, len(images), BATCH)])
    return torch.softmax(logits.float(), dim=-1)[:, target].cpu().numpy()


def deletion_curves(forward: Callable, pixels: torch.Tensor, target: int, heat: np.ndarray,
                    steps: int = DELETION_STEPS, seed: int = 0, fill: float = 0.0) -> dict[str, np.ndarray]:
    """The class score as pixels are hidden (set to `fill`, 0: the mean colour) in `steps` equal parts:
    the most salient first (by `heat`), and in a random order. A map that means something makes the
    first fall faster (Samek et al. 2017; Petsiuk et al. 2018, "deletion"). The two curves share their
    ends (nothing hidden, all hidden): 2 * steps forward passes in all. Another `fill` is for
    diagnosing the check (docs/explain/variants.py), not for the check itself."""
    salient, chance = np.argsort(-heat.ravel(), kind="stable"), np.random.default_rng(seed).permutation(heat.size)
    images = []
    for ranking, parts in ((salient, range(steps + 1)), (chance, range(1, steps))):
        for k in parts:
            hidden = np.zeros(heat.size, dtype=bool)
            hidden[ranking[: round(k * heat.size / steps)]] = True
            mask = torch.from_numpy(~hidden.reshape(heat.shape)).to(pixels.device, pixels.dtype)
            images.append(pixels[0] * mask + fill * (1 - mask))
    scores = class_scores(forward, torch.stack(images), target)
    first = scores[: steps + 1]
    return {"salient": first, "random": np.concatenate([first[:1], scores[steps + 1:], first[-1:]])}


def area(curve: np.ndarray) -> float:
    """Area under a deletion curve over the fraction hidden, 0 to 1 (lower: the map found what mattered)."""
    return float(np.trapezoid(curve, dx=1 / (len(curve) - 1)))


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of two maps (the model-randomisation check of Adebayo et al. 2018);
    0 when a map is constant (Grad-CAM of a random model is often all zero after its ReLU): no ranks to share."""
    from scipy.stats import spearmanr

    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    return float(spearmanr(a.ravel(), b.ravel()).statistic)


def randomised(loaded: LoadedModel, seed: int = 0) -> LoadedModel:
    """The same architecture with random weights: its maps should not look like the trained one's.

    Each weight tensor is redrawn from a normal distribution with that tensor's own mean and standard
    deviation, so every layer keeps the scale it was trained to have and loses what it learned.
    Initialising afresh (transformers' normal(0, 0.02), or PyTorch's `reset_parameters`) would not do:
    through EfficientNet's sixteen ReLU6 blocks either leaves the activations, logits and gradients at
    or near 0, a model whose maps are flat and so trivially "differ" from the trained one's."""
    model = copy.deepcopy(loaded.model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for weights in model.parameters():
            drawn = torch.randn(weights.shape, generator=generator, dtype=torch.float32)
            mean, std = weights.float().mean(), weights.float().std() if weights.numel() > 1 else 0.0
            weights.copy_((mean + std * drawn).to(weights.dtype))
    return dataclasses.replace(loaded, model=model.eval())


def as_seen(loaded: LoadedModel, pixels: torch.Tensor) -> np.ndarray:
    """The model's input (1, 3, H, W) back as an (H, W, 3) uint8 image: the photo as the model sees it,
    resized and cropped by its processor, which is the grid every map lives on."""
    mean = np.asarray(getattr(loaded.processor, "image_mean", None) or [0.5] * 3, dtype=np.float32)
    std = np.asarray(getattr(loaded.processor, "image_std", None) or [0.5] * 3, dtype=np.float32)
    image = pixels[0].detach().float().cpu().numpy().transpose(1, 2, 0) * std + mean
    return (np.clip(image, 0, 1) * 255).round().astype(np.uint8)


def sanity_check(loaded: LoadedModel, pixels: torch.Tensor, targets: list[int], method: str | Callable,
                 fill: float = 0.0) -> dict[str, float]:
    """Both checks of a method over a batch of images (N, 3, H, W), on the torch model:
    mean deletion areas (most salient first, random order), the share of images where the first is
    smaller, and the mean |rank correlation| of the maps with those of the same architecture re-initialised.
    `method`: a name of METHODS, or a function (loaded, image, target) -> map for a variant."""
    heat_of = method if callable(method) else lambda model, image, target: attribute(model, image, target, method)
    logits, random_model = Logits(loaded.model).eval(), randomised(loaded)
    salient, chance, faster, correlation = [], [], [], []
    for image, target in zip(pixels.split(1), targets, strict=True):
        heat = heat_of(loaded, image, target)
        curves = deletion_curves(logits, image, target, heat, fill=fill)
        salient.append(area(curves["salient"]))
        chance.append(area(curves["random"]))
        faster.append(salient[-1] < chance[-1])
        correlation.append(abs(rank_correlation(heat, heat_of(random_model, image, target))))
    return {"deletion_area": float(np.mean(salient)), "random_deletion_area": float(np.mean(chance)),
            "salient_faster_share": float(np.mean(faster)),
            "abs_rank_correlation_vs_random_model": float(np.mean(correlation))}


def least_salient_first_area(loaded: LoadedModel, pixels: torch.Tensor, targets: list[int], method: str) -> float:
    """A diagnosis beside the deletion check: the mean deletion area when the least salient pixels are hidden
    first (Samek et al. 2017's LeRF), the map's own order reversed. Whatever hiding pixels does to an image
    by itself (scattered grey pixels ruin a photo's texture; grey strokes still read as strokes) weighs on
    both orders alike, so a ranking that means something keeps the score longer this way than most
    salient first, even where it loses to the random order."""
    def reversed_map(model, image, target):
        return -attribute(model, image, target, method)

    return sanity_check(loaded, pixels, targets, reversed_map)["deletion_area"]
