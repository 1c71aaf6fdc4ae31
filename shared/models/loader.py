"""One way to load any app's model: a task's `TaskModels`, then `.load(name)`.

    MODELS = TaskModels("classification", transformers_loader(AutoModelForImageClassification, AutoImageProcessor))
    loaded = MODELS.load("digits-convnext")                   # or None: the task's default
    loaded = MODELS.load("google/vit-base-patch16-224", fallback=True)   # offline: the default, and why

A name resolves through the registry (embedded folder, pinned Hub snapshot, or local folder);
the task's build function loads the model and its processor from safetensors; the model goes
on the best device (CUDA, then MPS, then CPU; fp16/bf16 on CUDA) and into a process-wide LRU
cache under a memory budget, so concurrent requests share one copy and two requests for the
same model load it once.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pickle
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers.utils import logging as transformers_logging

from shared import timing
from shared.errors import ModelUnavailable
from shared.models import hub, registry
from shared.models.registry import ModelEntry

log = logging.getLogger(__name__)
transformers_logging.disable_progress_bar()  # a bar per load is noise in the CLI and server logs

def transformers_loader(model_class, processor_class) -> Callable:
    """Build a task's model and processor with transformers' Auto classes, from safetensors
    (or the weights-only `pytorch_model.bin` of a registry row that says so)."""

    def load(folder: Path, entry: ModelEntry, dtype: torch.dtype):
        remote = entry.trust_remote_code
        processor = processor_class.from_pretrained(folder, trust_remote_code=remote)
        model = model_class.from_pretrained(folder, dtype=dtype, use_safetensors=entry.use_safetensors,
                                            trust_remote_code=remote)
        return model, processor

    return load


# (folder, entry, dtype) -> (model, processor): how a task's models are built from their files
Build = Callable[[Path, ModelEntry, torch.dtype], tuple[Any, Any]]


@dataclass
class LoadedModel:
    entry: ModelEntry
    model: torch.nn.Module
    processor: Any
    folder: Path
    device: torch.device
    dtype: torch.dtype
    unavailable: str = ""  # why the model asked for could not be loaded, when this is its stand-in
    asked: ModelEntry | None = None  # the model asked for, when this is its stand-in

    @property
    def fallback_note(self) -> str:
        """Why this is not the model that was asked for (an offline fallback), if it is not."""
        return f"{self.unavailable} Answered with {self.entry.name} instead." if self.unavailable else ""

    @property
    def asked_for(self) -> ModelEntry:
        """The registry entry the request named: what a backend is offered for (the page offers int8 and
        bf16 by it), even when its offline stand-in answers."""
        return self.asked or self.entry

    @property
    def precision(self) -> str:
        return str(self.dtype).removeprefix("torch.").replace("float32", "fp32").replace("float16", "fp16")

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (*self.model.parameters(), *self.model.buffers()))


def best_device() -> torch.device:
    if os.environ.get("DEMOHUB_DEVICE"):
        return torch.device(os.environ["DEMOHUB_DEVICE"])
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def best_dtype(device: torch.device, half_precision: bool = True) -> torch.dtype:
    """fp32 everywhere but CUDA, where bf16 (or fp16 on older cards) halves memory and time
    for models whose registry entry allows it.

    `DEMOHUB_PRECISION=fp32` keeps full precision on a GPU too.
    """
    if device.type != "cuda" or not half_precision or os.environ.get("DEMOHUB_PRECISION") == "fp32":
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def _missing(folder: Path, names) -> list[str]:
    return [name for name in names if not any(folder.glob(name))]


def _unavailable(entry: ModelEntry, missing: list[str]) -> ModelUnavailable:
    # names inside the model folder only: a message never shows the server's own paths
    return ModelUnavailable(f"{entry.name} cannot be loaded: its model folder has no {' and no '.join(missing)}. "
                            "Reinstall it, or rebuild it with the command in its model card.")


def model_folder(entry: ModelEntry) -> Path:
    """The folder of `entry`'s files (downloaded if needed), with its config and listed files."""
    folder = entry.local_dir if entry.local_dir is not None else hub.fetch(entry)
    missing = _missing(folder, ("config.json", *entry.files))
    if missing:
        raise _unavailable(entry, missing)
    return folder


# One model is built at a time: transformers' from_pretrained switches process-wide state (weight
# initialisation is patched off while it runs), so two builds in two threads (the hub's start-up
# preload and a first request) can break each other. Loads are rare; requests for a loaded model
# never wait here.
_BUILD_LOCK = threading.Lock()


def _load(entry: ModelEntry, build: Build, device: torch.device) -> LoadedModel:
    with _BUILD_LOCK:
        return _build(entry, build, device)


