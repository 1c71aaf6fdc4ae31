"""GAN/VAE sampling, the recipe: seed -> latents -> generator (or VAE decoder) -> image grid.

    from apps.generative.task import generate
    generate(model="digits-gan", seed=0, n=16, label="7", backend="onnx").images["grid"]

The same seed gives the same grid on either backend. For the GAN, `truncation` is the bound of
the truncated normal the latents come from (smaller: cleaner, less varied); for the VAE it is
the temperature that scales prior samples. Left out, each takes its model's default
(`TRUNCATION_DEFAULTS`): the GAN's 3 keeps almost the whole normal its card is measured on (at 1,
the old default, its samples' recall fell from 0.50 to 0.05 and the Fréchet distance rose from 41
to 100: README, Generative).
"""

from __future__ import annotations

import time

import numpy as np
import torch
from PIL import Image

from apps.generative import models
from apps.generative.models import ConditionalGenerator
from shared import timing
from shared.contract import Result, beyond_what_it_knows
from shared.errors import UserError, shown
from shared.inference import backends, export
from shared.inference.graphs import Feeds, OnnxForm, OnnxSpec
from shared.inputs.checks import number_in, whole_number
from shared.inputs.images import decode_image
from shared.models.loader import LoadedModel, TaskModels

TASK = "generative"
MODELS = TaskModels(TASK, models.from_pretrained, local_facts=models.local_facts)
MAX_SAMPLES = 64
MAX_SEED = 2**32 - 1
TRUNCATION_RANGE = (0.05, 3.0)
# GAN: a normal cut at +-3 (0.27% of values redrawn), as its card measures; VAE: prior samples at temperature 1
TRUNCATION_DEFAULTS = {"gan": 3.0, "vae": 1.0}
MAX_INTERPOLATION_STEPS = 16
SHOW_SCALE = 4  # 32x32 digits are shown at 128x128


def is_gan(loaded: LoadedModel) -> bool:
    return isinstance(loaded.model, ConditionalGenerator)


def is_photo_autoencoder(loaded: LoadedModel) -> bool:
    """diffusers' AutoencoderTiny (TAESD): encodes and decodes photos."""
    return type(loaded.model).__name__ == "AutoencoderTiny"


def load_sampler(model: str | None, fallback: bool = False) -> LoadedModel:
    """A model that can draw samples (the registry says which: a photo autoencoder cannot)."""
    entry = MODELS.resolve(model)
    if not entry.samples:
        raise UserError(f"{entry.name} reconstructs images and cannot sample: use it to encode an image.")
    return MODELS.load(entry.name, fallback=fallback)


def onnx_spec(loaded: LoadedModel) -> OnnxSpec:
    if is_gan(loaded):
        return OnnxSpec(("z", "labels"), ("images",), {"z": {0: "batch"}, "labels": {0: "batch"}})
    return OnnxSpec(("z",), ("images",), {"z": {0: "batch"}}, module="decoder")


def onnx_form(loaded: LoadedModel) -> OnnxForm:
    return export.single_graph(onnx_spec(loaded), lambda n: sample_feeds(loaded, n))


def check_seed(seed) -> int:
    return whole_number("seed", seed, 0, MAX_SEED)


def check_settings(n, truncation) -> tuple[int, float | None]:
    """`n`, and `truncation` (None: the model's default, see `truncation_for`)."""
    if truncation is not None:
        truncation = number_in("truncation", truncation, *TRUNCATION_RANGE)
    return whole_number("n", n, 1, MAX_SAMPLES), truncation


def truncation_for(loaded: LoadedModel, truncation: float | None) -> float:
    return TRUNCATION_DEFAULTS["gan" if is_gan(loaded) else "vae"] if truncation is None else truncation


def default_truncation(model: str | None) -> float:
    """The truncation a model of the picker samples at by default (the page's slider follows it)."""
    return TRUNCATION_DEFAULTS["vae" if MODELS.resolve(model).encodes else "gan"]


def label_ids(loaded: LoadedModel, label: str | None, n: int) -> np.ndarray:
    """The class of each sample: `label` for all, or every class in turn when None or "any".
    (The VAE is not conditional: its feeds have no labels, and these zeros go unused.)"""
    if not is_gan(loaded):
        return np.zeros(n, dtype=np.int64)
    labels = loaded.model.labels
    if label in (None, "", "any"):
        return np.arange(n, dtype=np.int64) % len(labels)
    if str(label) not in labels:
        raise UserError(f"This model has no label {shown(label)}; its labels are: {', '.join(labels)}.")
    return np.full(n, labels.index(str(label)), dtype=np.int64)


