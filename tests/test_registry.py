import pytest
import tomllib

from shared.errors import UserError
from shared.models import registry

HUB_ROW = dict(name="org/model", task="classification", source="hub", repo_id="org/model",
               revision="0123456789abcdef0123456789abcdef01234567", files=["model.safetensors"],
               license="Apache-2.0", commercial_use=True)
EMBEDDED_ROW = dict(name="tiny", task="classification", source="embedded", path="classification/tiny",
                    license="MIT", commercial_use=True, default=True)


def test_the_real_registry_is_valid():
    entries = registry.parse(tomllib.loads(registry.REGISTRY_FILE.read_text()))
    classifiers = [e for e in entries.values() if e.task == "classification"]
    assert len(classifiers) >= 3
    assert all(e.source != "hub" or len(e.revision) == 40 for e in entries.values())
    default = registry.default("classification")
    assert default.source == "embedded" and default.commercial_use
    assert (default.local_dir / "model.safetensors").is_file()


def test_duplicate_names_are_an_error():
    with pytest.raises(ValueError, match="duplicate"):
        registry.parse({"models": [EMBEDDED_ROW, EMBEDDED_ROW]})


def test_non_commercial_model_cannot_be_default():
    row = {**HUB_ROW, "commercial_use": False, "default": True}
    with pytest.raises(ValueError, match="commercial"):
        registry.parse({"models": [row]})


@pytest.mark.parametrize("change", [{"revision": "main"}, {"revision": "0123abc"}, {"files": ["pytorch_model.bin"]}])
def test_hub_rows_need_pinned_safetensors(change):
    with pytest.raises(ValueError):
        registry.parse({"models": [EMBEDDED_ROW, {**HUB_ROW, **change}]})


def test_only_a_pinned_hub_row_may_read_a_weights_only_pytorch_model_bin():
    pickled = {**HUB_ROW, "files": ["config.json", "pytorch_model.bin"], "weights": "pytorch_model.bin"}
    assert not registry.parse({"models": [EMBEDDED_ROW, pickled]})["org/model"].use_safetensors
    refused = [{**pickled, "files": ["model.safetensors"]},  # the row must list the file it reads
               {**EMBEDDED_ROW, "name": "tiny-bin", "default": False, "weights": "pytorch_model.bin"},  # never embedded
               {**pickled, "weights": "model.ckpt"}]
    for row in refused:
        with pytest.raises(ValueError, match="weights"):
            registry.parse({"models": [EMBEDDED_ROW, row]})


def test_each_task_has_one_default():
    with pytest.raises(ValueError, match="exactly one default"):
        registry.parse({"models": [HUB_ROW]})


def test_unknown_model_lists_the_choices():
    with pytest.raises(UserError, match="digits-convnext"):
        registry.get("classification", "no-such-model")


def test_resolve_refuses_unpinned_hub_models():
    with pytest.raises(UserError, match="40-hex"):
        registry.resolve("classification", "google/vit-base-patch16-224@main")


def test_local_folder_needs_a_config(tmp_path):
    with pytest.raises(UserError, match="config.json"):
        registry.add_local("classification", tmp_path)


def test_a_model_named_by_a_list_or_a_megabyte_gets_a_short_sentence():
    with pytest.raises(UserError, match="Unknown classification model \\['digits-convnext'\\]"):
        registry.get("classification", ["digits-convnext"])
    with pytest.raises(UserError) as refused:
        registry.get("classification", "x" * 1_000_000)
    assert len(str(refused.value)) < 1000 and "1,000,000 characters" in str(refused.value)
