"""What every fine-tuning script shares: the common arguments, the Trainer settings, and how a
run is saved. Each app's finetune.py adds its data, its model head and its metric.

The settings are the same everywhere: AdamW with linear warm-up and cosine decay (or, with
`--schedule warm-restarts`, SGDR: `--cycles` cosine cycles, each restarting at the full learning
rate; Loshchilov & Hutter 2017), evaluation and a checkpoint each epoch, early stopping on the
app's metric, bf16/fp16 on a GPU, a progress bar, metrics.json with curves.png beside it (the
learning rate and the losses by step), a model card, and `--push-to-hub REPO`.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from transformers import AutoConfig, HfArgumentParser, TrainingArguments

from shared.errors import UserError

SCHEDULES = ("cosine", "warm-restarts")
CURVE_POINTS = 100  # training-loss points per run in curves.png (the Trainer logs every steps/100 steps)


@dataclass
class TrainingOptions:
    out: str = field(metadata={"help": "Folder for the fine-tuned model, its card and metrics.json."})
    model: str = field(default="", metadata={"help": "Registry name, local model folder, or repo_id@revision."})
    from_scratch: bool = field(default=False, metadata={"help": "Initialise weights from the config only."})
    freeze_backbone: bool = field(default=False, metadata={"help": "Train the head only."})
    epochs: int = 10
    batch_size: int = 16
    learning_rate: float = 5e-4
    weight_decay: float = 0.05
    warmup_fraction: float = 0.1
    schedule: str = field(default="cosine", metadata={
        "help": "cosine: one cosine decay after the warm-up; warm-restarts: SGDR, --cycles equal cosine cycles, "
                "each starting again at --learning-rate.", "choices": list(SCHEDULES)})
    cycles: int = field(default=3, metadata={"help": "warm-restarts: how many cosine cycles the run has."})
    patience: int = field(default=5, metadata={"help": "Epochs without a better validation metric before stopping."})
    validation_fraction: float = 0.1
    seed: int = 0
    resume: bool = field(default=False, metadata={"help": "Continue from the last checkpoint in OUT/checkpoints."})
    keep_checkpoints: bool = False
    push_to_hub: str | None = field(default=None, metadata={"help": "Hub repo id to push the result to."})

    def check(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.learning_rate <= 0:
            raise UserError("--epochs and --batch-size must be at least 1 and --learning-rate positive.")
        if not 0 < self.validation_fraction < 1:
            raise UserError("--validation-fraction must be between 0 and 1.")
        check_schedule(self.schedule, self.cycles)


def check_schedule(schedule: str, cycles: int) -> None:
    if schedule not in SCHEDULES:
        raise UserError(f"--schedule must be one of {', '.join(SCHEDULES)}; got {schedule!r}.")
    if cycles < 1:
        raise UserError(f"--cycles must be at least 1; got {cycles}.")


def parse(argv: list[str], arguments_class, prog: str, description: str):
    parser = HfArgumentParser(arguments_class, prog=prog, description=description,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    (args,) = parser.parse_args_into_dataclasses(args=argv)
    args.check()
    return args


def trainer_arguments(args: TrainingOptions, train_size: int, metric: str, arguments_class=TrainingArguments,
                      **overrides) -> TrainingArguments:
    """The shared Trainer settings; `arguments_class` may be Seq2SeqTrainingArguments, `overrides` win."""
    steps = args.epochs * math.ceil(train_size / args.batch_size)
    cuda = torch.cuda.is_available()
    schedule = ({"lr_scheduler_type": "cosine_with_restarts", "lr_scheduler_kwargs": {"num_cycles": args.cycles}}
                if args.schedule == "warm-restarts" else {"lr_scheduler_type": "cosine"})
    settings = dict(
        output_dir=str(Path(args.out) / "checkpoints"), num_train_epochs=args.epochs,
        per_device_train_batch_size=args.batch_size, per_device_eval_batch_size=args.batch_size,
        learning_rate=args.learning_rate, weight_decay=args.weight_decay,
        warmup_steps=int(args.warmup_fraction * steps), **schedule,
        eval_strategy="epoch", save_strategy="epoch", logging_strategy="steps",
        logging_steps=max(1, steps // CURVE_POINTS), load_best_model_at_end=True, metric_for_best_model=metric,
        save_total_limit=2, seed=args.seed, remove_unused_columns=False, report_to=[],
        bf16=cuda and torch.cuda.is_bf16_supported(), fp16=cuda and not torch.cuda.is_bf16_supported(),
        dataloader_num_workers=0, dataloader_pin_memory=cuda,
        # on a machine without a GPU, say so: then the processes torchrun starts train data-parallel
        # (DDP over gloo) instead of each training alone on all the data
        use_cpu=not cuda and not torch.backends.mps.is_available(),
        push_to_hub=bool(args.push_to_hub), hub_model_id=args.push_to_hub,
    )
    return arguments_class(**{**settings, **overrides})


def build_model(auto_class, folder: Path, id2label: dict[int, str], from_scratch: bool):
    """The task's model with the dataset's labels: from the folder's config alone (`--from-scratch`),
    or from its weights with a new head where the labels differ."""
    label2id = {name: i for i, name in id2label.items()}
    if from_scratch:
        config = AutoConfig.from_pretrained(folder, id2label=id2label, label2id=label2id)
        return auto_class.from_config(config)
    if not any(folder.glob("*.safetensors")):
        raise UserError(f"{folder} has no safetensors weights; add --from-scratch to train its config from scratch.")
    return auto_class.from_pretrained(folder, id2label=id2label, label2id=label2id, ignore_mismatched_sizes=True,
                                      use_safetensors=True)


def reload_best(trainer, model_class) -> None:
    """Load the best checkpoint again with `from_pretrained`.

    With transformers 5.23 the Trainer's own load_best_model_at_end skips the checkpoint-key
    conversion that some models need (RT-DETR's encoder and decoder MLPs come back "unexpected"
    and keep their last-epoch weights); from_pretrained converts them.
    """
    best = trainer.state.best_model_checkpoint
    if best:
        device = next(trainer.model.parameters()).device
        trainer.model = model_class.from_pretrained(best, use_safetensors=True).to(device)
        trainer.model_wrapped = trainer.model


def freeze_backbone(model) -> None:
    """Freeze the feature extractor, so only the head (and a detector's encoder-decoder) learns:
    the model's `backbone` where it has one (detectors, UperNet), else its base model (classifiers)."""
    base = getattr(model, model.base_model_prefix) if model.base_model_prefix else model
    frozen = getattr(base, "backbone", None) or base
    if frozen is model:
        raise UserError(f"{type(model).__name__} has no separate backbone to freeze; drop --freeze-backbone.")
    for parameter in frozen.parameters():
        parameter.requires_grad = False


def rounded(metrics: dict) -> dict:
    return {k: round(v, 6) if isinstance(v, float) else v for k, v in metrics.items()}


def save(trainer, processor, args: TrainingOptions, metrics: dict, card: str) -> None:
    """The model, processor, metrics, arguments and card into args.out; then push and tidy up."""
    out = Path(args.out)
    trainer.save_model(str(out))  # every process calls it; only the first writes
    if not trainer.is_world_process_zero():  # under torchrun: the other processes write nothing
        return
    processor.save_pretrained(out)
    (out / "training_args.bin").unlink(missing_ok=True)  # a pickle; finetune_args.json says the same
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    write_curves(trainer.state.log_history, out / "curves.png")
    (out / "finetune_args.json").write_text(json.dumps(asdict(args), indent=2) + "\n")
    (out / "README.md").write_text(card)
    if args.push_to_hub:
        trainer.push_to_hub()
    if not args.keep_checkpoints:
        shutil.rmtree(out / "checkpoints", ignore_errors=True)


def torch_scheduler(optimizer: torch.optim.Optimizer, schedule: str, cycles: int, steps: int):
    """For scripts with a plain loop: torch's cosine decay over `steps`, or SGDR's warm restarts
    (CosineAnnealingWarmRestarts, `cycles` equal cycles)."""
    check_schedule(schedule, cycles)
    if schedule == "warm-restarts":
        return torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(optimizer, T_0=max(1, math.ceil(steps / cycles)))
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)


def write_curves(log: list[dict], path: Path) -> None:
    """The learning rate and every loss in `log` (the Trainer's log_history, or rows of a plain loop:
    {"step", "learning_rate", "<name>loss", ...}) against the step, as a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10.0, 3.6), dpi=100)
    FigureCanvasAgg(figure)
    rate, losses = figure.subplots(1, 2)
    rows = [row for row in log if "step" in row]
    points = [(row["step"], row["learning_rate"]) for row in rows if "learning_rate" in row]
    if points:
        rate.plot(*zip(*points, strict=True))
    rate.set(xlabel="step", ylabel="learning rate", title="learning rate")
    names = sorted({k for row in rows for k in row if k.endswith("loss") and k != "train_loss"})
    for name in names:
        seen = [(row["step"], row[name]) for row in rows if name in row]
        losses.plot(*zip(*seen, strict=True), marker=None if name == "loss" else "o", markersize=3, label=name)
    losses.set(xlabel="step", ylabel="loss", title="losses")
    if names:
        losses.legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", bbox_inches="tight")
