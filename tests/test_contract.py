"""Every app meets the contract of shared/contract.py: a complete spec, a predict that answers on
its embedded default model with a Result, an ONNX form, a page whose API takes the spec's example,
CLI arguments, and a Space."""

import argparse
import inspect

import gradio as gr
import pytest

from shared import apps
from shared.contract import AppSpec, Result
from shared.inference.graphs import OnnxForm
from shared.models import registry
from tests.conftest import REPO

SPECS = apps.specs()


def test_every_app_folder_is_found():
    folders = sorted(p.name for p in (REPO / "apps").iterdir() if (p / "app.py").is_file())
    assert folders == sorted(SPECS) and len(SPECS) >= 6


@pytest.mark.parametrize("name", sorted(SPECS))
def test_the_spec_is_complete(name):
    spec = SPECS[name]
    assert isinstance(spec, AppSpec) and spec.name == name and spec.folder == REPO / "apps" / name
    for part in ("app.py", "task.py", "cli.py", "finetune.py", "spec.py"):
        assert (spec.folder / part).is_file(), part
    assert spec.title and spec.summary and len(spec.summary) <= 80
    default = registry.default(spec.models.task)
    assert default.source == "embedded" and default.commercial_use
    for field in ("predict", "onnx", "cli_arguments", "cli_predict", "finetune"):
        assert callable(getattr(spec, field)), field
    assert set(spec.example) <= set(inspect.signature(spec.predict).parameters)
    parser = argparse.ArgumentParser()
    spec.cli_arguments(parser)
    assert {"--model"} <= set(parser._option_string_actions)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_predict_answers_on_the_embedded_model(name):
    spec = SPECS[name]
    result = spec.predict(**spec.example)
    assert isinstance(result, Result)
    assert result.entry == registry.default(spec.models.task) and result.backend == "torch"
    assert result.precision == "fp32" and result.latency_ms > 0
    answer = result.to_json()
    assert {"model", "backend", "precision", "latency_ms", "notes"} <= set(answer)
    assert isinstance(spec.onnx(result.loaded), OnnxForm)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_the_page_serves_the_spec_example_at_the_app_name(name):
    spec = SPECS[name]
    page = apps.page(name)
    assert isinstance(page, gr.Blocks)
    api = page.get_api_info()["named_endpoints"][f"/{name}"]
    parameters = {p["parameter_name"] for p in api["parameters"]}
    assert set(spec.cold_start_request()) <= parameters


@pytest.mark.parametrize("name", sorted(SPECS))
def test_every_app_has_a_space(name):
    from shared.serving import spaces

    assert name in {space.app for space in spaces.load().values()}


def test_every_landing_card_shows_an_example_and_the_generative_one_a_result():
    from shared.serving import landing

    page = landing.page(apps.specs(), {})
    cards = {name: page.split(f'id="app-{name}"')[1].split("</section>")[0] for name in apps.specs()}
    assert all('class="example"' in card for card in cards.values())
    assert all("<img" in card for name, card in cards.items() if name != "translation")  # its example is a sentence
    assert 'alt="an example result"' in cards["generative"]
