"""One call loads any app's model: `load_model(task, name)`.

It resolves the name through the registry (embedded folder, pinned Hub snapshot, or local
folder), loads the model and its processor with the task's Auto classes from safetensors,
puts the model on the best device (CUDA, then MPS, then CPU; fp16/bf16 on CUDA), and keeps
it in a process-wide LRU cache under a memory budget, so concurrent requests share one copy
and two requests for the same model load it once.
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoImageProcessor,
    AutoModelForImageClassification,
    AutoModelForImageTextToText,
    AutoModelForObjectDetection,
    AutoModelForSemanticSegmentation,
    AutoModelForSeq2SeqLM,
    AutoProcessor,
    AutoTokenizer,
)
from transformers.utils import logging as transformers_logging

from shared import hub, registry
from shared.errors import ModelUnavailable
from shared.registry import ModelEntry

log = logging.getLogger(__name__)
transformers_logging.disable_progress_bar()  # a bar per load is noise in the CLI and server logs

def transformers_loader(model_class, processor_class) -> Callable:
    """Build a task's model and processor with transformers' Auto classes, from safetensors."""

    def load(folder: Path, entry: ModelEntry, dtype: torch.dtype):
        remote = entry.trust_remote_code
        processor = processor_class.from_pretrained(folder, trust_remote_code=remote)
        model = model_class.from_pretrained(folder, dtype=dtype, use_safetensors=True, trust_remote_code=remote)
        return model, processor

    return load


# How each task's models are built from their folder: transformers' Auto classes, or the app's
# own `from_pretrained(folder, entry, dtype) -> (model, processor)` named as "module:function".
TASK_LOADERS: dict[str, Callable | str] = {
    "classification": transformers_loader(AutoModelForImageClassification, AutoImageProcessor),
    "detection": transformers_loader(AutoModelForObjectDetection, AutoImageProcessor),
    "segmentation": transformers_loader(AutoModelForSemanticSegmentation, AutoImageProcessor),
    "generative": "apps.generative.models:from_pretrained",
    "translation": transformers_loader(AutoModelForSeq2SeqLM, AutoTokenizer),
    "captioning": transformers_loader(AutoModelForImageTextToText, AutoProcessor),
    "vqa": "apps.vqa.task:from_pretrained",  # BLIP, ViLT: AutoModelForVisualQuestionAnswering; a VED answerer
}


def task_loader(task: str) -> Callable:
    load = TASK_LOADERS[task]
    if isinstance(load, str):
        module, function = load.split(":")
        load = getattr(importlib.import_module(module), function)
    return load


@dataclass
class LoadedModel:
    entry: ModelEntry
    model: torch.nn.Module
    processor: Any
    folder: Path
    device: torch.device
    dtype: torch.dtype

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


def model_folder(entry: ModelEntry) -> Path:
    folder = entry.local_dir if entry.local_dir is not None else hub.fetch(entry)
    if not (folder / "config.json").is_file():
        raise ModelUnavailable(f"{entry.name}: {folder} has no config.json.")
    return folder


def _load(entry: ModelEntry, device: torch.device) -> LoadedModel:
    folder = model_folder(entry)
    dtype = best_dtype(device, entry.half_precision)
    try:
        model, processor = task_loader(entry.task)(folder, entry, dtype)
    except (OSError, ValueError) as err:
        raise ModelUnavailable(f"{entry.name}: could not load from {folder}: {err}") from err
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


def load_model(task: str, name: str | None = None, device: torch.device | None = None) -> LoadedModel:
    """The task's model `name` (registry name; None for the default), cached and ready to run."""
    entry = registry.get(task, name)
    device = device or best_device()
    return cache.get(("model", entry.name, str(device)), lambda: _load(entry, device), lambda m: m.nbytes)


def load_or_fallback(task: str, name: str | None,
                     accepts: Callable[[ModelEntry], bool] = lambda entry: True) -> tuple[LoadedModel, str]:
    """For the UI: the asked-for model, or the task's default with a sentence saying why (only
    where `accepts` the default, e.g. a translation model that knows the asked-for pair)."""
    try:
        return load_model(task, name), ""
    except ModelUnavailable as err:
        fallback = registry.default(task)
        if name in (None, fallback.name) or not accepts(fallback):
            raise
        return load_model(task, fallback.name), f"{err} Answered with {fallback.name} instead."
