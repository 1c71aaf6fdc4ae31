"""Does the captioner know where two digits are from each other? Teacher-forced, so that naming the
digits is not in the way:

    PYTHONPATH=. python docs/captioning/relation_probe.py [MODEL_FOLDER] [--seed 1]   # about a minute

For every two-digit scene of held-out seed `--seed` (300 scenes), the model scores the reference
caption with each of the four relation words ("a red 3 above a blue 7", "... below ...", ...) and
the highest-scoring caption is its choice: the share that is the scene's relation, and the share
that at least has the right axis (left/right against above/below; chance is about 0.5). Writes
docs/captioning/relation_probe.json for the shipped model.
"""

import argparse
import json
from pathlib import Path

import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from shared.data import scenes

HERE = Path(__file__).resolve().parent
SHIPPED = "models/captioning/scenes-captioner"


def log_likelihood(model, tokenizer, pixel_values, lang: str, text: str) -> float:
    """The caption's summed token log-probabilities, as the fine-tuning script writes its targets."""
    words = tokenizer(" " + text, add_special_tokens=False)["input_ids"]
    target = [tokenizer.convert_tokens_to_ids(f"<{lang}>"), *words, model.config.eos_token_id]
    inputs = torch.tensor([[model.config.decoder_start_token_id, *target[:-1]]])
    with torch.no_grad():
        logits = model(pixel_values=pixel_values, decoder_input_ids=inputs).logits
    return logits.log_softmax(-1)[0].gather(1, torch.tensor(target)[:, None]).sum().item()


def probe(folder: str, seed: int, n: int = 300) -> dict:
    model, processor = AutoModelForImageTextToText.from_pretrained(folder).eval(), AutoProcessor.from_pretrained(folder)
    horizontal = {"left", "right"}
    counts = {lang: {"scenes": 0, "relation": 0, "axis": 0} for lang in ("en", "de")}
    for index in range(n):
        scene = scenes.make_scene(seed, index)
        if len(scene.objects) != 2:
            continue
        first, second = scene.objects
        truth = scenes.relation(first, second)
        pixel_values = processor(images=scene.image, return_tensors="pt")["pixel_values"]
        captions = {r: scenes.pair_caption(first, second, r) for r in scenes.RELATIONS}
        for lang, count in counts.items():
            scores = {r: log_likelihood(model, processor.tokenizer, pixel_values, lang, text[lang])
                      for r, text in captions.items()}
            chosen = max(scores, key=scores.get)
            count["scenes"] += 1
            count["relation"] += chosen == truth
            count["axis"] += (chosen in horizontal) == (truth in horizontal)
    return {lang: {"two_digit_scenes": c["scenes"], "relation_chosen_right": round(c["relation"] / c["scenes"], 3),
                   "axis_chosen_right": round(c["axis"] / c["scenes"], 3)} for lang, c in counts.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model", nargs="?", default=SHIPPED)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    torch.set_num_threads(1)
    found = {f"seed {seed}": probe(args.model, seed) for seed in args.seeds}
    print(json.dumps(found, indent=2))
    if args.model == SHIPPED:
        (HERE / "relation_probe.json").write_text(json.dumps(found, indent=2) + "\n")


if __name__ == "__main__":
    main()
