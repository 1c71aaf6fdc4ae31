"""Train, or continue training, the class-conditional GAN or the VAE on an image folder.

Images (one subfolder per class: the classes condition the GAN) become 32x32 grayscale.

    demohub data digits --out data/digits
    demohub finetune generative --family gan --data data/digits --out models/generative/digits-gan --epochs 150
    demohub finetune generative --family vae --data data/digits --out models/generative/digits-vae --epochs 80

    # transfer: continue from the embedded GAN on your own folder
    demohub finetune generative --family gan --model digits-gan --data my_digits --out runs/my-gan --epochs 20

Features: Adam with cosine decay, checkpoints each epoch (`--resume` continues), bf16/fp16
autocast on GPU, a progress bar, a sample grid saved each epoch (OUT/samples/), metrics in
metrics.json and a model card, `--push-to-hub REPO`. Quality is judged offline by the embedded
digits classifier (see quality.py): Fréchet distance and class accuracy for the GAN,
held-out reconstruction error and ELBO for the VAE.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import shutil
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from datasets import load_dataset
from safetensors.torch import load_model, save_model
from torch.utils.data import DataLoader
from torchvision.transforms import v2
from torchvision.utils import save_image
from tqdm import tqdm
from transformers import HfArgumentParser, set_seed

from apps.generative import models, quality
from shared.errors import UserError
from shared.models import loader, registry

SIDE = 32


@dataclass
class GenerativeArguments:
    family: str = field(metadata={"help": "gan or vae"})
    data: str = field(metadata={"help": "Image folder, one subfolder per class (train/ and test/ are splits)."})
    out: str = field(metadata={"help": "Folder for the model, its card, metrics.json and samples/."})
    model: str | None = field(default=None, metadata={"help": "Continue from this model (registry name or "
                                                                "folder); default: from scratch."})
    epochs: int = 100
    batch_size: int = 64
    learning_rate: float = 2e-4
    seed: int = 0
    resume: bool = False
    keep_checkpoints: bool = False
    samples_per_class: int = 100
    judge: str = "digits-convnext"
    push_to_hub: str | None = None

    def __post_init__(self):
        if self.family not in ("gan", "vae"):
            raise UserError("--family must be gan or vae.")
        if not Path(self.data).is_dir():
            raise UserError(f"--data {self.data}: no such folder.")
        if self.epochs < 1 or self.batch_size < 1:
            raise UserError("--epochs and --batch-size must be at least 1.")


def load_images(data: str) -> dict:
    """Splits of (images in [0, 1], shape (N, 1, 32, 32); labels; label names)."""
    splits = load_dataset("imagefolder", data_dir=data)
    to_tensor = v2.Compose([v2.Grayscale(), v2.Resize((SIDE, SIDE)), v2.PILToTensor(),
                            v2.ToDtype(torch.float32, scale=True)])
    names = splits["train"].features["label"].names
    return {split: (torch.stack([to_tensor(im) for im in rows["image"]]), torch.tensor(rows["label"]), names)
            for split, rows in ((s, splits[s][:]) for s in splits)}


def build(args: GenerativeArguments, names: list[str]):
    if args.model:
        entry = registry.resolve("generative", args.model)
        model, _ = models.from_pretrained(loader.model_folder(entry), entry, torch.float32)
    elif args.family == "gan":
        model = models.ConditionalGenerator(num_classes=len(names), labels=names)
    else:
        model = models.ConvVAE()
    if args.family == "gan":
        unknown = sorted(set(names) - set(model.labels))
        if unknown:
            raise UserError(f"{args.model} cannot draw the classes {unknown}; it knows {model.labels}.")
    # The critic is not shipped with the generator: a transfer run starts it fresh.
    critic = models.ProjectionDiscriminator(num_classes=model.num_classes) if args.family == "gan" else None
    return model, critic


def gan_step(generator, critic, images, labels, optimizers, autocast):
    """One hinge-loss step for the critic, then one for the generator."""
    real = images * 2 - 1
    z = torch.randn(len(real), generator.latent_dim, device=real.device)
    wanted = torch.randint(0, generator.num_classes, (len(real),), device=real.device)
    with autocast:
        fake = generator(z, wanted)["images"]
        critic_loss = F.relu(1 - critic(real, labels)).mean() + F.relu(1 + critic(fake.detach(), wanted)).mean()
    optimizers[1].zero_grad(set_to_none=True)
    critic_loss.backward()
    optimizers[1].step()
    with autocast:
        generator_loss = -critic(fake, wanted).mean()
    optimizers[0].zero_grad(set_to_none=True)
    generator_loss.backward()
    optimizers[0].step()
    return {"critic_loss": critic_loss.item(), "generator_loss": generator_loss.item()}


def vae_losses(vae, images) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image reconstruction (Bernoulli negative log-likelihood, nats) and KL terms."""
    out = vae(images)
    reconstruction = F.binary_cross_entropy(out["images"], images, reduction="none").flatten(1).sum(1)
    kl = 0.5 * (out["mean"] ** 2 + out["log_variance"].exp() - 1 - out["log_variance"]).sum(1)
    return reconstruction, kl


