"""The embedding map (shared/inference/embeddings.py): penultimate-layer vectors, their t-SNE map,
nearest neighbours, and the k-NN accuracy that says the arrangement means something."""

import threading

import numpy as np
import pytest
import torch

from apps.classification import app, task
from shared.data.digits import digit_image, split
from shared.data.examples import IMAGENET_PHOTOS
from shared.errors import UserError
from shared.inference import embeddings, heatmaps

TRAIN, TEST = 400, 150  # subsets of the digits' splits: seconds, not minutes (README: all 1,437 / 360)


def digits(loaded, name, n):
    pixels, labels = split()[name]
    images = [digit_image(p).convert("RGB") for p in pixels[:n]]
    return torch.from_numpy(task.preprocess(loaded, images)["pixel_values"]), labels[:n], images


def test_other_requests_forwards_do_not_reach_a_map_or_a_gradcam():
    """The hooks sit on the model every request shares; forwards of other threads (another visitor's
    classification) ran through them and broke the map (found by the hostile client)."""
    from shared.inference import attribution

    loaded = task.MODELS.load("digits-convnext")
    pixels, _, _ = digits(loaded, "test", 200)
    alone = embeddings.penultimate(loaded, pixels)
    cam_alone = attribution.attribute(loaded, pixels[:1], 3, "gradcam")
    stop = threading.Event()

    def other_visitor():
        while not stop.is_set():
            with torch.no_grad():
                loaded.model(pixel_values=pixels[:4])

    others = [threading.Thread(target=other_visitor) for _ in range(2)]
    for thread in others:
        thread.start()
    try:
        np.testing.assert_allclose(embeddings.penultimate(loaded, pixels), alone, atol=1e-5)
        for _ in range(5):
            np.testing.assert_allclose(attribution.attribute(loaded, pixels[:1], 3, "gradcam"), cam_alone, atol=1e-5)
    finally:
        stop.set()
        for thread in others:
            thread.join()


def test_the_penultimate_layer_is_what_the_classifier_reads():
    loaded = task.MODELS.load("digits-convnext")
    pixels, _, _ = digits(loaded, "test", 8)
    features = embeddings.penultimate(loaded, pixels)
    assert features.shape == (8, loaded.model.config.hidden_sizes[-1])
    with torch.no_grad():
        np.testing.assert_allclose(loaded.model.classifier(torch.from_numpy(features)).numpy(),
                                   loaded.model(pixel_values=pixels).logits.numpy(), atol=1e-5)


def test_knn_in_the_embedding_beats_knn_in_pixels_on_held_out_digits():
    loaded = task.MODELS.load("digits-convnext")
    train, train_labels, _ = digits(loaded, "train", TRAIN)
    test, test_labels, _ = digits(loaded, "test", TEST)
    in_embedding = embeddings.knn_accuracy(embeddings.penultimate(loaded, train), train_labels,
                                           embeddings.penultimate(loaded, test), test_labels)
    in_pixels = embeddings.knn_accuracy(train.flatten(1).numpy(), train_labels, test.flatten(1).numpy(), test_labels)
    assert in_embedding > in_pixels and in_embedding > 0.95, (in_embedding, in_pixels)
    # the same digits as users draw them, white on black (the input is centred: -x is the inverted image):
    # their pixels match no training digit, their embeddings still do
    inverted = embeddings.knn_accuracy(embeddings.penultimate(loaded, train), train_labels,
                                       embeddings.penultimate(loaded, -test), test_labels)
    inverted_pixels = embeddings.knn_accuracy(train.flatten(1).numpy(), train_labels, (-test).flatten(1).numpy(),
                                              test_labels)
    assert inverted > inverted_pixels + 0.5, (inverted, inverted_pixels)


