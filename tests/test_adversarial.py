"""The adversarial app: attacks equal the Adversarial Robustness Toolbox's, results mean what
they say, limits hold, and the robust embedded model earns its card."""

import json

import numpy as np
import pytest
import torch
from art.attacks.evasion import FastGradientMethod, ProjectedGradientDescentPyTorch
from art.estimators.classification import PyTorchClassifier

from apps.adversarial import attacks, task
from shared.data.examples import PHOTOS
from shared.errors import UserError
from shared.models import registry
from tests.conftest import DIGIT_EXAMPLES

SEVEN = DIGIT_EXAMPLES / "digit_7.png"


def digits_batch(name: str = "digits-convnext", n: int = 16):
    loaded = task.MODELS.load(name)
    pixels, labels = task.digits_evaluation_set(loaded, n)
    return loaded, task.classifier_of(loaded), pixels, labels


def art_classifier(classifier, pixels):
    return PyTorchClassifier(model=classifier, loss=torch.nn.CrossEntropyLoss(), input_shape=tuple(pixels.shape[1:]),
                             nb_classes=10, clip_values=(0.0, 1.0), device_type="cpu")


@pytest.mark.parametrize("targeted", [False, True])
def test_fgsm_equals_art(targeted):
    _, classifier, pixels, labels = digits_batch()
    wanted = (labels + 1) % 10 if targeted else labels
    ours = attacks.fgsm(classifier, pixels, wanted, eps=0.05, targeted=targeted)
    theirs = FastGradientMethod(art_classifier(classifier, pixels), norm=np.inf, eps=0.05, targeted=targeted,
                                num_random_init=0).generate(pixels.numpy(), y=wanted.numpy())
    np.testing.assert_allclose(ours.numpy(), theirs, atol=1e-6)


@pytest.mark.parametrize("norm, eps, targeted", [("linf", 0.05, False), ("linf", 0.05, True), ("l2", 1.0, False),
                                                 ("l2", 1.0, True)])
def test_pgd_equals_art(norm, eps, targeted):
    _, classifier, pixels, labels = digits_batch()
    wanted = (labels + 3) % 10 if targeted else labels
    steps, step_size = 5, 2.5 * eps / 5
    ours, steps_run = attacks.pgd(classifier, pixels, wanted, eps, steps, step_size, targeted, norm)
    art_attack = ProjectedGradientDescentPyTorch(
        art_classifier(classifier, pixels), norm=np.inf if norm == "linf" else 2, eps=eps, eps_step=step_size,
        max_iter=steps, targeted=targeted, num_random_init=0, batch_size=len(pixels), verbose=False)
    theirs = art_attack.generate(pixels.numpy(), y=wanted.numpy())
    assert steps_run == steps
    # L2 steps divide by the gradient's norm, which is tiny for confidently classified digits, so
    # float32 rounding in that norm shows at ~1e-5 of a pixel; L-inf steps use its sign only.
    np.testing.assert_allclose(ours.numpy(), theirs, atol=1e-5 if norm == "linf" else 1e-4)


def test_untargeted_pgd_fools_the_model_within_its_budget():
    result = task.attack(SEVEN, attack="pgd", eps=0.1, steps=10, transfer_model="digits-convnext-robust")
    assert result["before"][0]["label"] == "7" and result["success"] and result["after"][0]["label"] != "7"
    assert result["linf"] <= 0.1 + 1e-6 and result["l2"] > 0
    assert result["onnx_after"]["label"] == result["after"][0]["label"]  # the attack survives the ONNX backend
    assert result["transfer"]["model"] == "digits-convnext-robust" and result["transfer"]["before"]["label"] == "7"


@pytest.mark.parametrize("attack, eps", [("pgd", 0.03), ("fgsm", 8 / 255), ("pgd-l2", 1.0)])
def test_the_saved_images_keep_the_budget_and_the_answers_are_about_them(attack, eps):
    """What the user gets is 8-bit files: the adversarial one differs from the original by at most eps
    (rounding to nearest took an eps of 0.03, 7.65 levels, to 8), and `after` is the saved file's label."""
    result = task.attack(SEVEN, attack=attack, eps=eps, steps=10)
    original, adversarial = (np.asarray(result.images[name], dtype=np.float64) / 255
                             for name in ("original", "adversarial"))
    change = adversarial - original
    if attack == "pgd-l2":
        assert np.linalg.norm(change) <= eps + 1e-6
    else:
        assert np.abs(change).max() <= eps + 1e-9 and np.abs(change).max() > eps - 1 / 255
    assert result["linf"] == pytest.approx(np.abs(change).max(), abs=1e-6)
    assert result["l2"] == pytest.approx(np.linalg.norm(change), abs=1e-4)
    loaded = task.MODELS.load(None)
    saved = task.read_back(result.images["adversarial"], loaded.device)
    assert task.predicted(loaded, task.classifier_of(loaded), saved, 1)[0][0]["label"] == result["after"][0]["label"]
    assert result["onnx_after"]["label"] == result["after"][0]["label"]


