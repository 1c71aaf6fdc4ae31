"""The synthetic scene world: deterministic, and every label agrees with the pixels."""

import json

import numpy as np

from shared.data.scenes import SceneObject, caption, make_scene, questions, same_relation, write_datasets


def test_same_seed_same_scene_and_seeds_differ():
    a, b, other = make_scene(0, 5), make_scene(0, 5), make_scene(1, 5)
    assert np.array_equal(np.asarray(a.image), np.asarray(b.image)) and a.caption == b.caption
    assert not np.array_equal(np.asarray(a.image), np.asarray(other.image))


def test_boxes_masks_and_labels_agree():
    for index in range(40):
        scene = make_scene(3, index)
        assert 1 <= len(scene.objects) <= 4 and scene.image.size == (128, 128)
        for i, obj in enumerate(scene.objects, start=1):
            ys, xs = np.nonzero(scene.instance_mask == i)
            assert obj.box == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
            assert set(np.unique(scene.semantic_mask[scene.instance_mask == i])) == {obj.digit + 1}
        assert np.array_equal(scene.semantic_mask > 0, scene.instance_mask > 0)


def test_captions_in_english_and_german():
    red3 = SceneObject(3, "red", [10, 40, 30, 70])
    blue7 = SceneObject(7, "blue", [80, 40, 100, 70])
    green1 = SceneObject(1, "green", [40, 0, 60, 30])
    assert caption([red3, blue7]) == {"en": "a red 3 to the left of a blue 7",
                                      "de": "eine rote 3 links von einer blauen 7"}
    assert caption([blue7, red3])["en"] == "a blue 7 to the right of a red 3"
    assert caption([green1, red3])["en"] == "a green 1 above a red 3"  # further apart vertically
    assert caption([green1, SceneObject(2, "yellow", [40, 90, 60, 120])])["de"] == "eine grüne 1 über einer gelben 2"
    assert caption([blue7, red3, green1]) == {"en": "a red 3, a green 1 and a blue 7",
                                              "de": "eine rote 3, eine grüne 1 und eine blaue 7"}


def test_answers_follow_from_the_scene():
    for index in range(40):
        scene = make_scene(4, index)
        digits = [o.digit for o in scene.objects]
        for pair in scene.qa:
            question, answer = pair["question"]["en"], pair["answer"]["en"]
            if question.startswith("how many"):
                assert answer == str(len(digits))
            elif question.startswith("is there"):
                assert answer == ("yes" if int(question.split()[-1][:-1]) in digits else "no")
            elif question.startswith("what colour"):
                digit = int(question.split()[-1][:-1])
                assert answer == next(o.colour for o in scene.objects if o.digit == digit)
            else:
                first, second = int(question.split()[2]), int(question.split()[-1][:-1])
                centre = {o.digit: o.centre[0] for o in scene.objects}
                assert answer == ("yes" if centre[first] < centre[second] else "no")
            assert pair["answer"]["de"] in {answer, "ja", "nein", "rot", "grün", "blau", "gelb"}


def test_questions_cover_every_kind():
    kinds = {q["question"]["en"].split()[0] + " " + q["question"]["en"].split()[1]
             for i in range(30) for q in make_scene(5, i).qa}
    assert kinds >= {"how many", "is there", "what colour", "is the"}
    assert questions([], np.random.default_rng(0))[0]["answer"]["en"] == "0"


def test_datasets_are_written_in_the_formats_users_bring(tmp_path):
    paths = write_datasets(tmp_path, n=6, seed=9)
    coco = json.loads((tmp_path / "detection.json").read_text())
    assert len(coco["images"]) == 6 and [c["name"] for c in coco["categories"]] == [str(d) for d in range(10)]
    assert all(len(a["bbox"]) == 4 and a["area"] > 0 for a in coco["annotations"])
    assert len(list((tmp_path / "masks").glob("*.png"))) == 6
    lines = (tmp_path / "text.jsonl").read_text(encoding="utf-8").splitlines()
    assert json.loads(lines[0])["caption"] == make_scene(9, 0).caption and paths["text"].endswith("text.jsonl")


def test_a_two_digit_caption_may_name_either_digit_first():
    reference = "a red 3 to the left of a blue 7"
    assert same_relation("a blue 7 to the right of a red 3", reference)
    assert same_relation(reference, reference)
    assert not same_relation("a blue 7 to the left of a red 3", reference)
    assert not same_relation("a red 3 above a blue 7", reference)
    assert same_relation("eine blaue 7 rechts von einer roten 3", "eine rote 3 links von einer blauen 7", "de")


def test_synth_writes_scenes_of_a_chosen_digit_count_and_refuses_others(tmp_path, capsys):
    from shared.serving import cli

    assert cli.main(["data", "synth", "--out", str(tmp_path), "--n", "8", "--seed", "4", "--digits", "2"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "text.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [row["caption"] for row in rows] == [make_scene(4, i, digits=2).caption for i in range(8)]
    assert all(len(make_scene(4, i, digits=2).objects) == 2 for i in range(8))
    assert make_scene(4, 3).caption == make_scene(4, 3, digits=None).caption  # the default draws 1 to 4
    capsys.readouterr()
    assert cli.main(["data", "synth", "--out", str(tmp_path / "x"), "--digits", "5"]) == 1
    assert "--digits" in capsys.readouterr().err


def test_where_questions_name_both_digits_and_answer_the_captions_relation(tmp_path):
    from shared.data.scenes import OPPOSITE, WHERE_ANSWERS, relation
    from shared.serving import cli

    asked = 0
    for index in range(40):
        scene = make_scene(6, index)
        by_digit = {o.digit: o for o in scene.objects}
        for pair in scene.where_qa:
            words = pair["question"]["en"].split()  # where is the 3, seen from the 7?
            first, second = by_digit[int(words[3][:-1])], by_digit[int(words[-1][:-1])]
            assert (pair["answer"]["en"], pair["answer"]["de"]) == WHERE_ANSWERS[relation(first, second)]
            asked += 1
        if len(scene.objects) == 2 and scene.where_qa:  # the two-digit caption's comparison, either way round
            assert pair["answer"]["en"] in {relation(*scene.objects), OPPOSITE[relation(*scene.objects)]}
    assert asked >= 15
    assert cli.main(["data", "synth", "--out", str(tmp_path / "plain"), "--n", "12", "--seed", "6"]) == 0
    assert cli.main(["data", "synth", "--out", str(tmp_path / "where"), "--n", "12", "--seed", "6",
                     "--where-questions"]) == 0
    plain, where = ((tmp_path / name / "text.jsonl").read_text(encoding="utf-8").splitlines()
                    for name in ("plain", "where"))
    assert [json.loads(line)["qa"] for line in plain] == [make_scene(6, i).qa for i in range(12)]  # opt-in
    assert [json.loads(line)["qa"] for line in where] == [make_scene(6, i).qa + make_scene(6, i).where_qa
                                                          for i in range(12)]
