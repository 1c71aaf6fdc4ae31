"""Segmentation data: image/mask folders (what `demohub data synth` writes) or a `datasets` dataset.

A folder holds `images/` and `masks/` with the same file names; a mask is a single-channel
PNG of class ids. `labels.json` ({"0": "background", ...}) names the ids; for a `datasets`
dataset, `--labels FILE` does.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import v2

from shared.errors import UserError


class MaskPairs(torch.utils.data.Dataset):
    """Image/mask pairs by index; subclasses say where they come from (`pair`)."""

    id2label: dict[int, str]
    transform = None

    def pair(self, index: int) -> tuple[Image.Image, np.ndarray]:
        raise NotImplementedError

    def __getitem__(self, index: int) -> dict:
        image, mask = self.pair(index)
        sample = {"image": tv_tensors.Image(torch.from_numpy(np.array(image)).permute(2, 0, 1)),
                  "mask": tv_tensors.Mask(torch.from_numpy(mask.astype(np.int64)))}
        return self.transform(sample) if self.transform is not None else sample


class MaskRows(MaskPairs):
    """A split of a `datasets` dataset with an image column and a mask column."""

    def __init__(self, rows, id2label: dict[int, str], image_column: str = "image", mask_column: str = "mask",
                 transform=None):
        missing = {image_column, mask_column} - set(rows.column_names)
        if missing:
            raise UserError(f"The dataset has no column {sorted(missing)}; it has {rows.column_names}.")
        self.rows, self.columns, self.id2label, self.transform = rows, (image_column, mask_column), id2label, transform

    def __len__(self) -> int:
        return len(self.rows)

    def pair(self, index: int) -> tuple[Image.Image, np.ndarray]:
        row = self.rows[index]
        return row[self.columns[0]].convert("RGB"), np.asarray(row[self.columns[1]])


class MaskFolder(MaskPairs):
    def __init__(self, folder: str | Path, transform=None):
        self.folder = Path(folder)
        images = (self.folder / "images").glob("*")
        self.names = sorted(p.name for p in images if (self.folder / "masks" / p.name).is_file())
        if not self.names:
            raise UserError(f"{self.folder} has no images/ with matching masks/ of the same names.")
        labels = self.folder / "labels.json"
        if not labels.is_file():
            raise UserError(f"{labels} not found: name the mask ids, e.g. {{\"0\": \"background\", \"1\": \"cat\"}}.")
        self.id2label = {int(k): v for k, v in json.loads(labels.read_text()).items()}
        self.transform = transform

    def __len__(self) -> int:
        return len(self.names)

    def pair(self, index: int) -> tuple[Image.Image, np.ndarray]:
        name = self.names[index]
        image = Image.open(self.folder / "images" / name).convert("RGB")
        return image, np.asarray(Image.open(self.folder / "masks" / name))


def train_transform() -> v2.Compose:
    """Geometry moves the mask with the image (nearest for masks); colour changes the image only."""
    return v2.Compose([v2.RandomPhotometricDistort(p=0.5),
                       v2.RandomAffine(degrees=0, translate=(0.08, 0.08), scale=(0.85, 1.15))])
