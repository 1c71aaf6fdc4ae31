"""Fine-tuning smoke runs with a metric floor: the output folder must load in the app."""

import json
from pathlib import Path

import pytest
from datasets import ClassLabel, Dataset, Features
from datasets import Image as ImageFeature

from apps.classification import finetune, task
from shared.data.digits import digit_image, split
from shared.errors import UserError
from shared.models import registry
from tests.conftest import torchrun
from tests.tiny import make_tiny_classifier

pytestmark = pytest.mark.slow
DIGITS = ("0", "1", "7")


def digits_folder(root: Path, per_class: int = 40) -> Path:
    pixels, labels = split()["train"]
    counts = dict.fromkeys(DIGITS, 0)
    for p, label in zip(pixels, labels, strict=True):
        name = str(label)
        if name in counts and counts[name] < per_class:
            (root / name).mkdir(parents=True, exist_ok=True)
            digit_image(p).save(root / name / f"{counts[name]:03d}.png")
            counts[name] += 1
    return root


def test_linear_probe_from_the_embedded_model_learns_and_loads(tmp_path):
    out = tmp_path / "probe"
    metrics = finetune.main(["--data", str(digits_folder(tmp_path / "data")), "--out", str(out),
                             "--freeze-backbone", "--epochs", "6", "--learning-rate", "1e-2", "--batch-size", "16"])
    assert metrics["eval_accuracy"] >= 0.9  # the frozen digits features separate three digits at once
    assert json.loads((out / "metrics.json").read_text())["eval_accuracy"] == metrics["eval_accuracy"]
    assert (out / "model.safetensors").is_file() and not (out / "training_args.bin").exists()
    assert not (out / "checkpoints").exists() and "Held-out accuracy" in (out / "README.md").read_text()
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"  # the learning rate and losses by step

    entry = registry.add_local("classification", out)
    result = task.classify(digit_image(split()["test"][0][0]), model=entry.name, top_k=3)
    assert {row["label"] for row in result["labels"]} == set(DIGITS)


def test_ink_augmented_runs_are_reproducible_and_measured_as_users_draw(tmp_path):
    data = tmp_path / "data"
    digits_folder(data / "train", per_class=20)
    pixels, labels = split()["test"]
    for index, (p, label) in enumerate(zip(pixels[:60], labels[:60], strict=True)):
        if str(label) in DIGITS:
            (data / "test" / str(label)).mkdir(parents=True, exist_ok=True)
            digit_image(p).save(data / "test" / str(label) / f"{index:03d}.png")
    runs = [finetune.main(["--data", str(data), "--out", str(tmp_path / f"run{i}"), "--ink-augment", "true",
                           "--validation-copies", "3", "--epochs", "2", "--learning-rate", "1e-3",
                           "--batch-size", "16"]) for i in (1, 2)]
    first, second = ({k: v for k, v in run.items() if "runtime" not in k and "per_second" not in k} for run in runs)
    assert first == second  # same seed: same augmentations, data order and weights
    assert {"test_accuracy_white_on_black", "test_accuracy_shifted", "test_accuracy_shifted_white_on_black"} <= set(
        first)
    # the same digits through two code paths
    assert first["test_accuracy_dark_on_white"] == pytest.approx(first["test_accuracy"], abs=1e-4)
    card = (tmp_path / "run1" / "README.md").read_text()
    assert f"white on black: **{first['test_accuracy_white_on_black']:.4f}**" in card


def test_full_finetune_of_a_hub_architecture_resumes(tmp_path):
    data = digits_folder(tmp_path / "data", per_class=12)
    source = make_tiny_classifier("vit", tmp_path / "source-vit")
    out = tmp_path / "vit"
    common = ["--data", str(data), "--out", str(out), "--model", str(source), "--batch-size", "8",
              "--keep-checkpoints", "true"]
    finetune.main([*common, "--epochs", "1"])
    assert list((out / "checkpoints").glob("checkpoint-*"))
    metrics = finetune.main([*common, "--epochs", "2", "--resume", "true"])
    assert metrics["epochs_run"] == 2.0


def test_a_datasets_dataset_is_read_like_a_folder(tmp_path):
    pixels, labels = split()["train"]
    rows = [(digit_image(p), int(lab)) for p, lab in zip(pixels, labels, strict=True) if lab in (0, 1)][:40]
    features = Features({"picture": ImageFeature(), "digit": ClassLabel(names=["zero", "one"])})
    dataset = Dataset.from_dict({"picture": [r[0] for r in rows], "digit": [r[1] for r in rows]}, features=features)
    (tmp_path / "ds").mkdir()
    dataset.to_parquet(tmp_path / "ds" / "train.parquet")
    metrics = finetune.main(["--dataset", str(tmp_path / "ds"), "--image-column", "picture", "--label-column",
                             "digit", "--out", str(tmp_path / "out"), "--freeze-backbone", "--epochs", "1"])
    assert "eval_accuracy" in metrics
    assert json.loads((tmp_path / "out" / "config.json").read_text())["id2label"] == {"0": "zero", "1": "one"}


def test_arguments_are_checked_with_a_sentence(tmp_path):
    with pytest.raises(UserError, match="exactly one of --data"):
        finetune.main(["--out", str(tmp_path)])
    with pytest.raises(UserError, match="no such folder"):
        finetune.main(["--data", str(tmp_path / "missing"), "--out", str(tmp_path)])


def test_two_processes_under_torchrun_train_data_parallel_with_the_same_metrics(tmp_path):
    """`torchrun --nproc_per_node=2` on CPU (DDP over gloo): each process takes half of each epoch's
    batches, one writes the output, and metrics.json has the keys of a one-process run."""
    data = digits_folder(tmp_path / "data", per_class=16)
    common = ["--data", str(data), "--freeze-backbone", "--epochs", "1", "--batch-size", "8"]
    alone = finetune.main([*common, "--out", str(tmp_path / "alone")])
    run = torchrun("finetune", "classification", *common, "--out", str(tmp_path / "ddp"))
    assert run.returncode == 0, run.stderr[-2000:]
    assert "parallel_mode != ParallelMode.DISTRIBUTED" not in run.stderr  # the Trainer did run DDP
    assert "3/3" in run.stderr and "6/6" not in run.stderr  # 48 images, batches of 8 per process: 3 steps each
    metrics = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert set(metrics) == set(alone) and metrics["eval_accuracy"] > 0