def _build(entry: ModelEntry, build: Build, device: torch.device) -> LoadedModel:
    from safetensors import SafetensorError

    folder = model_folder(entry)
    if not any(folder.glob(entry.weights_file)):  # a recipe folder (a config to train from scratch) is no model
        raise _unavailable(entry, [f"weights file ({entry.weights_file})"])
    dtype = best_dtype(device, entry.half_precision)
    try:
        with timing.building(f"loaded {entry.name}"):
            model, processor = build(folder, entry, dtype)
    except SafetensorError as err:
        raise ModelUnavailable(f"{entry.name}: a model file is damaged (truncated or corrupt) and cannot be "
                               "loaded. Reinstall it, or rebuild it with the command in its model card.") from err
    except pickle.UnpicklingError as err:  # torch's weights-only unpickler met more than tensors: nothing ran
        log.warning("refused the weights of %s from %s: %s", entry.name, folder, err)
        raise ModelUnavailable(f"{entry.name}: its {entry.weights} holds more than tensors (or is damaged), so it "
                               "was not loaded; the details were logged on the server.") from err
    except (OSError, ValueError) as err:
        log.warning("could not load %s from %s: %s", entry.name, folder, err)
        raise ModelUnavailable(f"{entry.name}: could not be loaded from its files (missing or unreadable); "
                               "the details were logged on the server.") from err
    model.to(device).eval()
    log.info("loaded %s on %s as %s", entry.name, device, dtype)
    return LoadedModel(entry, model, processor, folder, device, dtype)


class LruCache:
    """Values built once per key, shared by all callers, evicted least recently used first
    when their total size passes `budget_bytes` (the newest value always stays)."""

    def __init__(self, budget_bytes: int):
        self.budget_bytes = budget_bytes
        self._values: OrderedDict[Any, tuple[Any, int]] = OrderedDict()
        self._lock = threading.Lock()
        self._key_locks: dict[Any, threading.Lock] = {}

    def get(self, key: Any, build: Callable[[], Any], size: Callable[[Any], int]) -> Any:
        with self._lock:
            if key in self._values:
                self._values.move_to_end(key)
                return self._values[key][0]
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:  # a second caller for the same key waits here for the first one's value
            with self._lock:
                if key in self._values:
                    self._values.move_to_end(key)
                    return self._values[key][0]
            value = build()
            with self._lock:
                self._values[key] = (value, size(value))
                self._evict()
            return value

    def _evict(self) -> None:
        while len(self._values) > 1 and sum(n for _, n in self._values.values()) > self.budget_bytes:
            key, _ = self._values.popitem(last=False)
            log.info("evicted %s from the model cache", key)

    def keys(self) -> list[Any]:
        with self._lock:
            return list(self._values)

    def clear(self) -> None:
        with self._lock:
            self._values.clear()


MEMORY_BUDGET_BYTES = int(float(os.environ.get("DEMOHUB_MEMORY_BUDGET_GB", "6")) * 2**30)
cache = LruCache(MEMORY_BUDGET_BYTES)


@dataclasses.dataclass(frozen=True)
class TaskModels:
    """The models of one registry task, and how to build one from its folder."""

    task: str
    build: Build
    # The registry's facts about a local folder where the task can read them from its files
    # (a generative folder says whether it samples or encodes); registry rows state them.
    local_facts: Callable[[Path], dict] = lambda folder: {}

    def resolve(self, name: str | None) -> ModelEntry:
        """What the CLI accepts: a registry name, a local model folder, or `repo_id@<40-hex revision>`."""
        if name and Path(name).is_dir():
            return registry.add_local(self.task, name, **self.local_facts(Path(name)))
        return registry.resolve(self.task, name)

    def load(self, name: str | None = None, fallback: bool = False, device: torch.device | None = None,
             accepts: Callable[[ModelEntry], bool] = lambda entry: True) -> LoadedModel:
        """The model `name` (the task's default when None), cached and ready to run.

        With `fallback` (the UI's choice; the CLI fails instead), a model that cannot be loaded
        here is replaced by its embedded stand-in (`registry.stand_in`: a model of the same labels, or the
        task's default) where `accepts` it, and `fallback_note` says why.
        """
        entry = registry.get(self.task, name)
        try:
            return self._load(entry, device)
        except ModelUnavailable as err:
            stand_in = registry.stand_in(self.task, entry)
            if not fallback or entry.name == stand_in.name or not accepts(stand_in):
                raise
            loaded = self._load(stand_in, device)
            return dataclasses.replace(loaded, unavailable=str(err), asked=entry)

    def _load(self, entry: ModelEntry, device: torch.device | None) -> LoadedModel:
        device = device or best_device()
        return cache.get(("model", entry.name, str(device)), lambda: _load(entry, self.build, device),
                         lambda m: m.nbytes)
