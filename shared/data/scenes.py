"""A synthetic scene world: coloured digits on textures, with every label the apps learn from.

    scene = make_scene(seed=7, index=0)
    scene.image            # 128x128 RGB
    scene.objects          # digit, colour, box [xmin, ymin, xmax, ymax] in pixels (visible part)
    scene.semantic_mask    # 0 background, 1 + digit elsewhere
    scene.instance_mask    # 0 background, 1 + object index elsewhere
    scene.caption          # {"en": "a red 3 to the left of a blue 7", "de": "eine rote 3 links von einer blauen 7"}
    scene.qa               # [{"question": {"en", "de"}, "answer": {"en", "de"}}, ...]
    scene.where_qa         # "where is the 3, seen from the 7?" -> "left" / "right" / "above" / "below"

Deterministic: scene `index` of `seed` is the same everywhere. Digits are scikit-learn's 8x8
digits, scaled and coloured; backgrounds are the texture photos scikit-image ships (brick,
grass, gravel) or plain colours; later digits may partly cover earlier ones. `write_datasets`
writes COCO JSON for detection, image/mask folders for segmentation, a JSONL of captions
and questions, and their English/German sentence pairs in the `datasets` translation format:
the formats users bring to the fine-tuning scripts.

    demohub data synth --out data/scenes-train --n 2000 --seed 0
    demohub data synth --out data/scenes-text --n 12000 --seed 0 --text-only --max-repeats 10
    demohub data synth --out data/scenes-where --n 20000 --seed 0 --where-questions
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
import skimage
from PIL import Image

SIDE = 128
MAX_OBJECTS = 4
DIGIT_HEIGHT = (26, 46)
TEXTURES = ("brick.png", "grass.png", "gravel.png")
PLAIN_BACKGROUNDS = [(225, 225, 220), (200, 190, 170), (70, 75, 85), (150, 160, 150)]
# colour: RGB, German adjective stem (nominative "eine rote", dative "einer roten")
COLOURS = {"red": ((215, 35, 35), "rot"), "green": ((30, 160, 60), "grün"), "blue": ((35, 75, 215), "blau"),
           "yellow": ((240, 205, 30), "gelb")}
CLASS_NAMES = ["background", *[str(d) for d in range(10)]]  # semantic mask ids
# The scene models' cards measure on these, never trained on (`demohub data synth --out data/scenes-test
# --n 300 --seed 1`); so do the int8 checks, which draw them in memory.
HELD_OUT_SEED, HELD_OUT_SCENES = 1, 300


@dataclass
class SceneObject:
    digit: int
    colour: str
    box: list[int]  # xmin, ymin, xmax, ymax of the visible pixels, inclusive-exclusive

    @property
    def centre(self) -> tuple[float, float]:
        return (self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2


@dataclass
class Scene:
    image: Image.Image
    objects: list[SceneObject]
    semantic_mask: np.ndarray
    instance_mask: np.ndarray
    caption: dict[str, str] = field(default_factory=dict)
    qa: list[dict] = field(default_factory=list)
    where_qa: list[dict] = field(default_factory=list)


@cache
def _glyphs() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits  # here: scikit-learn takes seconds to import (cold start)

    digits = load_digits()
    return digits.images / 16.0, digits.target


@cache
def _texture(name: str) -> np.ndarray:
    return np.asarray(Image.open(Path(skimage.__file__).parent / "data" / name).convert("L"), dtype=np.float32)


def _background(rng: np.random.Generator) -> np.ndarray:
    if rng.random() < 0.6:
        texture = _texture(TEXTURES[rng.integers(len(TEXTURES))])
        size = int(rng.integers(SIDE, texture.shape[0]))
        top, left = rng.integers(0, texture.shape[0] - size + 1, size=2)
        crop = Image.fromarray(texture[top:top + size, left:left + size])
        gray = np.asarray(crop.resize((SIDE, SIDE), Image.Resampling.BILINEAR), dtype=np.float32)
        return np.repeat((0.35 * gray + 0.65 * 150)[..., None], 3, axis=2)  # muted: digits must stand out
    return np.tile(np.array(PLAIN_BACKGROUNDS[rng.integers(len(PLAIN_BACKGROUNDS))], dtype=np.float32), (SIDE, SIDE, 1))


def _ink(glyph: np.ndarray, height: int, width: int) -> np.ndarray:
    """An 8x8 glyph of ink levels as a (height, width) alpha map in [0, 1]."""
    image = Image.fromarray(glyph.astype(np.float32), mode="F").resize((width, height), Image.Resampling.BILINEAR)
    return np.clip(np.asarray(image) * 1.6 - 0.15, 0, 1)


def _box_iou(a: list[int], b: list[int]) -> float:
    inter = max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0


def make_scene(seed: int, index: int, digits: int | None = None) -> Scene:
    """Scene `index` of `seed`: 1 to MAX_OBJECTS digits, or `digits` of them (fewer where one finds
    no free place or is covered); the same seed and index always give the same scene."""
    rng = np.random.default_rng([seed, index])
    glyphs, targets = _glyphs()
    canvas = _background(rng)
    instance = np.zeros((SIDE, SIDE), dtype=np.uint8)
    placed: list[tuple[int, str, list[int]]] = []
    drawn = int(rng.integers(1, MAX_OBJECTS + 1))
    for _ in range(digits or drawn):
        height = int(rng.integers(*DIGIT_HEIGHT))
        width = int(height * rng.uniform(0.7, 0.9))
        for _attempt in range(30):  # a place that covers no earlier digit by more than a third
            left, top = int(rng.integers(0, SIDE - width)), int(rng.integers(0, SIDE - height))
            box = [left, top, left + width, top + height]
            if all(_box_iou(box, other) < 0.2 for _, _, other in placed):
                break
        else:
            continue
        pick = int(rng.integers(len(glyphs)))
        alpha = _ink(glyphs[pick], height, width)
        colour = list(COLOURS)[rng.integers(len(COLOURS))]
        rgb = np.array(COLOURS[colour][0], dtype=np.float32) * rng.uniform(0.85, 1.0)
        region = canvas[top:top + height, left:left + width]
        canvas[top:top + height, left:left + width] = region * (1 - alpha[..., None]) + rgb * alpha[..., None]
        instance[top:top + height, left:left + width][alpha > 0.5] = len(placed) + 1
        placed.append((int(targets[pick]), colour, box))

    objects, semantic = [], np.zeros_like(instance)
    for i, (digit, colour, _) in enumerate(placed):
        ys, xs = np.nonzero(instance == i + 1)
        if len(xs) == 0:  # fully covered: it is not in the scene any more
            instance[instance == i + 1] = 0
            continue
        objects.append(SceneObject(digit, colour, [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]))
        semantic[instance == i + 1] = digit + 1
        instance[instance == i + 1] = len(objects)
    image = Image.fromarray(np.clip(canvas, 0, 255).round().astype(np.uint8))
    scene = Scene(image, objects, semantic, instance)
    scene.caption = caption(objects)
    scene.qa = questions(objects, rng)
    scene.where_qa = where_questions(objects, rng)  # drawn last: every earlier draw stays as it was
    return scene


def _en(obj: SceneObject) -> str:
    return f"a {obj.colour} {obj.digit}"


def _de(obj: SceneObject, dative: bool = False) -> str:
    stem = COLOURS[obj.colour][1]
    return f"einer {stem}en {obj.digit}" if dative else f"eine {stem}e {obj.digit}"


RELATIONS = {"left": ("to the left of", "links von"), "right": ("to the right of", "rechts von"),
             "above": ("above", "über"), "below": ("below", "unter")}
OPPOSITE = {"left": "right", "right": "left", "above": "below", "below": "above"}


def relation(a: SceneObject, b: SceneObject) -> str:
    """Where `a` is, seen from `b`, along the axis on which they are further apart."""
    dx, dy = a.centre[0] - b.centre[0], a.centre[1] - b.centre[1]
    if abs(dx) >= abs(dy):
        return "left" if dx < 0 else "right"
    return "above" if dy < 0 else "below"


def pair_caption(first: SceneObject, second: SceneObject, where: str) -> dict[str, str]:
    """A two-digit caption saying that `first` is `where` ("left", "above", ...) of `second`."""
    en, de = RELATIONS[where]
    return {"en": f"{_en(first)} {en} {_en(second)}", "de": f"{_de(first)} {de} {_de(second, dative=True)}"}


def caption(objects: list[SceneObject]) -> dict[str, str]:
    if not objects:
        return {"en": "no digits", "de": "keine ziffern"}
    if len(objects) == 2:
        return pair_caption(objects[0], objects[1], relation(objects[0], objects[1]))
    ordered = sorted(objects, key=lambda o: o.centre[0])
    if len(ordered) == 1:
        return {"en": _en(ordered[0]), "de": _de(ordered[0])}
    return {"en": ", ".join(_en(o) for o in ordered[:-1]) + f" and {_en(ordered[-1])}",
            "de": ", ".join(_de(o) for o in ordered[:-1]) + f" und {_de(ordered[-1])}"}


def _qa(question_en: str, question_de: str, answer_en: str, answer_de: str) -> dict:
    return {"question": {"en": question_en, "de": question_de}, "answer": {"en": answer_en, "de": answer_de}}


def _unique_digits(objects: list[SceneObject]) -> list[SceneObject]:
    """The objects whose digit no other object has: a question can name them unambiguously."""
    return [o for o in objects if sum(p.digit == o.digit for p in objects) == 1]


def questions(objects: list[SceneObject], rng: np.random.Generator) -> list[dict]:
    """Count, existence, colour and position questions whose answers the scene decides."""
    yes_no = {True: ("yes", "ja"), False: ("no", "nein")}
    qa = [_qa("how many digits are there?", "wie viele ziffern gibt es?", str(len(objects)), str(len(objects)))]
    asked = int(rng.integers(10))
    present = any(o.digit == asked for o in objects)
    article = "an" if asked == 8 else "a"
    qa.append(_qa(f"is there {article} {asked}?", f"gibt es eine {asked}?", *yes_no[present]))
    unique = _unique_digits(objects)
    if unique:
        obj = unique[int(rng.integers(len(unique)))]
        qa.append(_qa(f"what colour is the {obj.digit}?", f"welche farbe hat die {obj.digit}?", obj.colour,
                      COLOURS[obj.colour][1]))
    if len(unique) >= 2:
        first, second = (unique[i] for i in rng.permutation(len(unique))[:2])
        is_left = first.centre[0] < second.centre[0]
        qa.append(_qa(f"is the {first.digit} to the left of the {second.digit}?",
                      f"ist die {first.digit} links von der {second.digit}?", *yes_no[is_left]))
    return qa


WHERE_ANSWERS = {"left": ("left", "links"), "right": ("right", "rechts"), "above": ("above", "oben"),
                 "below": ("below", "unten")}


def where_questions(objects: list[SceneObject], rng: np.random.Generator) -> list[dict]:
    """"Where is the 3, seen from the 7?": the comparison a two-digit caption's relation word makes
    (`relation`, on both axes), asked with both digits named. Opt-in (`write_datasets(where_questions=True)`),
    so that the data of the models trained before it exists stays as it was."""
    unique = _unique_digits(objects)
    if len(unique) < 2:
        return []
    first, second = (unique[i] for i in rng.permutation(len(unique))[:2])
    return [_qa(f"where is the {first.digit}, seen from the {second.digit}?",
                f"wo ist die {first.digit}, von der {second.digit} aus gesehen?",
                *WHERE_ANSWERS[relation(first, second)])]


def sentence_pairs(scene: Scene) -> list[dict[str, str]]:
    """The scene's caption, questions and answers as {"en", "de"} pairs."""
    return [scene.caption, *(qa[part] for qa in scene.qa for part in ("question", "answer"))]