def test_targeted_pgd_reaches_its_target():
    result = task.attack(SEVEN, attack="pgd", eps=0.2, steps=20, target="1")
    assert result["success"] and result["after"][0]["label"] == "1"


def test_l2_attacks_respect_their_radius_and_deepfool_is_small():
    pgd_l2 = task.attack(SEVEN, attack="pgd-l2", eps=1.5, steps=10)
    assert pgd_l2["l2"] <= 1.5 + 1e-4
    deepfool = task.attack(SEVEN, attack="deepfool", eps=0.0, steps=50)
    assert deepfool["success"] and deepfool["l2"] < pgd_l2["l2"] * 2


def test_the_time_limit_stops_an_attack(monkeypatch):
    monkeypatch.setattr(task, "TIME_LIMIT_S", 0.0)
    result = task.attack(SEVEN, attack="pgd", eps=0.1, steps=100)
    assert result["steps_run"] < 100 and any("time limit" in note for note in result["notes"])


def test_fgsm_is_one_step_and_never_said_to_be_stopped_by_the_time_limit():
    """The page's steps slider stays at 10 when FGSM is picked: its one step is the whole attack."""
    result = task.attack(SEVEN, attack="fgsm", eps=0.1, steps=10)
    assert result["steps_run"] == 1 and not any("time limit" in note for note in result["notes"])


@pytest.mark.parametrize("settings, words", [
    ({"eps": 0.9}, "eps must be a number from 0.0 to 0.5"),
    ({"eps": float("nan")}, "eps must be a number"),
    ({"steps": 0}, "steps must be a whole number from 1 to 100"),
    ({"steps": 10_000}, "steps must be a whole number from 1 to 100"),
    ({"target": "cat"}, "has no label 'cat'"),
    ({"attack": "cw"}, "Unknown attack"),
    ({"attack": "deepfool", "target": "3"}, "DeepFool is untargeted"),
    ({"target": "7"}, "already reads this image as '7'; pick another target"),  # "fooled" while still a 7
])
def test_bad_settings_are_refused(settings, words):
    with pytest.raises(UserError, match=words):
        task.attack(SEVEN, **{"attack": "pgd", "eps": 0.05, "steps": 5, **settings})


def test_robustness_curve_starts_at_clean_accuracy_and_falls():
    curve = task.robustness_curve(attack="pgd", max_eps=0.1, points=3, n=50, steps=5)
    assert [p["eps"] for p in curve] == [0.0, 0.05, 0.1]
    assert curve[0]["accuracy"] >= 0.9 and curve[-1]["accuracy"] < curve[0]["accuracy"]
    assert curve[0]["measured_on"] == "50 held-out digits"


def test_a_photo_models_curve_is_on_the_shipped_photos_against_their_clean_labels():
    curve = task.robustness_curve(model="efficientnet-lite0", attack="fgsm", max_eps=0.02, points=2)
    assert curve[0]["measured_on"] == "11 shipped photos, against the model's clean top label"
    assert curve[0]["accuracy"] == 1.0 and curve[-1]["accuracy"] < 1.0


def test_robust_model_is_at_least_three_times_as_robust():
    card = json.loads((registry.get("classification", "digits-convnext-robust").local_dir / "metrics.json").read_text())
    assert card["after_robust_accuracy"] >= 3 * card["before_robust_accuracy"]
    assert card["after_clean_accuracy"] >= 0.9
    loaded_plain, _, pixels, labels = digits_batch("digits-convnext", 100)
    loaded_robust = task.MODELS.load("digits-convnext-robust")
    eps = json.loads((loaded_robust.folder / "finetune_args.json").read_text())["eps"]
    plain = task.robust_accuracy(loaded_plain, pixels, labels, "pgd", eps, steps=10)
    robust = task.robust_accuracy(loaded_robust, pixels, labels, "pgd", eps, steps=10)
    assert robust >= 3 * plain and robust > 0.3


