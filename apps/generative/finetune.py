"""Train, or continue training, the class-conditional GAN or the VAE on an image folder.

Images (one subfolder per class: the classes condition the GAN) become 32x32 grayscale.

    demohub data digits --out data/digits
    demohub finetune generative --family gan --data data/digits --out models/generative/digits-gan --epochs 80
    demohub finetune generative --family vae --data data/digits --out models/generative/digits-vae --epochs 80

    # transfer: continue from the embedded GAN on your own folder
    demohub finetune generative --family gan --model digits-gan --data my_digits --out runs/my-gan --epochs 20

    # data-parallel: 2 processes (GPUs, or CPU processes over gloo), each a share of every epoch
    torchrun --nproc_per_node=2 -m shared.serving.cli finetune generative --family gan --data data/digits --out runs/ddp

Features: Adam with cosine decay, checkpoints each epoch (`--resume` continues), bf16/fp16
autocast on GPU, a progress bar, a sample grid saved each epoch (OUT/samples/), metrics in
metrics.json and a model card, `--push-to-hub REPO`. Same command, same model: seeds and data
order are fixed.

Under torchrun the networks are wrapped in DistributedDataParallel (gradients averaged at every
backward), each process draws its own noise and takes its share of every epoch's images, and only
the first writes the output. `--batch-size` is per process. Without torchrun none of this is in the
way: one process trains exactly as before, bit for bit.

Against collapse on 1,437 digits, the GAN uses a hinge loss, a critic with spectral norm, class
projection and a minibatch-std channel, DiffAugment on real and fake alike, and ships the
exponential moving average of its generator. Quality is measured against a judge fitted on the
held-out split only (see quality.py): class accuracy per class, within-class diversity, Fréchet
distance beside the real-vs-real floor, and precision/recall; for the VAE also held-out
reconstruction error and ELBO.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import shutil
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from datasets import load_dataset
from safetensors.torch import load_model, save_model
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, DistributedSampler
from torchvision.transforms import v2
from torchvision.utils import save_image
from tqdm import tqdm
from transformers import HfArgumentParser, set_seed

from apps.generative import models, quality
from shared import training
from shared.errors import UserError
from shared.models import loader, registry

SIDE = 32
EMA_DECAY = 0.995  # half-life of about 140 steps, 6 epochs of the digits


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
    mode_seeking_weight: float = field(default=0.02, metadata={"help": "GAN: weight of the mode-seeking term that "
                                                                      "makes two noises give two drawings."})
    schedule: str = field(default="cosine", metadata={"help": "cosine, or warm-restarts (SGDR: --cycles equal "
                                                               "cosine cycles)", "choices": list(training.SCHEDULES)})
    cycles: int = 3
    push_to_hub: str | None = None

    def __post_init__(self):
        if self.family not in ("gan", "vae"):
            raise UserError("--family must be gan or vae.")
        if not Path(self.data).is_dir():
            raise UserError(f"--data {self.data}: no such folder.")
        if self.epochs < 1 or self.batch_size < 1:
            raise UserError("--epochs and --batch-size must be at least 1.")
        training.check_schedule(self.schedule, self.cycles)


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


def diff_augment(images: torch.Tensor) -> torch.Tensor:
    """DiffAugment (Zhao et al. 2020), "translation,cutout": random shifts up to 1/8 of the side and a
    blank square of half the side, white like the paper. Differentiable, so the critic sees real and
    fake augmented alike and the generator learns through it; the critic cannot memorise 1,437 digits."""
    batch, _, side, _ = images.shape
    shift, hole = side // 8, side // 2
    padded = F.pad(images, (shift,) * 4, value=1.0)
    dy, dx = torch.randint(0, 2 * shift + 1, (2, batch, 1), device=images.device)
    rows = (torch.arange(side, device=images.device) + dy)[:, :, None]
    cols = (torch.arange(side, device=images.device) + dx)[:, None, :]
    shifted = padded[torch.arange(batch, device=images.device)[:, None, None], 0, rows, cols][:, None]
    top, left = torch.randint(-hole // 2, side - hole // 2 + 1, (2, batch, 1), device=images.device)
    ys = torch.arange(side, device=images.device)
    inside_rows = ((ys >= top) & (ys < top + hole))[:, :, None]
    inside_cols = ((ys >= left) & (ys < left + hole))[:, None, :]
    return torch.where((inside_rows & inside_cols)[:, None], 1.0, shifted)


def gan_step(generator, critic, images, labels, optimizers, autocast, ema, mode_seeking_weight):
    """One hinge-loss step for the critic, then one for the generator, then the EMA update.

    Under torchrun both networks are DistributedDataParallel wrappers: the critic scores real and fake
    before its one backward, and its gradients from the generator's backward (averaged too) are unused:
    its next step starts from zero. The EMA follows the generator itself, not its wrapper."""
    raw = getattr(generator, "module", generator)
    real = images * 2 - 1
    z = torch.randn(len(real), raw.latent_dim, device=real.device)
    half = len(real) // 2  # the second half asks for the first half's classes, from other noise
    wanted = torch.randint(0, raw.num_classes, (len(real) - half,), device=real.device)
    wanted = torch.cat([wanted, wanted[:half]])
    with autocast:
        fake = generator(z, wanted)["images"]
        critic_loss = (F.relu(1 - critic(diff_augment(real), labels)).mean()
                       + F.relu(1 + critic(diff_augment(fake.detach()), wanted)).mean())
    optimizers[1].zero_grad(set_to_none=True)
    critic_loss.backward()
    optimizers[1].step()
    with autocast:
        generator_loss = -critic(diff_augment(fake), wanted).mean()
        if half and mode_seeking_weight:  # Mao et al. 2019: two noises for one class, two different drawings
            spread = ((fake[:half] - fake[-half:]).abs().mean((1, 2, 3)) / (z[:half] - z[-half:]).abs().mean(1)).mean()
            generator_loss = generator_loss + mode_seeking_weight / (spread + 1e-5)
    optimizers[0].zero_grad(set_to_none=True)
    generator_loss.backward()
    optimizers[0].step()
    ema.update_parameters(raw)
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


def matched_sample(pool_labels: torch.Tensor, reference_labels: torch.Tensor, seed: int) -> torch.Tensor:
    """Indices into `pool_labels` with the same count of each class as `reference_labels` (random, seeded)."""
    order = torch.randperm(len(pool_labels), generator=torch.Generator().manual_seed(seed))
    picks = [order[pool_labels[order] == c][: int((reference_labels == c).sum())] for c in reference_labels.unique()]
    return torch.cat(picks)


@torch.no_grad()
def evaluate(model, family: str, splits: dict, args: GenerativeArguments) -> dict:
    """The card's figures, against a judge fitted on the held-out split only (see quality.py)."""
    model.eval()
    device = next(model.parameters()).device
    train, train_labels, names = splits["train"]
    held_out, held_labels, _ = splits.get("test", splits["train"])
    judge = quality.fit_judge(held_out, held_labels, names)
    real_features = judge.features(held_out)
    twin = train[matched_sample(train_labels, held_labels, seed=2)]  # real images, the held-out class mix
    twin_features = judge.features(twin)
    metrics = {"held_out_images": len(held_out),
               "judge_accuracy_on_train_split": quality.class_accuracy(judge.predict(train),
                                                                       [names[i] for i in train_labels]),
               "frechet_distance_real_train_vs_held_out": quality.frechet_distance(twin_features, real_features)}
    metrics["precision_real"], metrics["recall_real"] = quality.precision_recall(real_features, twin_features)
    if family == "gan":
        wanted = torch.tensor([model.labels.index(name) for name in names])  # classes the folder has
        labels = wanted.repeat_interleave(args.samples_per_class)
        z = torch.randn(len(labels), model.latent_dim, generator=torch.Generator().manual_seed(1))
        images = torch.cat([(model(zc.to(device), lc.to(device))["images"] + 1).cpu() / 2
                            for zc, lc in zip(z.split(256), labels.split(256), strict=True)])
        requested = [model.labels[i] for i in labels]
        predicted = judge.predict(images)
        by_class = quality.per_class(predicted, requested, names)
        spread = {name: quality.diversity(images[labels == wanted[i]]) / quality.diversity(held_out[held_labels == i])
                  for i, name in enumerate(names)}
        metrics.update(class_accuracy=quality.class_accuracy(predicted, requested),
                       class_accuracy_worst=min(by_class.values()),
                       diversity_ratio=float(sum(spread.values()) / len(spread)),
                       diversity_ratio_worst=min(spread.values()))
        # Folder class index i is model class wanted[i]: the same class mix as held-out, for FD and P/R.
        samples = images[matched_sample(labels, wanted[held_labels], seed=3)]
        details = {"class_accuracy_per_class": by_class, "diversity_ratio_per_class": spread}
    else:
        reconstruction, kl = vae_losses(model, held_out.to(device))
        metrics["reconstruction_mse"] = float(F.mse_loss(model(held_out.to(device))["images"], held_out.to(device)))
        metrics["reconstruction_nll_nats"] = float(reconstruction.mean())
        metrics["elbo_nats"] = float(-(reconstruction + kl).mean())
        samples = model.decoder(torch.randn(len(held_out), model.latent_dim,
                                            generator=torch.Generator().manual_seed(1)).to(device))["images"].cpu()
        metrics["diversity_ratio_overall"] = quality.diversity(samples) / quality.diversity(held_out)
        details = {"sampled_class_share": {name: quality.class_accuracy(judge.predict(samples),
                                                                        [name] * len(samples)) for name in names}}
    features = judge.features(samples)
    metrics["frechet_distance"] = quality.frechet_distance(features, real_features)
    metrics["precision"], metrics["recall"] = quality.precision_recall(real_features, features)
    model.train()
    return {**rounded(metrics), **{k: rounded(v) for k, v in details.items()}}