def vae_step(vae, images, optimizers, autocast):
    with autocast:
        reconstruction, kl = vae_losses(vae, images)
        loss = (reconstruction + kl).mean()
    optimizers[0].zero_grad(set_to_none=True)
    loss.backward()
    optimizers[0].step()
    return {"loss": loss.item()}


@torch.no_grad()
def sample_grid(model, family: str, num_classes: int, path: Path) -> None:
    model.eval()
    generator = torch.Generator().manual_seed(0)
    device = next(model.parameters()).device
    if family == "gan":
        labels = torch.arange(num_classes).repeat_interleave(8).to(device)
        z = torch.randn(len(labels), model.latent_dim, generator=generator).to(device)
        images = (model(z, labels)["images"] + 1) / 2
    else:
        images = model.decoder(torch.randn(80, model.latent_dim, generator=generator).to(device))["images"]
    save_image(images.float(), path, nrow=8, pad_value=0.5)
    model.train()


@torch.no_grad()
def evaluate(model, family: str, splits: dict, args: GenerativeArguments) -> dict:
    model.eval()
    device = next(model.parameters()).device
    held_out, held_labels, names = splits.get("test", splits["train"])
    real_features, real_predicted = quality.judge(held_out, args.judge)
    metrics = {"held_out_images": len(held_out),
               "judge_accuracy_on_real": quality.class_accuracy(real_predicted, [names[i] for i in held_labels])}
    if family == "gan":
        generator = torch.Generator().manual_seed(1)
        labels = torch.arange(model.num_classes).repeat_interleave(args.samples_per_class)
        z = torch.randn(len(labels), model.latent_dim, generator=generator)
        images = torch.cat([(model(zc.to(device), lc.to(device))["images"] + 1) / 2
                            for zc, lc in zip(z.split(256), labels.split(256), strict=True)])
        features, predicted = quality.judge(images.cpu(), args.judge)
        metrics["class_accuracy"] = quality.class_accuracy(predicted, [model.labels[i] for i in labels])
        metrics["frechet_distance"] = quality.frechet_distance(features, real_features)
    else:
        reconstruction, kl = vae_losses(model, held_out.to(device))
        metrics["reconstruction_mse"] = float(F.mse_loss(model(held_out.to(device))["images"], held_out.to(device)))
        metrics["reconstruction_nll_nats"] = float(reconstruction.mean())
        metrics["elbo_nats"] = float(-(reconstruction + kl).mean())
        samples = model.decoder(torch.randn(1000, model.latent_dim, generator=torch.Generator().manual_seed(1))
                                .to(device))["images"]
        metrics["frechet_distance"] = quality.frechet_distance(quality.judge(samples.cpu(), args.judge)[0],
                                                               real_features)
    sample = torch.randperm(len(splits["train"][0]), generator=torch.Generator().manual_seed(2))[: len(held_out)]
    train_features, _ = quality.judge(splits["train"][0][sample], args.judge)
    metrics["frechet_distance_real_train_vs_held_out"] = quality.frechet_distance(train_features, real_features)
    model.train()
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()}


def save_checkpoint(folder: Path, modules: list, optimizers: list, schedulers: list, epoch: int) -> None:
    scratch = folder.with_name(folder.name + ".tmp")
    scratch.mkdir(parents=True, exist_ok=True)
    for i, module in enumerate(modules):
        save_model(module, str(scratch / f"module{i}.safetensors"))
    torch.save({"optimizers": [o.state_dict() for o in optimizers],
                "schedulers": [s.state_dict() for s in schedulers], "epoch": epoch}, scratch / "state.pt")
    shutil.rmtree(folder, ignore_errors=True)
    scratch.rename(folder)


def load_checkpoint(folder: Path, modules: list, optimizers: list, schedulers: list) -> int:
    for i, module in enumerate(modules):
        load_model(module, str(folder / f"module{i}.safetensors"))
    state = torch.load(folder / "state.pt", weights_only=True)
    for optimizer, saved in zip(optimizers, state["optimizers"], strict=True):
        optimizer.load_state_dict(saved)
    for scheduler, saved in zip(schedulers, state["schedulers"], strict=True):
        scheduler.load_state_dict(saved)
    return state["epoch"]