def sentence_case(text: str) -> str:
    """"a red 3" -> "A red 3.": how people type a sentence (questions keep their "?")."""
    text = text[:1].upper() + text[1:]
    return text if text.endswith("?") else text + "."


def translation_pairs(n: int, seed: int, digits: int | None = None) -> Counter[tuple[str, str]]:
    """How often each (English, German) pair occurs in scenes 0..n-1 of `seed`, as written and in
    sentence case, in the order first met."""
    counts: Counter[tuple[str, str]] = Counter()
    for index in range(n):
        for pair in sentence_pairs(make_scene(seed, index, digits)):
            counts[pair["en"], pair["de"]] += 1
            counts[sentence_case(pair["en"]), sentence_case(pair["de"])] += 1
    return counts


@cache
def words(where_questions: bool = False) -> frozenset[str]:
    """Every word of the scenes' English and German sentences, lower case (100 scenes use them all);
    with `where_questions`, also the words of "where is the 3, seen from the 7?" and its answers,
    which the VQA model learnt and the translator did not."""
    texts = [text for pair in translation_pairs(100, seed=0) for text in pair]
    if where_questions:
        texts += [qa[part][lang] for index in range(100) for qa in make_scene(0, index).where_qa
                  for part in ("question", "answer") for lang in ("en", "de")]
    return frozenset(word.lower() for text in texts for word in re.findall(r"\w+", text))


