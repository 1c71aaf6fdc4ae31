"""The generative models: a class-conditional DCGAN and a convolutional VAE, for 32x32 images.

Both are plain `nn.Module`s with `huggingface_hub.PyTorchModelHubMixin`, so they save and load
as `config.json` + `model.safetensors` and have `from_pretrained` / `push_to_hub` like any Hub
model. Images are 1-channel in [-1, 1] (GAN) or [0, 1] (VAE), ink dark on white.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from huggingface_hub import PyTorchModelHubMixin
from safetensors.torch import load_model
from torch import nn
from torch.nn.utils import spectral_norm

from shared.errors import ModelUnavailable


def _up(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class ConditionalGenerator(nn.Module, PyTorchModelHubMixin, tags=["demohub", "gan"]):
    """z (B, latent_dim) and labels (B,) -> images (B, 1, 32, 32) in [-1, 1]."""

    model_type = "demohub-cgan"

    def __init__(self, latent_dim: int = 64, num_classes: int = 10, width: int = 128,
                 labels: list[str] | None = None):
        super().__init__()
        self.latent_dim, self.num_classes = latent_dim, num_classes
        self.labels = labels or [str(i) for i in range(num_classes)]
        self.embed = nn.Embedding(num_classes, latent_dim)
        self.project = nn.Sequential(nn.Linear(2 * latent_dim, width * 4 * 4), nn.BatchNorm1d(width * 4 * 4),
                                     nn.ReLU(inplace=True))
        self.width = width
        self.body = nn.Sequential(_up(width, width // 2), _up(width // 2, width // 4), _up(width // 4, width // 8),
                                  nn.Conv2d(width // 8, 1, 3, padding=1), nn.Tanh())

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.project(torch.cat([z, self.embed(labels)], dim=1)).view(-1, self.width, 4, 4)
        return {"images": self.body(h)}


class MinibatchStd(nn.Module):
    """Appends the batch's mean feature standard deviation as one more channel (Karras 2018): a
    critic that sees it can tell a batch of near-copies from real variety, so collapse costs."""

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        spread = h.std(dim=0, unbiased=False).mean().expand(len(h), 1, *h.shape[2:])
        return torch.cat([h, spread], dim=1)


class ProjectionDiscriminator(nn.Module, PyTorchModelHubMixin, tags=["demohub", "gan"]):
    """Images and labels -> realness scores; class information enters by projection (Miyato 2018).
    Spectral norm on every layer, and a minibatch-std channel before the last convolution."""

    model_type = "demohub-cgan-discriminator"

    def __init__(self, num_classes: int = 10, width: int = 32):
        super().__init__()
        self.features = nn.Sequential(
            spectral_norm(nn.Conv2d(1, width, 4, 2, 1)), nn.LeakyReLU(0.2),
            spectral_norm(nn.Conv2d(width, 2 * width, 4, 2, 1)), nn.LeakyReLU(0.2),
            spectral_norm(nn.Conv2d(2 * width, 4 * width, 4, 2, 1)), nn.LeakyReLU(0.2),
            MinibatchStd(), spectral_norm(nn.Conv2d(4 * width + 1, 4 * width, 3, 1, 1)), nn.LeakyReLU(0.2),
            nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.score = spectral_norm(nn.Linear(4 * width, 1))
        self.embed = spectral_norm(nn.Embedding(num_classes, 4 * width))

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        h = self.features(images)
        return self.score(h).squeeze(1) + (self.embed(labels) * h).sum(dim=1)


class _Decoder(nn.Module):
    def __init__(self, latent_dim: int, width: int):
        super().__init__()
        self.width = width
        self.project = nn.Linear(latent_dim, width * 4 * 4)
        self.body = nn.Sequential(
            nn.ReLU(), nn.ConvTranspose2d(width, width // 2, 4, 2, 1), nn.ReLU(),
            nn.ConvTranspose2d(width // 2, width // 4, 4, 2, 1), nn.ReLU(),
            nn.ConvTranspose2d(width // 4, 1, 4, 2, 1), nn.Sigmoid())

    def forward(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"images": self.body(self.project(z).view(-1, self.width, 4, 4))}


class ConvVAE(nn.Module, PyTorchModelHubMixin, tags=["demohub", "vae"]):
    """images (B, 1, 32, 32) in [0, 1] -> mean and log-variance of z; `decoder(z)` -> images."""

    model_type = "demohub-vae"

    def __init__(self, latent_dim: int = 16, width: int = 128):
        super().__init__()
        self.latent_dim = latent_dim
        self.encoder = nn.Sequential(
            nn.Conv2d(1, width // 4, 4, 2, 1), nn.ReLU(), nn.Conv2d(width // 4, width // 2, 4, 2, 1), nn.ReLU(),
            nn.Conv2d(width // 2, width, 4, 2, 1), nn.ReLU(), nn.Flatten(), nn.Linear(width * 4 * 4, 2 * latent_dim))
        self.decoder = _Decoder(latent_dim, width)

    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_variance = self.encoder(images).chunk(2, dim=1)
        return mean, log_variance

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        mean, log_variance = self.encode(images)
        z = mean + torch.randn_like(mean) * (0.5 * log_variance).exp() if self.training else mean
        return {"images": self.decoder(z)["images"], "mean": mean, "log_variance": log_variance}


MODEL_TYPES = {cls.model_type: cls for cls in (ConditionalGenerator, ConvVAE)}


def save(model: nn.Module, folder: Path) -> None:
    """`save_pretrained`, plus the model_type that `from_pretrained` below dispatches on."""
    model.save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": model.model_type}, indent=2) + "\n")


def local_facts(folder: Path) -> dict:
    """What a saved folder can do, for the registry: a GAN samples; a VAE samples and encodes; a
    photo autoencoder (TAESD) only encodes."""
    config = json.loads((folder / "config.json").read_text())
    model_type = config.get("model_type") or config.get("_class_name")
    if model_type == "AutoencoderTiny":
        return {"samples": False, "encodes": True}
    return {"encodes": model_type == ConvVAE.model_type}


def from_pretrained(folder: Path, entry, dtype: torch.dtype):
    """The loader's hook for this task: (model, processor=None) from a saved folder."""
    config = json.loads((folder / "config.json").read_text())
    model_type = config.get("model_type") or config.get("_class_name")
    if model_type == "AutoencoderTiny":  # madebyollin/taesd, through diffusers
        try:
            from diffusers import AutoencoderTiny
        except ImportError:
            raise ModelUnavailable(f"{entry.name} needs diffusers: pip install 'demohub[diffusers]'.") from None
        return AutoencoderTiny.from_pretrained(folder, torch_dtype=dtype, use_safetensors=entry.use_safetensors), None
    if model_type not in MODEL_TYPES:
        raise ModelUnavailable(f"{entry.name}: unknown generative model_type {model_type!r} in {folder}.")
    # What PyTorchModelHubMixin.from_pretrained does for a local folder, minus its print().
    model = MODEL_TYPES[model_type](**{k: v for k, v in config.items() if k != "model_type"})
    load_model(model, str(folder / "model.safetensors"), strict=True)
    return model.to(dtype), None
