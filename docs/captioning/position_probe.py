"""Do the captioner's image tokens say where they are? A linear probe, so that the decoder is not in the way:

    PYTHONPATH=. python docs/captioning/position_probe.py [MODEL_FOLDER ...]   # about a minute each

The encoder's output token of every 8x8-pixel patch that a digit covers (in 150 held-out scenes of
each of seeds 1 and 2) is the input of two ridge regressions, one for the patch's row and one for its
column; R^2 on the second half of the patches, fitted on the first. A caption's relation word
(left/right/above/below) needs both; a token grid whose rows cannot be read cannot say "above".
Writes docs/captioning/position_probe.json for the models it is given.
"""

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from sklearn.linear_model import Ridge
from transformers import AutoProcessor, VisionEncoderDecoderModel

from shared.data import scenes

HERE = Path(__file__).resolve().parent


def digit_patch_tokens(folder: str, seeds=(1, 2), n: int = 150) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(tokens, rows, columns) of the patches digits cover, in scene order."""
    model, processor = VisionEncoderDecoderModel.from_pretrained(folder).eval(), AutoProcessor.from_pretrained(folder)
    tokens, rows, columns = [], [], []
    for seed in seeds:
        drawn = [scenes.make_scene(seed, index) for index in range(n)]
        pixel_values = processor(images=[s.image for s in drawn], return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            hidden = model.encoder(pixel_values=pixel_values).last_hidden_state[:, 1:]  # without the class token
        side = int(hidden.shape[1] ** 0.5)
        for scene, grid in zip(drawn, hidden, strict=True):
            covered = np.asarray(Image.fromarray(scene.semantic_mask).resize((side, side), Image.Resampling.NEAREST))
            for row, column in zip(*np.nonzero(covered), strict=True):
                tokens.append(grid[row * side + column].numpy())
                rows.append(row)
                columns.append(column)
    return np.array(tokens), np.array(rows), np.array(columns)


def probe(folder: str) -> dict:
    tokens, rows, columns = digit_patch_tokens(folder)
    half = len(tokens) // 2
    return {"digit_patches": len(tokens), **{
        f"{name}_r2": round(Ridge(alpha=1.0).fit(tokens[:half], target[:half]).score(tokens[half:], target[half:]), 3)
        for name, target in (("row", rows), ("column", columns))}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("models", nargs="*", default=["models/captioning/scenes-captioner"])
    args = parser.parse_args()
    torch.set_num_threads(1)
    found = {folder: probe(folder) for folder in args.models}
    print(json.dumps(found, indent=2))
    (HERE / "position_probe.json").write_text(json.dumps(found, indent=2) + "\n")


if __name__ == "__main__":
    main()