def question_form(text: str) -> str:
    """A question as its form: lower case, each number as #, "an 8" as "a #", no final punctuation."""
    text = re.sub(r"\d+", "#", re.sub(r"\s+", " ", text.lower()).strip().rstrip("?.! "))
    return text.replace("an #", "a #")


@cache
def question_forms() -> frozenset[str]:
    """The forms of the questions the scenes ask, with the where-questions, in English and German."""
    scenes = [make_scene(0, index) for index in range(100)]
    return frozenset(question_form(qa["question"][lang]) for scene in scenes for qa in scene.qa + scene.where_qa
                     for lang in ("en", "de"))


def write_translation_pairs(out: str | Path, n: int, seed: int, max_repeats: int = 1,
                            digits: int | None = None) -> Path:
    """The English/German pairs of scenes 0..n-1 of `seed`, each also in sentence case, as JSONL rows
    {"translation": {"en": ..., "de": ...}} (the `datasets` translation format).

    A pair is written as often as it occurs, at most `max_repeats` times: for training, frequent
    questions then weigh more than one-off captions without swamping them; for a held-out set, 1.
    """
    path = Path(out) / "translation.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    counts = translation_pairs(n, seed, digits)
    with path.open("w", encoding="utf-8") as f:
        for (en, de), count in counts.items():
            row = json.dumps({"translation": {"en": en, "de": de}}, ensure_ascii=False) + "\n"
            f.write(row * min(count, max_repeats))
    return path