def latents(loaded: LoadedModel, seed: int, n: int, truncation: float) -> np.ndarray:
    dim = loaded.model.latent_dim
    if is_gan(loaded):
        from scipy.stats import truncnorm  # here: scipy.stats takes a second to import (cold start)

        return truncnorm.rvs(-truncation, truncation, size=(n, dim), random_state=seed).astype(np.float32)
    return (np.random.default_rng(seed).standard_normal((n, dim)) * truncation).astype(np.float32)


def feeds_for(loaded: LoadedModel, z: np.ndarray, labels: np.ndarray) -> Feeds:
    return {"z": z, "labels": labels} if is_gan(loaded) else {"z": z}


def sample_feeds(loaded: LoadedModel, batch_size: int) -> Feeds:
    return feeds_for(loaded, latents(loaded, 0, batch_size, 1.0), label_ids(loaded, None, batch_size))


def to_pixels(loaded: LoadedModel, images: np.ndarray) -> np.ndarray:
    """Model outputs (B, 1, 32, 32) -> uint8 (B, 32, 32), ink dark on white."""
    unit = (images + 1) / 2 if is_gan(loaded) else images
    return (np.clip(unit[:, 0], 0, 1) * 255).round().astype(np.uint8)


def grid(pixels: np.ndarray, columns: int | None = None) -> Image.Image:
    """Tiles of (B, H, W) uint8 side by side, `columns` a row, enlarged for the eye."""
    count, height, width = pixels.shape
    columns = columns or int(np.ceil(np.sqrt(count)))
    rows = int(np.ceil(count / columns))
    canvas = np.full((rows * (height + 2), columns * (width + 2)), 160, dtype=np.uint8)
    for i, tile in enumerate(pixels):
        top, left = (i // columns) * (height + 2) + 1, (i % columns) * (width + 2) + 1
        canvas[top: top + height, left: left + width] = tile
    image = Image.fromarray(canvas, mode="L")
    return image.resize((image.width * SHOW_SCALE, image.height * SHOW_SCALE), Image.Resampling.NEAREST)


def _run(loaded: LoadedModel, backend: str, z: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, float]:
    run_model = backends.runner(loaded, backend, onnx_form(loaded))
    started = time.perf_counter()
    images = run_model(feeds_for(loaded, z, labels))["images"]
    return to_pixels(loaded, images), (time.perf_counter() - started) * 1e3


@timing.whole_request
def generate(model: str | None = None, seed: int = 0, n: int = 16, label: str | None = None,
             truncation: float | None = None, backend: str = "torch", fallback: bool = False) -> Result:
    """A grid of `n` samples from `seed`: Result with `n`, and as images the `grid` (PIL) and the
    samples' `pixels` (n, 32, 32)."""
    seed, (n, truncation) = check_seed(seed), check_settings(n, truncation)
    loaded = load_sampler(model, fallback)
    truncation = truncation_for(loaded, truncation)
    labels = label_ids(loaded, label, n)
    pixels, latency_ms = _run(loaded, backend, latents(loaded, seed, n, truncation), labels)
    notes = [] if is_gan(loaded) or label in (None, "", "any") else ["the VAE is not class-conditional: the label "
                                                                      "was not used"]
    return Result(loaded, backend, latency_ms, {"n": n}, images={"grid": grid(pixels), "pixels": pixels},
                  notes=notes)


def slerp(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    """Spherical interpolation: stays where Gaussian latents live, unlike a straight line."""
    omega = np.arccos(np.clip(np.dot(a / np.linalg.norm(a), b / np.linalg.norm(b)), -1, 1))
    if omega < 1e-6:
        return (1 - t) * a + t * b
    return (np.sin((1 - t) * omega) * a + np.sin(t * omega) * b) / np.sin(omega)


@timing.whole_request
def interpolate(model: str | None = None, seed: int = 0, seed_b: int = 1, steps: int = 8, label: str | None = None,
                truncation: float | None = None, backend: str = "torch", fallback: bool = False) -> Result:
    """A `strip` of `steps` images walking the latent space from `seed` to `seed_b`."""
    seed, seed_b = check_seed(seed), check_seed(seed_b)
    steps = whole_number("steps", steps, 2, MAX_INTERPOLATION_STEPS)
    _, truncation = check_settings(1, truncation)
    loaded = load_sampler(model, fallback)
    truncation = truncation_for(loaded, truncation)
    a, b = latents(loaded, seed, 1, truncation)[0], latents(loaded, seed_b, 1, truncation)[0]
    z = np.stack([slerp(a, b, t) for t in np.linspace(0, 1, steps)]).astype(np.float32)
    labels = label_ids(loaded, label, 1).repeat(steps)
    pixels, latency_ms = _run(loaded, backend, z, labels)
    return Result(loaded, backend, latency_ms, {"steps": steps},
                  images={"strip": grid(pixels, columns=steps), "pixels": pixels})


@torch.inference_mode()
@timing.whole_request
def reconstruct(image, model: str = "digits-vae", seed: int = 0, n: int = 8, truncation: float = 0.5,
                backend: str = "torch", fallback: bool = False) -> Result:
    """VAE: an uploaded image as the model sees it (`input`), its `reconstruction`, and `n` samples
    around its code (`neighbours`)."""
    decoded = decode_image(image)
    seed, (n, truncation) = check_seed(seed), check_settings(n, 0.5 if truncation is None else truncation)
    entry = MODELS.resolve(model)
    if not entry.encodes:
        raise UserError(f"{entry.name} has no encoder (a GAN only generates); pick a VAE to encode an image.")
    loaded = MODELS.load(entry.name, fallback=fallback, accepts=lambda default: default.encodes)
    if is_photo_autoencoder(loaded):
        return reconstruct_photo(loaded, decoded, seed, n, truncation, backend)
    gray = decoded.image.convert("L").resize((32, 32), Image.Resampling.BICUBIC)
    pixels = torch.from_numpy(np.asarray(gray, dtype=np.float32) / 255)[None, None].to(loaded.device, loaded.dtype)
    mean, _ = loaded.model.encode(pixels)
    code = mean.float().cpu().numpy()
    around = code + latents(loaded, seed, n, truncation)
    decoded_pixels, latency_ms = _run(loaded, backend, np.concatenate([code, around]).astype(np.float32),
                                      np.zeros(n + 1, dtype=np.int64))
    images = {"input": grid(np.asarray(gray)[None]), "reconstruction": grid(decoded_pixels[:1]),
              "neighbours": grid(decoded_pixels[1:])}
    return Result(loaded, backend, latency_ms, {}, images=images,
                  notes=[*decoded.notes, *beyond_what_it_knows(loaded, decoded.image)])


PHOTO_SIDE = 512  # TAESD works at any multiple of 8; this keeps a CPU request near a second


def reconstruct_photo(loaded: LoadedModel, decoded, seed: int, n: int, truncation: float, backend: str) -> Result:
    """TAESD: a photo through the Stable Diffusion latent space and back, and variations around it."""
    if backend != "torch":
        raise UserError(f"{loaded.entry.name} runs on the torch backend only.")
    photo = decoded.image
    scale = min(1.0, PHOTO_SIDE / max(photo.size))
    width, height = (max(8, round(side * scale / 8) * 8) for side in photo.size)
    photo = photo.resize((width, height), Image.Resampling.BICUBIC)
    pixels = torch.from_numpy(np.asarray(photo, dtype=np.float32) / 127.5 - 1).permute(2, 0, 1)[None]
    started = time.perf_counter()
    latent = loaded.model.encode(pixels.to(loaded.device, loaded.dtype)).latents
    noise = torch.from_numpy(np.random.default_rng(seed).standard_normal((n, *latent.shape[1:]), dtype=np.float32))
    codes = torch.cat([latent, latent + truncation * noise.to(latent.device, latent.dtype)])
    images = torch.cat([loaded.model.decode(code[None]).sample for code in codes])
    latency_ms = (time.perf_counter() - started) * 1e3
    frames = [Image.fromarray(((im.permute(1, 2, 0).float().cpu().numpy() + 1) * 127.5).clip(0, 255).astype(np.uint8))
              for im in images]
    images = {"input": photo, "reconstruction": frames[0], "neighbours": photo_grid(frames[1:])}
    return Result(loaded, backend, latency_ms, {}, images=images, notes=decoded.notes)


def photo_grid(frames: list[Image.Image], columns: int = 4) -> Image.Image:
    width, height = frames[0].size
    rows = -(-len(frames) // columns)
    canvas = Image.new("RGB", (columns * width, rows * height), (160, 160, 160))
    for i, frame in enumerate(frames):
        canvas.paste(frame, ((i % columns) * width, (i // columns) * height))
    return canvas.resize((canvas.width // 2, canvas.height // 2), Image.Resampling.BILINEAR)
