"""COCO-format detection data: the folder users bring and `demohub data synth` writes.

A folder holds `detection.json` (COCO: images, annotations with `bbox` [x, y, w, h] in pixels,
categories) and the images it names. Category ids are remapped to the model's label ids by
name, so a dataset may number its categories any way it likes.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import v2

from shared.errors import UserError


class CocoFolder(torch.utils.data.Dataset):
    def __init__(self, folder: str | Path, annotations: str = "detection.json", transform=None):
        self.folder = Path(folder)
        path = self.folder / annotations
        if not path.is_file():
            raise UserError(f"{path} not found: a detection folder needs a COCO JSON file of annotations.")
        coco = json.loads(path.read_text())
        self.images = coco["images"]
        self.categories = {c["id"]: c["name"] for c in coco["categories"]}
        self.boxes = defaultdict(list)
        for annotation in coco["annotations"]:
            self.boxes[annotation["image_id"]].append((annotation["bbox"], annotation["category_id"]))
        self.transform = transform

    @property
    def label_names(self) -> list[str]:
        return [self.categories[i] for i in sorted(self.categories)]

    def __len__(self) -> int:
        return len(self.images)

    def target(self, index: int) -> tuple[Image.Image, torch.Tensor, list[str]]:
        """The image, its boxes as [xmin, ymin, xmax, ymax] pixels, and their category names."""
        info = self.images[index]
        image = Image.open(self.folder / info["file_name"]).convert("RGB")
        rows = self.boxes[info["id"]]
        boxes = torch.tensor([[x, y, x + w, y + h] for (x, y, w, h), _ in rows], dtype=torch.float32).reshape(-1, 4)
        return image, boxes, [self.categories[c] for _, c in rows]

    def __getitem__(self, index: int) -> dict:
        """{image, boxes (XYXY pixels), labels (indices into label_names), image_id}, transformed."""
        image, boxes, names = self.target(index)
        order = self.label_names
        sample = {"image": image,
                  "boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(image.height, image.width)),
                  "labels": torch.tensor([order.index(n) for n in names], dtype=torch.int64)}
        if self.transform is not None:
            sample = self.transform(sample)
        return {**sample, "image_id": self.images[index]["id"]}


def train_transform() -> v2.Compose:
    """Moves boxes with the pixels; no flips (digits are not symmetric)."""
    return v2.Compose([
        v2.RandomPhotometricDistort(p=0.5),
        v2.RandomAffine(degrees=0, translate=(0.08, 0.08), scale=(0.85, 1.15)),
        v2.ClampBoundingBoxes(),
        v2.SanitizeBoundingBoxes(min_size=2),  # drops boxes pushed off the canvas, with their labels
    ])


def coco_annotations(sample: dict) -> dict:
    """A sample as the COCO-style dict transformers' detection processors take."""
    rows = []
    for (x0, y0, x1, y1), label in zip(sample["boxes"].tolist(), sample["labels"].tolist(), strict=True):
        rows.append({"bbox": [x0, y0, x1 - x0, y1 - y0], "category_id": label, "area": (x1 - x0) * (y1 - y0),
                     "iscrowd": 0})
    return {"image_id": sample["image_id"], "annotations": rows}
