"""A model of plain images (digits, synthetic scenes) says what it knows when given a photo, and
each page's examples follow the model picked."""

from pathlib import Path

from PIL import Image, ImageDraw

from apps.adversarial.task import attack
from apps.captioning.task import caption
from apps.classification.task import classify
from apps.detection.task import detect
from apps.segmentation.task import segment
from apps.vqa.task import answer
from shared import apps
from shared.data.examples import PHOTOS
from shared.data.scenes import make_scene
from shared.inputs.images import decode_image, is_plain
from shared.models import registry
from shared.serving import ui
from tests.conftest import DIGIT_EXAMPLES

DIGIT = DIGIT_EXAMPLES / "digit_7.png"


def knows_note(result) -> list[str]:
    return [note for note in result.all_notes if " knows only " in note]


def drawing() -> Image.Image:
    """A 7 as the sketchpad draws it: black strokes on white."""
    image = Image.new("RGB", (256, 256), "white")
    ImageDraw.Draw(image).line([(70, 50), (190, 50), (110, 220)], fill="black", width=24)
    return image


def test_plain_images_and_photos_are_told_apart():
    assert all(is_plain(decode_image(path).image) for path in sorted(DIGIT_EXAMPLES.glob("*.png")))
    assert is_plain(drawing()) and all(is_plain(make_scene(1, i).image) for i in range(20))
    assert not any(is_plain(decode_image(path).image) for path in PHOTOS.values())


def test_a_photo_on_a_digits_model_says_what_the_model_knows():
    (note,) = knows_note(classify(PHOTOS["cat"], model="digits-convnext"))
    assert note.startswith("digits-convnext knows only handwritten digits 0-9")
    assert note.endswith("Pick efficientnet-lite0, which knows photos, for it.")  # the one that needs no Hub
    assert knows_note(attack(PHOTOS["cat"], model="digits-convnext", steps=2))
    assert knows_note(detect(PHOTOS["coffee"], model="digits-rtdetr"))
    assert knows_note(segment(PHOTOS["coffee"], model="digits-upernet"))
    (note,) = knows_note(caption(PHOTOS["astronaut"], model="scenes-captioner"))
    assert note.startswith("scenes-captioner knows only coloured digits 0-9 in synthetic scenes")
    assert knows_note(answer(PHOTOS["coffee"], ["how many digits are there?"], model="scenes-vqa"))


def test_a_digit_or_a_scene_gets_no_such_note(tiny_models):
    assert not knows_note(classify(DIGIT, model="digits-convnext"))
    assert not knows_note(classify(drawing(), model="digits-convnext"))
    assert not knows_note(attack(DIGIT, model="digits-convnext", steps=2))
    assert not knows_note(detect(make_scene(1, 0).image, model="digits-rtdetr"))
    assert not knows_note(segment(make_scene(1, 0).image, model="digits-upernet"))
    assert not knows_note(caption(make_scene(1, 0).image, model="scenes-captioner"))
    assert not knows_note(answer(make_scene(1, 0).image, ["how many digits are there?"], model="scenes-vqa"))
    assert not knows_note(classify(PHOTOS["cat"], model=next(iter(tiny_models.values()))))  # it knows photos


def test_examples_follow_the_model():
    classification = apps.get("classification")
    digits = ui.example_rows(classification, "digits-convnext")
    photos = ui.example_rows(classification, "google/vit-base-patch16-224")
    assert digits != photos
    assert all(is_plain(decode_image(row[0]).image) for row in digits)
    assert not any(is_plain(decode_image(row[0]).image) for row in photos)
    for name in ("classification", "adversarial", "detection", "segmentation", "captioning", "vqa"):
        spec = apps.get(name)
        for entry in registry.entries(spec.models.task):
            rows = ui.example_rows(spec, entry.name)
            assert rows and all(is_plain(decode_image(row[0]).image) == bool(entry.knows) for row in rows), entry.name


def test_every_embedded_model_of_images_says_what_it_knows():
    """The embedded models trained here on digits and scenes say so; the Hub models and the embedded
    ImageNet classifier (Google's weights, apps/classification/efficientnet_lite.py) know photos."""
    for entry in registry.entries("classification") + registry.entries("detection") + registry.entries(
            "segmentation") + registry.entries("captioning") + registry.entries("vqa"):
        trained_here = entry.source == "embedded" and entry.name != "efficientnet-lite0"
        assert bool(entry.knows) == trained_here, entry.name


def test_each_page_shows_the_examples_of_its_default_model():
    import gradio as gr

    for name in ("classification", "adversarial", "detection", "segmentation", "captioning", "vqa"):
        datasets = [block for block in apps.page(name).blocks.values() if isinstance(block, gr.Dataset)]
        shown = [[row[0]["orig_name"] for row in dataset.samples] for dataset in datasets if dataset.parent.visible]
        assert len(datasets) == 2 and len(shown) == 1, name
        assert shown[0] == [Path(row[0]).name for row in apps.get(name).plain_examples], name


def test_a_photo_for_an_offline_hub_model_is_refused_not_answered_by_a_plain_image_stand_in():
    """Offline, a Hub detector or captioner falls back to the embedded scenes model; on a photo that
    answered boxes labelled 4 and captions of coloured digits (found by a visitor). A scene is still
    answered by the stand-in, and says so."""
    import pytest

    from shared.errors import UserError

    scene = make_scene(1, 0).image
    blip = "Salesforce/blip-image-captioning-base"
    for run, hub in ((lambda image, m: detect(image, model=m, fallback=True), "PekingU/rtdetr_r18vd"),
                     (lambda image, m: caption(image, model=m, fallback=True), blip)):
        with pytest.raises(UserError, match="Its offline stand-in, .* knows only .* looks like a photo"):
            run(PHOTOS["coffee"], hub)
        assert any("Answered with" in note for note in run(scene, hub).all_notes)


def test_the_advice_for_a_photo_names_a_model_that_does_the_same_and_loads_here(monkeypatch):
    """A VAE was told to pick the digits GAN "which knows photos", and offline apps to pick Hub models
    this machine cannot load (found by a visitor)."""
    from apps.generative.task import reconstruct
    from shared.contract import photo_model_advice
    from shared.models import hub

    shipped = registry.entries  # the registry's own rows: other tests add tiny local models that load
    monkeypatch.setattr(registry, "entries", lambda task: [e for e in shipped(task) if e.source != "local"])
    (note,) = knows_note(reconstruct(PHOTOS["cat"], model="digits-vae"))
    assert "digits-gan" not in note and "madebyollin/taesd" in note and "cannot reach" in note
    assert photo_model_advice(registry.get("detection", "digits-rtdetr")).startswith(
        "The models that know photos (hustvl/yolos-tiny, PekingU/rtdetr_r18vd) need the Hugging Face Hub")
    offline = "hustvl/yolos-tiny (hub, Apache-2.0; offline: not downloaded)"
    assert picker_label("detection", "hustvl/yolos-tiny") == offline
    monkeypatch.setattr(hub, "hub_reachable", lambda ttl_s=60.0: True)
    assert photo_model_advice(registry.get("detection", "digits-rtdetr")) == (
        "Pick hustvl/yolos-tiny, which knows photos, for it.")
    assert picker_label("detection", "hustvl/yolos-tiny") == "hustvl/yolos-tiny (hub, Apache-2.0)"


def picker_label(task: str, name: str) -> str:
    return next(label for label, value in ui.model_dropdown(task).choices if value == name)
