"""The model registry: `models/registry.toml` read into checked entries.

    >>> from shared import registry
    >>> registry.default("classification").name
    'digits-convnext'

Local folders (a fine-tuning run's output) join the table at run time through `add_local`,
so the UI and the CLI treat them like any other model.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from pathlib import Path

import tomllib

from shared.errors import UserError, shown

MODELS_DIR = Path(__file__).resolve().parents[2] / "models"
REGISTRY_FILE = MODELS_DIR / "registry.toml"
SOURCES = ("embedded", "hub", "local")
_REVISION = re.compile(r"^[0-9a-f]{40}$")
PICKLED_WEIGHTS = "pytorch_model.bin"
# What `repo_id@revision` fetches, whatever the task: configs, safetensors weights (any file name),
# tokenizer and vocabulary files; never pickles, other frameworks' weights or code.
ANY_MODEL_FILES = ("*.json", "*.safetensors", "*.txt", "*.model", "*.spm", "*.tiktoken")


@dataclass(frozen=True)
class ModelEntry:
    name: str
    task: str
    source: str
    license: str
    commercial_use: bool
    onnx: bool = True
    onnx_batch: int = 0  # the batch an export is fixed at (RT-DETR's query selection exports at 1); 0: dynamic
    half_precision: bool = True
    default: bool = False
    description: str = ""
    path: str = ""
    repo_id: str = ""
    revision: str = ""
    files: tuple[str, ...] = field(default_factory=tuple)
    trust_remote_code: bool = False
    languages: tuple[str, ...] = field(default_factory=tuple)  # translation: every pair among these ...
    pairs: tuple[str, ...] = field(default_factory=tuple)  # ... or only these directions, "en-de"
    family: str = ""  # models chosen together in the UI, e.g. "opus-mt": the language pair picks one
    samples: bool = True  # generative: draws samples from a prior (a photo autoencoder only encodes)
    encodes: bool = False  # generative: has an encoder, so it can reconstruct an uploaded image
    # "dynamic" or "static": the int8 ONNX copy the `int8` backend serves, set only where it changes the
    # held-out metrics by under 1 point (`demohub export APP --model M --quantize` measures it); "": none
    int8: str = ""
    # the `bf16` backend (OpenVINO in bfloat16) is offered: set only where it changes the held-out metrics
    # by under 1 point (`demohub export APP --model M --quantize` measures it)
    bf16: bool = False
    knows: str = ""  # a model of plain images only (digits, synthetic scenes): what it knows (noted on a photo)
    # a text model that learnt a closed set of words, "scenes" (the synthetic scenes' sentences) or "scene
    # questions" (those and the where-is questions the VQA model learnt): words
    # outside it are noted (contract.beyond_its_words), as the answer to them is a guess
    words: str = ""
    # "safetensors", or "pytorch_model.bin" for a registry row pinned at a Hub revision that has no
    # safetensors: read by torch's weights-only unpickler (tensors and plain containers, never code)
    weights: str = "safetensors"

    @property
    def use_safetensors(self) -> bool:
        return self.weights == "safetensors"

    @property
    def weights_file(self) -> str:
        """The (glob of the) weights file the loader reads."""
        return "*.safetensors" if self.use_safetensors else self.weights

    @property
    def knows_languages(self) -> bool:
        """False for a model added by path or revision: nobody has said which languages it knows."""
        return bool(self.pairs or self.languages)

    def translates(self, src: str, tgt: str) -> bool:
        if self.pairs:
            return f"{src}-{tgt}" in self.pairs
        return src != tgt and src in self.languages and tgt in self.languages

    @property
    def local_dir(self) -> Path | None:
        """Where the files are without any download, or None for a Hub model."""
        if self.source == "embedded":
            return MODELS_DIR / self.path
        if self.source == "local":
            return Path(self.path)
        return None

    @property
    def licence_line(self) -> str:
        use = "commercial use allowed" if self.commercial_use else "NON-COMMERCIAL: commercial use forbidden"
        return f"{self.license}, {use}"


def _check(entry: ModelEntry) -> None:
    where = f"registry entry {entry.name!r}"
    if entry.source not in SOURCES:
        raise ValueError(f"{where}: source must be one of {SOURCES}, not {entry.source!r}")
    if entry.source == "hub":
        if not entry.repo_id or not _REVISION.match(entry.revision):
            raise ValueError(f"{where}: a Hub model needs repo_id and a full 40-hex revision")
        if not any(fnmatch.fnmatch(f, entry.weights_file) for f in entry.files):
            raise ValueError(f"{where}: its files must list its weights ({entry.weights_file})")
    if entry.weights not in ("safetensors", PICKLED_WEIGHTS):
        raise ValueError(f"{where}: weights must be 'safetensors' or {PICKLED_WEIGHTS!r}")
    if not entry.use_safetensors and entry.source != "hub":
        raise ValueError(f"{where}: only a pinned Hub revision may have {PICKLED_WEIGHTS} weights")
    if entry.source == "embedded" and not entry.path:
        raise ValueError(f"{where}: an embedded model needs a path under models/")
    if entry.default and not entry.commercial_use:
        raise ValueError(f"{where}: a model whose licence forbids commercial use cannot be a default")


def parse(table: dict) -> dict[str, ModelEntry]:
    """Turn the TOML table into entries by name, refusing duplicates and malformed rows."""
    entries: dict[str, ModelEntry] = {}
    for row in table.get("models", []):
        row = dict(row)
        for key in ("files", "languages", "pairs"):
            row[key] = tuple(row.get(key, ()))
        entry = ModelEntry(**row)
        if entry.name in entries:
            raise ValueError(f"registry: duplicate model name {entry.name!r}")
        _check(entry)
        entries[entry.name] = entry
    for task in {e.task for e in entries.values()}:
        defaults = [e.name for e in entries.values() if e.task == task and e.default]
        if len(defaults) != 1:
            raise ValueError(f"registry: task {task!r} needs exactly one default model, has {defaults}")
    return entries


_TABLE = tomllib.loads(REGISTRY_FILE.read_text())
_ENTRIES: dict[str, ModelEntry] = parse(_TABLE)


def setting(app: str, key: str):
    """An app's model choice that is not a task default, from the registry's `[settings.<app>]`
    (e.g. the adversarial app's second model)."""
    return _TABLE.get("settings", {}).get(app, {})[key]


def stand_in(task: str, entry: ModelEntry) -> ModelEntry:
    """The model that answers in the UI when `entry` cannot be loaded (offline): the task's
    `[settings.<task>] offline_stand_in` where it knows the same kind of image (efficientnet-lite0 for a
    Hub ImageNet classifier: the same 1,000 labels), else the task's default."""
    name = _TABLE.get("settings", {}).get(task, {}).get("offline_stand_in")
    if name and _ENTRIES[name].knows == entry.knows:
        return _ENTRIES[name]
    return default(task)


def entries(task: str) -> list[ModelEntry]:
    return [e for e in _ENTRIES.values() if e.task == task]


def default(task: str) -> ModelEntry:
    return next(e for e in entries(task) if e.default)


def get(task: str, name: str | None) -> ModelEntry:
    """The entry for `name` (the task's default when None), or a UserError listing the choices."""
    if not name:
        return default(task)
    entry = _ENTRIES.get(name) if isinstance(name, str) else None
    if entry is None or entry.task != task:
        choices = ", ".join(e.name for e in entries(task))
        raise UserError(f"Unknown {task} model {shown(name)}. Choose one of: {choices}.")
    return entry


def add_local(task: str, folder: str | Path, name: str | None = None, **facts) -> ModelEntry:
    """Offer a local model folder (a fine-tuning run's output) under `name` (the folder's name),
    with what is known of it (`facts`: ModelEntry fields such as `encodes`)."""
    folder = Path(folder).resolve()
    if not (folder / "config.json").is_file():
        raise UserError(f"{folder} is not a model folder: it has no config.json.")
    entry = ModelEntry(
        name=name or folder.name,
        task=task,
        source="local",
        path=str(folder),
        license="as its owner set it (local folder)",
        commercial_use=True,
        description=f"Local model from {folder}",
        **facts,
    )
    known = _ENTRIES.get(entry.name)
    if known is not None and known != entry:
        raise UserError(f"A model named {entry.name!r} already exists; give the folder another name.")
    _ENTRIES[entry.name] = entry
    return entry


def resolve(task: str, spec: str | None) -> ModelEntry:
    """What the CLI accepts: a registry name, a local model folder, or `repo_id@<40-hex revision>`."""
    if spec and Path(spec).is_dir():
        return add_local(task, spec)
    if spec and "@" in spec:
        repo_id, revision = spec.split("@", 1)
        if not _REVISION.match(revision):
            raise UserError(f"Pin a Hub model to a full 40-hex commit: {repo_id}@<revision>.")
        entry = ModelEntry(
            name=spec, task=task, source="hub", repo_id=repo_id, revision=revision, files=ANY_MODEL_FILES,
            license="see the model card", commercial_use=False,
        )
        return _ENTRIES.setdefault(entry.name, entry)
    return get(task, spec)