@pytest.mark.slow
def test_adversarial_finetune_measures_every_way_users_draw(tmp_path):
    from apps.adversarial import finetune
    from shared.data.digits import digit_image, split

    for split_name, (pixels, labels) in split().items():
        for index, (p, label) in enumerate(zip(pixels[:150], labels[:150], strict=True)):
            (tmp_path / "data" / split_name / str(label)).mkdir(parents=True, exist_ok=True)
            digit_image(p).save(tmp_path / "data" / split_name / str(label) / f"{index:03d}.png")
    out = tmp_path / "robust"
    metrics = finetune.main(["--data", str(tmp_path / "data"), "--out", str(out), "--epochs", "1", "--batch-size",
                             "16", "--eps", "0.03", "--attack-steps", "2", "--eval-attack-steps", "5",
                             "--ink-augment", "true"])
    for when in ("before", "after"):
        for kind in ("clean", "robust"):
            for drawn in ("", "_white_on_black", "_shifted", "_shifted_white_on_black"):
                assert 0 <= metrics[f"{when}_{kind}_accuracy{drawn}"] <= 1
    assert metrics["after_clean_accuracy"] == pytest.approx(metrics["test_accuracy"], abs=1e-4)
    card = (out / "README.md").read_text()
    assert "clean white on black" in card and f"{metrics['after_robust_accuracy_shifted']:.4f}" in card


def test_the_onnx_check_reads_the_attacked_input_itself_on_a_model_that_crops():
    """efficientnet-lite0's processor centre-crops: read through it again, the 224 px adversarial image
    was cropped a second time, and with eps 0 the ONNX check named another cat than the attack's answer."""
    result = task.attack(PHOTOS["cat"], model="efficientnet-lite0", attack="pgd", eps=0.0, steps=1)
    assert not result["success"]
    assert result["onnx_after"]["label"] == result["after"][0]["label"] == result["before"][0]["label"]


def test_the_transfer_check_reads_the_attacked_input_without_cropping_it_again():
    """The same for the second model: efficientnet-lite0 as its own second model, with eps 0, must answer
    as the attack did (read through its processor again, the crop named another cat)."""
    result = task.attack(PHOTOS["cat"], model="efficientnet-lite0", attack="pgd", eps=0.0, steps=1)
    transfer = task.transfer(result.images["original"], result.images["adversarial"], "efficientnet-lite0")
    assert transfer["before"]["label"] == transfer["after"]["label"] == result["before"][0]["label"]
    assert abs(transfer["before"]["score"] - result["before"][0]["score"]) < 0.01 and not transfer["fooled"]


def test_the_second_model_offered_knows_the_same_kind_of_image():
    assert task.transfer_model_for("digits-convnext") == "digits-convnext-robust"
    assert task.transfer_model_for("digits-convnext-robust") == "digits-convnext"
    photo_model = registry.get("classification", task.transfer_model_for("efficientnet-lite0"))
    assert photo_model.name != "efficientnet-lite0" and not photo_model.knows  # a photo model, not a digits one


def test_the_pages_curve_says_what_it_measured_and_where_it_stopped(monkeypatch):
    from apps.adversarial import app

    frame, caption = app.robustness("digits-convnext", "fgsm", 0.05)
    assert len(frame) == task.CURVE_POINTS
    assert caption == "Accuracy of digits-convnext under fgsm on 100 held-out digits."
    monkeypatch.setattr(task, "TIME_LIMIT_S", 0.0)  # nothing but the clean point fits
    frame, caption = app.robustness("digits-convnext", "pgd", 0.05)
    assert len(frame) == 1 and caption.endswith("The curve stopped at the 0 s limit after 1 of 6 epsilons, at 0.0: "
                                                 "fgsm, or fewer steps, draws all of them.")


def test_deepfool_says_it_uses_no_epsilon_and_the_attacked_model_is_not_its_own_transfer_check():
    """Both seen by a visitor: DeepFool ignored the slider without a word, and an offline Hub model's
    stand-in was checked for transfer against itself."""
    deepfool = task.attack(SEVEN, attack="deepfool", eps=0.05, steps=50)
    assert any("DeepFool has no budget" in note for note in deepfool["notes"])
    same = task.attack(SEVEN, attack="fgsm", eps=0.05, transfer_model="digits-convnext")
    assert "transfer" not in same.answer
    assert "transfer not checked: the second model is digits-convnext, the model attacked here" in same["notes"]


def test_the_epsilon_slider_follows_the_attack():
    from apps.adversarial import app

    assert app.eps_slider("pgd-l2").maximum == 5.0 and app.eps_slider("pgd").maximum == 0.3
    assert "not used" in app.eps_slider("deepfool").label