METRIC_MEANINGS = {
    "held_out_images": "real images never trained on (the test split)",
    "judge_accuracy_on_real": "the judge's own accuracy on them: how far to trust it",
    "class_accuracy": "conditional samples (samples_per_class per class, seed 1) the judge assigns to the asked class",
    "frechet_distance": "Fréchet distance of generated to held-out real images in the judge's 128-d features",
    "frechet_distance_real_train_vs_held_out": "the same between two real samples: the floor to compare with",
    "reconstruction_mse": "mean squared error of held-out reconstructions, pixels in [0, 1]",
    "reconstruction_nll_nats": "Bernoulli negative log-likelihood of held-out images, per image",
    "elbo_nats": "evidence lower bound per held-out image (higher is better)",
}


def model_card(out: Path, args: GenerativeArguments, metrics: dict, argv: list[str]) -> str:
    rows = "\n".join(f"| {k} | {v} | {METRIC_MEANINGS.get(k, '')} |" for k, v in metrics.items())
    kind = "class-conditional GAN (DCGAN generator, projection critic, hinge loss)" if args.family == "gan" \
        else "convolutional VAE (Bernoulli decoder)"
    origin = f"continuing from `{args.model}`" if args.model else "from scratch"
    return (f"# {out.name}\n\nA {kind} trained by `apps/generative/finetune.py` on `{args.data}`, {origin}; "
            f"32x32 grayscale, ink dark on white.\n\nQuality, judged offline by the embedded classifier "
            f"`{args.judge}` (see `apps/generative/quality.py`):\n\n| metric | value | meaning |\n| --- | --- | --- |\n"
            f"{rows}\n\nPer-epoch losses are in `metrics.json`. Rebuild (sample grids by epoch land in "
            f"OUT/samples/, not committed):\n\n```\ndemohub finetune generative {shlex.join(argv)}\n```\n")


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    parser = HfArgumentParser(GenerativeArguments, prog="demohub finetune generative", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    (args,) = parser.parse_args_into_dataclasses(args=argv)
    set_seed(args.seed)
    out = Path(args.out)
    (out / "samples").mkdir(parents=True, exist_ok=True)
    splits = load_images(args.data)
    images, labels, names = splits["train"]
    device = loader.best_device()
    model, critic = build(args, names)
    if args.family == "gan":  # the folder's class order may differ from the model's
        labels = torch.tensor([model.labels.index(name) for name in names])[labels]
    modules = [m.to(device).train() for m in (model, critic) if m is not None]
    betas = (0.0, 0.9) if args.family == "gan" else (0.9, 0.999)
    optimizers = [torch.optim.Adam(m.parameters(), lr=args.learning_rate, betas=betas) for m in modules]
    steps = args.epochs * math.ceil(len(images) / args.batch_size)
    schedulers = [torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=steps) for o in optimizers]
    checkpoint = out / "checkpoints" / "last"
    start = load_checkpoint(checkpoint, modules, optimizers, schedulers) if args.resume and checkpoint.is_dir() else 0
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    batches = DataLoader(list(zip(images, labels, strict=True)), batch_size=args.batch_size, shuffle=True,
                         drop_last=True, generator=torch.Generator().manual_seed(args.seed))

    history = []
    for epoch in range(start, args.epochs):
        totals: dict[str, float] = {}
        for batch_images, batch_labels in tqdm(batches, desc=f"epoch {epoch + 1}/{args.epochs}", leave=False):
            batch_images, batch_labels = batch_images.to(device), batch_labels.to(device)
            if args.family == "gan":
                losses = gan_step(model, critic, batch_images, batch_labels, optimizers, autocast)
            else:
                losses = vae_step(model, batch_images, optimizers, autocast)
            for scheduler in schedulers:
                scheduler.step()
            totals = {k: totals.get(k, 0.0) + v / len(batches) for k, v in losses.items()}
        history.append({"epoch": epoch + 1, **{k: round(v, 4) for k, v in totals.items()}})
        sample_grid(model, args.family, len(names), out / "samples" / f"epoch_{epoch + 1:03d}.png")
        save_checkpoint(checkpoint, modules, optimizers, schedulers, epoch + 1)

    metrics = evaluate(model, args.family, splits, args)
    models.save(model.cpu().eval(), out)
    (out / "metrics.json").write_text(json.dumps({**metrics, "history": history}, indent=2) + "\n")
    (out / "finetune_args.json").write_text(json.dumps(asdict(args), indent=2) + "\n")
    (out / "README.md").write_text(model_card(out, args, metrics, argv))
    if args.push_to_hub:
        model.push_to_hub(args.push_to_hub)
    if not args.keep_checkpoints:
        shutil.rmtree(out / "checkpoints", ignore_errors=True)
    return metrics


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