def rounded(values: dict) -> dict:
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in values.items()}


def start_processes(device: torch.device) -> tuple[int, int, torch.device]:
    """(rank, number of processes, device). Under torchrun (it sets WORLD_SIZE, RANK, LOCAL_RANK):
    join the process group, over NCCL with one GPU per process, else over gloo."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), world, device


def mean_over_processes(losses: dict[str, float], world: int, device: torch.device) -> dict[str, float]:
    """Each loss averaged over the processes (each had its own batches); alone, the losses as they are."""
    if world == 1:
        return losses
    values = torch.tensor(list(losses.values()), dtype=torch.float64, device=device)
    dist.all_reduce(values)
    return dict(zip(losses, (values / world).tolist(), strict=True))


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
    "held_out_images": "real images never trained on (the test split); the judge is fitted on these only",
    "judge_accuracy_on_train_split": "the judge's accuracy on the training split, which it never saw: how far to "
                                     "trust it",
    "frechet_distance_real_train_vs_held_out": "Fréchet distance between a training-split sample (the held-out "
                                               "class mix, seed 2) and the held-out images: the floor",
    "precision_real": "precision of that real sample against the held-out images: what real data scores",
    "recall_real": "recall of that real sample against the held-out images: what real data scores",
    "class_accuracy": "conditional samples (samples_per_class per class, z ~ N(0, I), seed 1) the judge reads as "
                      "the asked class",
    "class_accuracy_worst": "the same for the worst class",
    "class_accuracy_per_class": "the same for each class",
    "diversity_ratio": "mean pairwise L2 distance between samples of one class at 8x8, over that between held-out "
                       "real digits of that class; mean over classes",
    "diversity_ratio_worst": "the same for the least varied class",
    "diversity_ratio_overall": "mean pairwise L2 distance between samples at 8x8, over that between held-out real "
                               "digits (all classes together)",
    "diversity_ratio_per_class": "the same for each class",
    "sampled_class_share": "share of prior samples the judge reads as each class",
    "frechet_distance": "Fréchet distance of samples (the held-out class mix) to held-out images in the judge's "
                        "features",
    "precision": "share of samples inside the real images' 3-NN manifold in the judge's features (Kynkäänniemi "
                 "2019)",
    "recall": "share of held-out images inside the samples' 3-NN manifold (Kynkäänniemi 2019)",
    "reconstruction_mse": "mean squared error of held-out reconstructions, pixels in [0, 1]",
    "reconstruction_nll_nats": "Bernoulli negative log-likelihood of held-out images, per image",
    "elbo_nats": "evidence lower bound per held-out image (higher is better)",
}

JUDGE = ("an independent judge: scikit-learn's PCA (20 components) and an RBF support-vector classifier, fitted "
         "on the held-out split only, on the images brought back to 8x8 ink levels (4x4 area means, 0-16 as in "
         "scikit-learn's digits). It shares neither training data nor model family with the generators; its "
         "features (the 20 PCA components) carry the Fréchet distance and precision/recall. Samples are "
         "compared with real images in equal numbers and the same class mix. See `apps/generative/quality.py`")


def shown(value) -> str:
    return ", ".join(f"{k}: {v}" for k, v in value.items()) if isinstance(value, dict) else str(value)


def model_card(out: Path, args: GenerativeArguments, metrics: dict, argv: list[str]) -> str:
    rows = "\n".join(f"| {k} | {shown(v)} | {METRIC_MEANINGS.get(k, '')} |" for k, v in metrics.items())
    kind = ("class-conditional GAN (DCGAN generator shipped as the EMA of its weights; projection critic with "
            "spectral norm and a minibatch-std channel; hinge loss; DiffAugment translation + cutout)"
            if args.family == "gan" else "convolutional VAE (Bernoulli decoder)")
    origin = f"continuing from `{args.model}`" if args.model else "from scratch"
    return (f"# {out.name}\n\nA {kind} trained by `apps/generative/finetune.py` on `{args.data}`, {origin}; "
            f"32x32 grayscale, ink dark on white.\n\nQuality, measured by {JUDGE}:\n\n"
            f"| metric | value | meaning |\n| --- | --- | --- |\n"
            f"{rows}\n\nPer-epoch losses are in `metrics.json`. Rebuild, at the thread count this run had "
            f"(the weights depend on it; sample grids by epoch land in OUT/samples/, not committed):\n\n```\n"
            f"OMP_NUM_THREADS={torch.get_num_threads()} demohub finetune generative {shlex.join(argv)}\n```\n")


def main(argv: list[str] | None = None) -> dict | None:
    """Train as `argv` says and return the card's metrics; None in the other processes under torchrun."""
    argv = sys.argv[1:] if argv is None else argv
    parser = HfArgumentParser(GenerativeArguments, prog="demohub finetune generative", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    (args,) = parser.parse_args_into_dataclasses(args=argv)
    rank, world, device = start_processes(loader.best_device())
    first = rank == 0  # the one process that writes the output folder
    set_seed(args.seed + rank)  # each process its own noise; DDP starts all from the first one's weights
    out = Path(args.out)
    if first:
        (out / "samples").mkdir(parents=True, exist_ok=True)
    splits = load_images(args.data)
    images, labels, names = splits["train"]
    model, critic = build(args, names)
    if args.family == "gan":  # the folder's class order may differ from the model's
        labels = torch.tensor([model.labels.index(name) for name in names])[labels]
    modules = [m.to(device).train() for m in (model, critic) if m is not None]
    betas = (0.0, 0.9) if args.family == "gan" else (0.9, 0.999)
    optimizers = [torch.optim.Adam(m.parameters(), lr=args.learning_rate, betas=betas) for m in modules]
    # The GAN ships an exponential moving average of its generator's weights (and BatchNorm statistics):
    # smoother than any single step's weights (Karras 2018, Yazici 2019). It is checkpointed with the rest.
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(EMA_DECAY), use_buffers=True) \
        if args.family == "gan" else None
    if ema is not None:
        modules.append(ema)
    steps = args.epochs * math.ceil(len(images) / (args.batch_size * world))
    schedulers = [training.torch_scheduler(o, args.schedule, args.cycles, steps) for o in optimizers]
    checkpoint = out / "checkpoints" / "last"
    start = load_checkpoint(checkpoint, modules, optimizers, schedulers) if args.resume and checkpoint.is_dir() else 0
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    pairs = list(zip(images, labels, strict=True))
    # Under torchrun each process takes its share of every epoch's images (one shuffle, by seed and epoch),
    # and trains DDP wrappers that average the gradients at each backward; alone, the networks themselves.
    sampler = DistributedSampler(pairs, seed=args.seed) if world > 1 else None
    batches = DataLoader(pairs, batch_size=args.batch_size, shuffle=sampler is None, sampler=sampler,
                         drop_last=True, generator=torch.Generator().manual_seed(args.seed))
    ddp_model, ddp_critic = model, critic
    if world > 1:
        ddp_model = DistributedDataParallel(model)
        ddp_critic = DistributedDataParallel(critic) if critic is not None else None

    history, curve, step = [], [], start * len(batches)
    for epoch in range(start, args.epochs):
        if sampler is not None:
            sampler.set_epoch(epoch)
        totals: dict[str, float] = {}
        for batch_images, batch_labels in tqdm(batches, desc=f"epoch {epoch + 1}/{args.epochs}", leave=False,
                                               disable=not first):
            batch_images, batch_labels = batch_images.to(device), batch_labels.to(device)
            if args.family == "gan":
                losses = gan_step(ddp_model, ddp_critic, batch_images, batch_labels, optimizers, autocast, ema,
                                  args.mode_seeking_weight)
            else:
                losses = vae_step(ddp_model, batch_images, optimizers, autocast)
            for scheduler in schedulers:
                scheduler.step()
            step += 1
            if step % max(1, steps // training.CURVE_POINTS) == 0:
                curve.append({"step": step, "learning_rate": schedulers[0].get_last_lr()[0],
                              **mean_over_processes(losses, world, device)})
            totals = {k: totals.get(k, 0.0) + v / len(batches) for k, v in losses.items()}
        totals = mean_over_processes(totals, world, device)
        history.append({"epoch": epoch + 1, **{k: round(v, 4) for k, v in totals.items()}})
        if first:
            sample_grid(ema.module if ema is not None else model, args.family, len(names),
                        out / "samples" / f"epoch_{epoch + 1:03d}.png")
            save_checkpoint(checkpoint, modules, optimizers, schedulers, epoch + 1)
    if world > 1:
        dist.destroy_process_group()
    if not first:
        return None

    shipped = ema.module if ema is not None else model
    metrics = evaluate(shipped, args.family, splits, args)
    models.save(shipped.cpu().eval(), out)
    (out / "metrics.json").write_text(json.dumps({**metrics, "history": history}, indent=2) + "\n")
    training.write_curves(curve, out / "curves.png")
    (out / "finetune_args.json").write_text(json.dumps(asdict(args), indent=2) + "\n")
    (out / "README.md").write_text(model_card(out, args, metrics, argv))
    if args.push_to_hub:
        shipped.push_to_hub(args.push_to_hub)
    if not args.keep_checkpoints:
        shutil.rmtree(out / "checkpoints", ignore_errors=True)
    return metrics


if __name__ == "__main__":
    metrics = main()
    if metrics is not None:
        print(json.dumps(metrics, indent=2))
