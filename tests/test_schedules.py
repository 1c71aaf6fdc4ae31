"""The shared learning-rate schedules (shared/training.py): cosine, or SGDR's warm restarts on both the
Trainer scripts (transformers' cosine_with_restarts) and the plain loops (torch's
CosineAnnealingWarmRestarts), and the curves.png every run writes beside metrics.json."""

import numpy as np
import pytest
import torch
from transformers import get_scheduler

from apps.classification import finetune
from shared import training
from shared.errors import UserError

STEPS = 60


def trainer_rates(argv: list[str], tmp_path) -> np.ndarray:
    """The learning rate at each step of the scheduler the Trainer builds from the shared settings."""
    args = finetune.parse(["--data", str(tmp_path), "--out", str(tmp_path / "out"), "--epochs", "3",
                           "--batch-size", "10", "--learning-rate", "1e-3", *argv])
    settings = training.trainer_arguments(args, train_size=200, metric="loss")
    optimiser = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=settings.learning_rate)
    schedule = get_scheduler(settings.lr_scheduler_type, optimiser, num_warmup_steps=settings.warmup_steps,
                             num_training_steps=STEPS, scheduler_specific_kwargs=settings.lr_scheduler_kwargs)
    rates = []
    for _ in range(STEPS):
        rates.append(schedule.get_last_lr()[0])
        optimiser.step()
        schedule.step()
    return np.array(rates)


def restarts(rates: np.ndarray) -> int:
    """How often the rate jumps back up after the warm-up."""
    peak = int(np.argmax(rates))
    return int((np.diff(rates[peak:]) > 1e-4 * rates.max()).sum())


def test_trainer_scripts_get_warm_restarts_when_asked(tmp_path):
    cosine = trainer_rates([], tmp_path)
    sgdr = trainer_rates(["--schedule", "warm-restarts", "--cycles", "3"], tmp_path)
    assert restarts(cosine) == 0 and restarts(sgdr) == 2
    assert sgdr.max() == pytest.approx(1e-3) and cosine.max() == pytest.approx(1e-3)
    assert (sgdr[-5:] < 2e-4).all() and (cosine[-5:] < 2e-4).all()  # both end near zero


def test_plain_loops_get_torchs_warm_restarts():
    def rates(schedule):
        optimiser = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
        scheduler = training.torch_scheduler(optimiser, schedule, cycles=4, steps=STEPS)
        seen = []
        for _ in range(STEPS):
            seen.append(scheduler.get_last_lr()[0])
            optimiser.step()
            scheduler.step()
        return np.array(seen)

    cosine, sgdr = rates("cosine"), rates("warm-restarts")
    assert isinstance(training.torch_scheduler(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1),
                                               "warm-restarts", 4, STEPS),
                      torch.optim.lr_scheduler.CosineAnnealingWarmRestarts)
    assert restarts(cosine) == 0 and restarts(sgdr) == 3
    assert np.flatnonzero(np.diff(sgdr) > 0).tolist() == [14, 29, 44]  # every 15 steps, back to the full rate


def test_curves_are_written_as_a_png(tmp_path):
    log = [{"step": s, "learning_rate": 1e-3 * (1 - s / 30), "loss": 2.0 / (s + 1), "epoch": s / 10}
           for s in range(1, 30)] + [{"step": 10, "eval_loss": 0.5}, {"step": 20, "eval_loss": 0.3},
                                     {"step": 29, "train_loss": 0.4, "train_runtime": 3.0}]
    training.write_curves(log, tmp_path / "curves.png")
    from PIL import Image

    picture = Image.open(tmp_path / "curves.png")
    assert picture.format == "PNG" and picture.size[0] > 600


@pytest.mark.parametrize("argv, words", [
    (["--schedule", "step"], "invalid choice: 'step'"),
    (["--schedule", "warm-restarts", "--cycles", "0"], "--cycles must be at least 1"),
])
def test_bad_schedules_get_one_sentence(tmp_path, capsys, argv, words):
    with pytest.raises((UserError, SystemExit)) as caught:
        finetune.parse(["--data", str(tmp_path), "--out", str(tmp_path / "out"), *argv])
    assert words in (str(caught.value) + capsys.readouterr().err)
