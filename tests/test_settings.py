"""What the project does with the user's settings: unset means the model's own, a value the
project changes is said in the answer's notes, a bad one is refused with a sentence; and
`repo_id@revision` works for every task."""

import json
import random
import shutil
import string

import gradio as gr
import pytest
from gradio.data_classes import FileData
from transformers import GenerationConfig

from apps.adversarial import app as adversarial_page
from apps.classification import task as classification
from apps.translation import task as translation
from shared.inference.pipelines import translation_inputs
from shared.models import registry
from shared.serving import cli
from shared.serving.ui import ImageInput
from tests.conftest import DIGIT_EXAMPLES

REVISION = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(autouse=True)
def own_registry(monkeypatch):
    """Models these tests add by path or revision stay in these tests."""
    monkeypatch.setattr(registry, "_ENTRIES", dict(registry._ENTRIES))


def test_top_k_above_the_label_count_is_said():
    result = classification.classify(DIGIT_EXAMPLES / "digit_7.png", top_k=20)
    assert len(result["labels"]) == 10
    assert "knows 10 labels, fewer than the 20 asked for" in result["notes"][0]


def test_max_new_tokens_above_what_the_model_can_write_is_said():
    result = translation.translate("Is there an 8?", max_new_tokens=512)
    assert result["translation"] == "Gibt es eine 8?"
    assert "max_new_tokens 512 is more than scenes-marian can write" in result["notes"][0]


@pytest.mark.parametrize("eps, words", [(0, "Set epsilon above 0"), ("lots", "eps must be a number")])
def test_the_robustness_curve_refuses_instead_of_raising_epsilon(eps, words):
    with pytest.raises(gr.Error, match=words):
        adversarial_page.robustness("digits-convnext", "pgd", eps)


def test_a_data_url_is_refused_with_a_sentence_not_called_empty():
    """Images come only as uploads (issue 11); a data: URL is named as such, never "an empty file"."""
    with pytest.raises(gr.Error, match="uploaded to this server") as caught:
        ImageInput().preprocess(FileData(path="upload.png", url="data:image/png;base64,@@not base64@@"))
    assert "empty" not in str(caught.value)


def test_unset_generation_settings_are_the_models_own(tmp_path):
    """A model whose generation config says greedy and short answers as generate() does when the
    caller sets nothing (the app used to send num_beams=4, max_new_tokens=128)."""
    folder = tmp_path / "short-marian"
    shutil.copytree(registry.get("translation", "scenes-marian").local_dir, folder)
    config = GenerationConfig.from_pretrained(folder)
    config.num_beams, config.max_length = 1, 4
    config.save_pretrained(folder)
    entry = translation.MODELS.resolve(str(folder))
    loaded = translation.MODELS.load(entry.name)
    text = "A red 3 to the left of a blue 7."
    inputs = translation_inputs(loaded.processor, [text], "en", "de", return_tensors="pt")
    expected = loaded.processor.decode(loaded.model.generate(**inputs)[0], skip_special_tokens=True)
    assert translation.translate(text, model=entry.name)["translation"] == expected
    assert len(expected.split()) <= 3  # the model's max_length, not the old 128 new tokens
    assert translation.generation_defaults(entry.name) == {"num_beams": 1, "max_new_tokens": 3}


def test_a_word_longer_than_the_model_takes_is_split_not_cut():
    loaded = translation.MODELS.load()
    word = "".join(random.Random(0).choices(string.ascii_lowercase, k=1500))
    (pieces,) = translation.sentences_of(loaded, word)
    assert len(pieces) > 1 and "".join(pieces) == word
    limit = translation.token_limit(loaded)
    assert all(len(loaded.processor(p, add_special_tokens=False)["input_ids"]) <= limit for p in pieces)
    assert translation.translate(word, num_beams=1)["sentences"] == len(pieces)


def test_a_pinned_hub_revision_works_for_translation(capsys, monkeypatch):
    """`--model repo@sha` as the help text advertises: offline it fails for the right reason."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    status = cli.main(["predict", "translation", "--text", "hi", "--model", f"Helsinki-NLP/opus-mt-en-de@{REVISION}"])
    out, err = capsys.readouterr()
    assert status == 1 and "cannot be reached" in err and "does not translate" not in err


@pytest.mark.parametrize("task, weights", [("translation", "model.safetensors"),
                                           ("generative", "diffusion_pytorch_model.safetensors")])
def test_a_pinned_hub_revision_fetches_any_safetensors_name(task, weights):
    import fnmatch

    entry = registry.resolve(task, f"some-org/some-model@{REVISION}")
    assert any(fnmatch.fnmatch(weights, pattern) for pattern in entry.files)
    assert any(fnmatch.fnmatch("source.spm", pattern) for pattern in entry.files)
    assert not any(fnmatch.fnmatch("pytorch_model.bin", pattern) for pattern in entry.files)


@pytest.mark.slow
def test_cold_start_bench_works_for_translation(capsys):
    status = cli.main(["bench", "translation", "--cold-start", "--repeats", "1", "--batch-sizes", "1"])
    out, err = capsys.readouterr()
    assert status == 0, err
    result = json.loads(out)
    assert result["cold_start_s"] > 0 and 0 < result["cold_start_server_cpu_s"]
