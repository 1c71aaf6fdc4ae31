"""The app contract: what every app under `apps/` declares, once, as data.

An app is one folder, `apps/<name>/`:

    spec.py      SPEC = AppSpec(...): what the hub, the CLI, the bench, Spaces and the tests read
    task.py      the recipe: how its model loads, how inputs become tensors, how outputs become answers
    app.py       `demo`, its Gradio page (`python apps/<name>/app.py` serves it alone, as a Space does)
    cli.py       its `demohub predict` arguments and what is printed
    finetune.py  transfer learning onto the user's own data

plus its models' rows in `models/registry.toml` and its Space in `spaces.yaml`. Every app's
predict returns a `Result`.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.data import scenes
from shared.errors import UserError
from shared.inference.graphs import OnnxForm
from shared.inputs.images import DecodedImage, is_plain
from shared.models import hub, registry
from shared.models.loader import LoadedModel, TaskModels
from shared.models.registry import ModelEntry


@dataclass
class Result:
    """One answer of any app: the task's payload plus who answered, how, and how fast.

    `model_ms` is the model's own time (inputs to outputs); `latency_ms` the whole request's
    (decode, load, export, run, answer), set by the task's `timing.whole_request`, and the notes
    say what the request loaded or exported. `answer` is JSON (what `demohub predict` prints, with
    the fields below); `images` are pictures for the page. `result["labels"]` reads either, as
    transformers' ModelOutput does.
    """

    loaded: LoadedModel
    backend: str
    model_ms: float
    answer: dict[str, Any]
    images: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    latency_ms: float = field(default=0.0, init=False)

    def __post_init__(self):
        self.latency_ms = self.model_ms  # until the whole request's time replaces it

    @property
    def entry(self) -> ModelEntry:
        return self.loaded.entry

    @property
    def precision(self) -> str:
        """fp32, bf16/fp16 where torch runs a model in half precision on a GPU (exports are fp32), int8 on
        the int8 backend, bf16 on the bf16 one."""
        return {"torch": self.loaded.precision, "int8": "int8", "bf16": "bf16"}.get(self.backend, "fp32")

    @property
    def all_notes(self) -> list[str]:
        return [note for note in (self.loaded.fallback_note, *self.notes) if note]

    def to_json(self) -> dict[str, Any]:
        return {**self.answer, "model": self.entry.name, "backend": self.backend, "precision": self.precision,
                "latency_ms": round(self.latency_ms, 2), "model_ms": round(self.model_ms, 2), "notes": self.all_notes}

    def __getitem__(self, key: str) -> Any:
        return self.images[key] if key in self.images else self.to_json()[key]

    def __contains__(self, key: str) -> bool:
        return key in self.images or key in self.to_json()


def beyond_what_it_knows(loaded: LoadedModel, image) -> list[str]:
    """The note for an answer on a photo from a model that knows only plain images (registry `knows`),
    naming the task's embedded photo model where it has one (it answers without the Hub). A photo sent
    to a Hub model that is offline is refused rather than answered by a stand-in that knows only plain
    images: its boxes and captions on a photo were confident nonsense (found by a visitor)."""
    entry = loaded.entry
    if entry.knows and not is_plain(image):
        pick = photo_model_advice(entry)
        if loaded.unavailable:
            raise UserError(f"{loaded.unavailable} Its offline stand-in, {entry.name}, knows only {entry.knows}, "
                            f"and this image looks like a photo, so it would only guess. {pick}")
        return [f"{entry.name} knows only {entry.knows}; this image looks like a photo, so its answer is "
                f"a guess among those. {pick}"]
    return []


def photo_model_advice(entry: ModelEntry) -> str:
    """Which model of `entry`'s task to pick for a photo: one that knows photos, does what `entry` does
    (a VAE's advice is another encoder, not a GAN) and loads here, embedded first; or why there is none
    (a visitor was sent to a Hub model this machine cannot load, and to a GAN for encoding a photo)."""
    knowing = sorted((e for e in registry.entries(entry.task) if not e.knows and e.encodes == entry.encodes),
                     key=lambda e: e.source != "embedded")
    loadable = [e.name for e in knowing if hub.obtainable(e)]
    if loadable:
        return f"Pick {loadable[0]}, which knows photos, for it."
    if knowing:
        names = ", ".join(e.name for e in knowing)
        return (f"The models that know photos ({names}) need the Hugging Face Hub, which this machine cannot "
                "reach: none can answer it here.")
    return "No model of this app knows photos."


def cut_at_the_token_limit(cut: int, total: int, noun: str, max_new_tokens: int) -> list[str]:
    """The note for generated texts that stopped at `max_new_tokens` rather than at their end
    (" G" for "Is there an 8?" at 2 tokens read as a whole translation; found by a visitor)."""
    if not cut:
        return []
    which = f"The {noun}" if total == 1 else f"{cut} of the {total} {noun}s"
    return [f"{which} stopped at max_new_tokens ({max_new_tokens}) and may be cut short: raise it for the whole "
            f"{noun}."]


def beyond_its_words(entry: ModelEntry, text: str) -> list[str]:
    """The note for a request with words a text model never learnt (registry `words`: "scenes", the
    synthetic scenes' sentences): its answer to them is a guess. "The cat sat on the mat." came back as
    "is the 1 to the right ofts" without a word (found by a visitor)."""
    if entry.words not in ("scenes", "scene questions"):
        return []
    known = scenes.words(where_questions=entry.words == "scene questions")
    unknown = list(dict.fromkeys(w for w in re.findall(r"\w+", text) if w.lower() not in known))
    if not unknown:
        return []
    listed = ", ".join(unknown[:12]) + (f" and {len(unknown) - 12} more" if len(unknown) > 12 else "")
    return [f"{entry.name} learnt only the words of the synthetic scenes' sentences; it never saw {listed}, so "
            "its answer to them is a guess."]


@dataclass(frozen=True)
class AppSpec:
    """Everything the shared code needs to know about one app."""

    name: str  # its folder, its path in the hub (/name/), its CLI word and its Space
    title: str
    summary: str  # one line: what it does, for the landing page and the Space's card
    models: TaskModels  # the registry task whose models it runs, and how one loads
    predict: Callable[..., Result]  # the recipe's entry point: inputs and settings -> Result
    onnx: Callable[[LoadedModel], OnnxForm]  # how a loaded model becomes ONNX graphs and runs on each backend
    example: dict[str, Any]  # one request: keyword arguments of `predict` and of the page's API (paths for files)
    examples: list[list]  # the page's example rows (inputs of its main event) for models that know photos
    cli_arguments: Callable[[argparse.ArgumentParser], None]
    cli_predict: Callable[[argparse.Namespace], dict]  # parsed arguments -> what is printed
    finetune: Callable[[list[str]], dict]  # finetune.py's main(argv)
    held_out: Callable[[LoadedModel, Callable], dict] | None = None  # held-out metrics on a runtime (int8 check)
    plain_examples: list[list] = field(default_factory=list)  # the rows for models of plain images (registry `knows`)
    card_image: Path | None = None  # the landing card's picture for an app that takes no image: one of its results
    # decoded images and parsed arguments -> what is printed for each, from one model call (many files)
    cli_predict_batch: Callable[[list[DecodedImage], argparse.Namespace], list[dict]] | None = None
    # image classifiers: (image, model, backend, method, label, window, stride) -> Result with images["heatmap"]
    # (`demohub explain APP`; shared/inference/attribution.py)
    explain: Callable[..., Result] | None = None

    def examples_for(self, entry: ModelEntry) -> list[list]:
        """The example rows that suit `entry`: digits or scenes for a model that knows only those."""
        return self.plain_examples if entry.knows and self.plain_examples else self.examples

    @property
    def folder(self) -> Path:
        return Path(__file__).resolve().parent.parent / "apps" / self.name

    def cold_start_request(self) -> dict[str, Any]:
        """`example` as gradio_client sends it: files as uploads."""
        from gradio_client import handle_file

        return {key: handle_file(str(value)) if isinstance(value, Path) else value
                for key, value in self.example.items()}