def test_the_map_of_uploads_has_a_point_and_neighbours_for_each(tmp_path):
    loaded = task.MODELS.load("digits-convnext")
    _, labels, images = digits(loaded, "test", 30)
    paths = []
    for i, image in enumerate(images):
        paths.append(str(tmp_path / f"digit_{i}_{labels[i]}.png"))
        image.save(paths[-1])
    scatter, picture, summary, chosen, state = app.embedding_map(paths, "digits-convnext")
    table = scatter.constructor_args["value"]
    # the scatter plot colours each label as the thumbnail map does
    assert scatter.color_map == heatmaps.label_colours(list(table["label"])) and len(scatter.color_map) >= 9
    assert len(table) == 30 and set(table.columns) >= {"x", "y", "name", "label", "predicted"}
    assert list(table["label"]) == sorted(table["label"])  # so the legend lists the labels in order
    assert "coloured by their predicted label" in summary and picture.size[0] > 500
    assert (table.sort_index()["predicted"] == [str(label) for label in labels]).mean() > 0.9  # rows by label
    gallery = app.nearest(chosen.value, state)
    assert len(gallery) == 1 + embeddings.K and gallery[0][1].startswith(chosen.value)
    assert max(gallery[0][0].size) <= app.task.THUMBNAIL_SIDE
    # the page keeps thumbnails as JPEG, for a while: 500 as pictures were 14 MB a visitor, without end
    assert sum(len(jpeg) for jpeg in state[1].values()) < 30 * 4000 and app.map_state.time_to_live == app.MAP_KEPT_S
    points = {p["name"]: p for p in state[0]}
    same = [n["name"] for n in points[chosen.value]["neighbours"]]
    label = points[chosen.value]["predicted"]
    assert sum(points[name]["predicted"] == label for name in same) >= 3  # neighbours mostly share its class


def test_too_few_or_too_many_images_get_one_sentence(tmp_path):
    with pytest.raises(UserError, match="needs at least 5 images; got 2"):
        embeddings.tsne(np.zeros((2, 4)))
    with pytest.raises(UserError, match="the embedding map takes 5 to 500"):
        task.embedding_map([str(tmp_path / "x.png")] * 501)
    with pytest.raises(UserError, match="2 images; the embedding map takes 5 to 500"):  # before decoding any
        task.embedding_map([str(tmp_path / "missing.png")] * 2)


def test_uploads_are_kept_small_and_a_bad_one_is_named(tmp_path):
    """A hostile client sent 12 photos of 40 megapixels: each kept whole, the server grew by 6 GB."""
    from PIL import Image

    paths = []
    for i in range(5):
        paths.append(str(tmp_path / f"big_{i}.png"))
        Image.new("RGB", (4000, 3000 + i), "white").save(paths[-1])
    result = task.embedding_map(paths, model="digits-convnext")
    assert all(max(t.size) <= task.THUMBNAIL_SIDE for t in result.images["thumbnails"].values())
    (tmp_path / "broken.png").write_bytes(b"not an image")
    with pytest.raises(UserError, match="^5: broken.png: "):
        task.embedding_map(paths + [str(tmp_path / "broken.png")], model="digits-convnext")


def test_a_photo_model_with_no_uploads_maps_the_shipped_photos_not_the_digits():
    result = task.embedding_map(None, model="efficientnet-lite0")
    names = [point["name"] for point in result["points"]]
    assert len(names) == len(IMAGENET_PHOTOS) and any("chelsea.png" in name for name in names)
    predicted = {point["name"].split(": ")[1]: point["predicted"] for point in result["points"]}
    # the map reads each photo as Classify does: the same top label (it once shrank them first, and
    # called chelsea.png an Egyptian cat where Classify said tiger cat)
    for path in IMAGENET_PHOTOS.values():
        assert predicted[path.name] == task.classify(path, "efficientnet-lite0")["labels"][0]["label"]
    assert predicted["chelsea.png"] == "tiger cat"
    assert result["colour"] == "predicted" and "knn_accuracy_in_map" not in result.to_json()


def test_an_image_is_never_its_own_neighbour_even_among_duplicates():
    features = np.repeat(np.random.default_rng(0).normal(size=(3, 8)), 2, axis=0)  # each row twice
    found, distances = embeddings.neighbours(features, k=3)
    assert all(i not in row for i, row in enumerate(found))
    assert [row[0] for row in found] == [1, 0, 3, 2, 5, 4] and (distances[:, 0] == 0).all()
