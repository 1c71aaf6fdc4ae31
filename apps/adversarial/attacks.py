"""Adversarial attacks in [0, 1] pixel space, on batches, with a deadline.

    classifier = PixelSpaceClassifier(model, mean, std)      # normalisation inside the model
    adversarial, steps_run = pgd(classifier, x, labels, eps=8/255, steps=10, step_size=2/255)

FGSM and PGD (L-inf and L2) follow the Adversarial Robustness Toolbox's definitions step for
step (no random start), and tests/test_adversarial.py checks that they equal ART's within float
tolerance. DeepFool (Moosavi-Dezfooli et al., 2016) finds a small L2 perturbation with no epsilon.
Each iterative attack stops at `deadline` (a time.monotonic() value) and says how many steps ran.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn

TOLERANCE = 1e-7  # ART's `tol` for normalising gradients and projecting onto the L2 ball


class PixelSpaceClassifier(nn.Module):
    """[0, 1] pixels (B, C, H, W) -> logits, with the model's input normalisation inside."""

    def __init__(self, model: nn.Module, mean: list[float], std: list[float]):
        super().__init__()
        self.model = model  # callers put it in eval mode: attacks need a deterministic model
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def normalise(self, pixels: torch.Tensor) -> torch.Tensor:
        """[0, 1] pixels -> the model's input (what its processor's normalisation gives)."""
        return (pixels - self.mean) / self.std

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        outputs = self.model(pixel_values=self.normalise(pixels))
        return outputs.logits if hasattr(outputs, "logits") else outputs


def _direction(classifier: nn.Module, x: torch.Tensor, labels: torch.Tensor, targeted: bool, norm: str):
    """The step direction: sign (L-inf) or unit-L2 gradient of the loss, away from `labels`
    (untargeted) or towards them (targeted)."""
    x = x.detach().requires_grad_(True)
    loss = F.cross_entropy(classifier(x), labels)
    (grad,) = torch.autograd.grad(loss, x)
    if targeted:
        grad = -grad
    if norm == "linf":
        return grad.sign()
    return grad / (grad.flatten(1).norm(dim=1).view(-1, 1, 1, 1) + TOLERANCE)


def _project(delta: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    if norm == "linf":
        return delta.clamp(-eps, eps)
    scale = torch.clamp(eps / (delta.flatten(1).norm(dim=1) + TOLERANCE), max=1.0)
    return delta * scale.view(-1, 1, 1, 1)


def fgsm(classifier, x, labels, eps: float, targeted: bool = False, norm: str = "linf") -> torch.Tensor:
    """One step of size `eps` (Goodfellow et al., 2015)."""
    return (x + eps * _direction(classifier, x, labels, targeted, norm)).clamp(0, 1).detach()


def pgd(classifier, x, labels, eps: float, steps: int, step_size: float, targeted: bool = False,
        norm: str = "linf", deadline: float | None = None) -> tuple[torch.Tensor, int]:
    """Projected gradient descent (Madry et al., 2018) from x itself, no random start."""
    adversarial = x.clone()
    for step in range(steps):
        if deadline is not None and time.monotonic() > deadline:
            return adversarial, step
        step_direction = _direction(classifier, adversarial, labels, targeted, norm)
        adversarial = (adversarial + step_size * step_direction).clamp(0, 1)
        adversarial = (x + _project(adversarial - x, eps, norm)).detach()
    return adversarial, steps


def deepfool(classifier, x, steps: int = 50, overshoot: float = 0.02, candidates: int = 10,
             deadline: float | None = None, project=None) -> tuple[torch.Tensor, int]:
    """Smallest-step L2 attack: linearise the classifier and cross the nearest decision boundary.
    `project` maps each step's image to what is kept (8-bit pixels), so the crossing is checked there."""
    adversarial = x.clone()
    with torch.no_grad():
        logits = classifier(x)
    original = logits.argmax(1)
    classes = logits.topk(min(candidates, logits.shape[1]), dim=1).indices  # the nearest boundaries
    total = torch.zeros_like(x)
    for step in range(steps):
        if deadline is not None and time.monotonic() > deadline:
            return adversarial, step
        point = adversarial.detach().requires_grad_(True)
        logits = classifier(point)
        if (logits.argmax(1) != original).all():
            return adversarial, step
        for i in range(len(x)):
            if logits[i].argmax() != original[i]:
                continue
            grads = torch.stack([torch.autograd.grad(logits[i, c], point, retain_graph=True)[0][i]
                                 for c in classes[i]])
            w = grads[1:] - grads[0]  # classes[i][0] is the original class
            f = (logits[i, classes[i][1:]] - logits[i, classes[i][0]]).detach()
            distance = f.abs() / (w.flatten(1).norm(dim=1) + 1e-8)
            nearest = distance.argmin()
            r = (distance[nearest] + 1e-4) * w[nearest] / (w[nearest].norm() + 1e-8)
            total[i] = total[i] + r
        adversarial = (x + (1 + overshoot) * total).clamp(0, 1).detach()
        if project is not None:
            adversarial = project(adversarial)
    return adversarial, steps
