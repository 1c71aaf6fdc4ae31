"""spaces.yaml describes Spaces that can build: documented keys, files that exist, pins that
match the registry."""

import yaml

from shared import apps
from shared.models import registry
from tests.conftest import REPO

FRONT_MATTER_KEYS = {
    "title", "emoji", "colorFrom", "colorTo", "sdk", "sdk_version", "python_version", "app_file", "app_port",
    "base_path", "fullWidth", "header", "models", "datasets", "tags", "pinned", "license", "short_description",
    "suggested_hardware", "suggested_storage", "hf_oauth", "disable_embedding", "startup_duration_timeout",
    "custom_headers", "preload_from_hub",
}


def test_every_space_is_well_formed():
    spaces = yaml.safe_load((REPO / "spaces.yaml").read_text())["spaces"]
    assert sorted(space["front_matter"]["app_file"].split("/")[1] for space in spaces) == sorted(apps.specs())
    for space in spaces:
        front = space["front_matter"]
        assert set(front) <= FRONT_MATTER_KEYS, set(front) - FRONT_MATTER_KEYS
        assert front["sdk"] == "gradio" and (REPO / front["app_file"]).is_file()
        assert len(front["short_description"]) <= 60  # the longest Spaces accepts
        task = apps.get(front["app_file"].split("/")[1]).models.task
        hub_models = {e.repo_id: e for e in registry.entries(task) if e.source == "hub"}
        assert set(front.get("models", [])) == set(hub_models)
        for line in front.get("preload_from_hub", []):
            repo_id, files, revision = line.split()
            assert revision == hub_models[repo_id].revision
            assert set(files.split(",")) == set(hub_models[repo_id].files)