def write_datasets(out: str | Path, n: int, seed: int, text_only: bool = False, max_repeats: int = 1,
                   digits: int | None = None, where_questions: bool = False) -> dict[str, str]:
    """Scenes 0..n-1 of `seed` (each with `digits` digits if given) as COCO detection JSON,
    segmentation image/mask folders, captions and questions (with the "where is" questions if
    `where_questions`) and sentence pairs (only the sentence pairs with `text_only`)."""
    out = Path(out)
    translation = write_translation_pairs(out, n, seed, max_repeats, digits)
    if text_only:
        return {"translation": str(translation)}
    for folder in ("images", "masks"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    coco = {"images": [], "annotations": [], "categories": [{"id": d, "name": str(d)} for d in range(10)]}
    with (out / "text.jsonl").open("w", encoding="utf-8") as text:
        for index in range(n):
            scene = make_scene(seed, index, digits)
            name = f"{index:05d}.png"
            scene.image.save(out / "images" / name)
            Image.fromarray(scene.semantic_mask, mode="L").save(out / "masks" / name)
            coco["images"].append({"id": index, "file_name": f"images/{name}", "width": SIDE, "height": SIDE})
            for obj in scene.objects:
                x0, y0, x1, y1 = obj.box
                coco["annotations"].append({"id": len(coco["annotations"]), "image_id": index,
                                            "category_id": obj.digit, "bbox": [x0, y0, x1 - x0, y1 - y0],
                                            "area": (x1 - x0) * (y1 - y0), "iscrowd": 0})
            qa = scene.qa + (scene.where_qa if where_questions else [])
            text.write(json.dumps({"image": f"images/{name}", "caption": scene.caption, "qa": qa},
                                  ensure_ascii=False) + "\n")
    (out / "detection.json").write_text(json.dumps(coco))
    (out / "labels.json").write_text(json.dumps(dict(enumerate(CLASS_NAMES)), indent=1))
    return {"images": str(out / "images"), "detection": str(out / "detection.json"),
            "segmentation_masks": str(out / "masks"), "labels": str(out / "labels.json"),
            "text": str(out / "text.jsonl"), "translation": str(translation)}


_COLOUR_WORDS = {"en": {name: name for name in COLOURS}, "de": {stem: name for name, (_, stem) in COLOURS.items()}}


def parse_objects(text: str, lang: str = "en") -> list[tuple[str, int]]:
    """(colour, digit) pairs named in a caption of this world, in order: "a red 3 to the left of
    a blue 7" -> [("red", 3), ("blue", 7)]; German "eine rote 3 ..." alike. How a generated
    caption is checked against the scene (captioning's object F1)."""
    import re

    words = _COLOUR_WORDS[lang]
    pattern = rf"\b({'|'.join(words)})(?:e|en)? (\d)\b" if lang == "de" else rf"\b({'|'.join(words)}) (\d)\b"
    return [(words[colour], int(digit)) for colour, digit in re.findall(pattern, text.lower())]


def same_relation(hypothesis: str, reference: str, lang: str = "en") -> bool:
    """Whether a two-digit caption states the reference's fact: the same pair with the same
    relation, or the pair the other way round with the opposite one ("a blue 7 to the right of a
    red 3" says what "a red 3 to the left of a blue 7" says: the image does not show which digit
    the reference names first)."""
    hyp, ref = parse_objects(hypothesis, lang), parse_objects(reference, lang)
    hyp_relation, ref_relation = parse_relation(hypothesis, lang), parse_relation(reference, lang)
    if len(ref) != 2 or ref_relation is None:
        return False
    return (hyp, hyp_relation) in ((ref, ref_relation), (ref[::-1], OPPOSITE[ref_relation]))


def parse_relation(text: str, lang: str = "en") -> str | None:
    """The relation word of a two-digit caption ("left", "right", "above", "below"), or None."""
    for name, phrases in RELATIONS.items():
        if f" {phrases[0 if lang == 'en' else 1]} " in f" {text.lower()} ":
            return name
    return None
