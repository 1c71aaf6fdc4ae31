"""The apps the hub serves, and how the shared code finds each app's parts.

Each app is a folder `apps/<app>/` with `app.py` (a Gradio `demo`), `task.py` (the recipe:
`onnx_spec(loaded)`, `sample_feeds(loaded, n)`, `cold_start_request()`, and `MODEL_TASK` when it
runs another task's models), `cli.py` (`add_predict_arguments`, `predict`) and `finetune.py`
(`main(argv)`). A cli.py may bring its own `export(loaded)` and `run_bench(loaded, batch_sizes,
repeats)` where one ONNX graph is not the whole model (translation's encoder and decoders).
"""

from __future__ import annotations

import importlib
from types import ModuleType

APPS = ("classification", "detection", "segmentation", "generative", "adversarial", "translation")


def part(app: str, name: str) -> ModuleType:
    return importlib.import_module(f"apps.{app}.{name}")


def model_task(app: str) -> str:
    """The registry task whose models `app` runs (the adversarial app attacks classifiers)."""
    return getattr(part(app, "task"), "MODEL_TASK", app)
