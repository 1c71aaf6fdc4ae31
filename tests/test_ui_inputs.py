"""The server-side parts of the page's inputs that hold what clients send: the sketchpad's drawings
kept between requests, and the upload folder's aborted uploads."""

import os
import time
import types

import gradio as gr
from gradio import route_utils

from shared.inference import bf16
from shared.serving import ui


def blob(kind: str, blob_id: str, data: bytes, index=None):
    """An `accept_blobs` request as gradio hands it to the component."""
    return types.SimpleNamespace(data={"type": kind, "id": blob_id, "index": index}, files=[("blob", data)])


def test_the_sketchpad_keeps_only_drawings_and_a_bounded_amount_of_them():
    """gradio's ImageEditor grew a layer list to any index a client named (20,000,000: 150 MB from one
    600-byte request) and kept every blob under any id for ever."""
    sketch = ui.DrawingInput()
    sketch.accept_blobs(blob("layer", "a", b"png", index="20000000"))
    sketch.accept_blobs(blob("background", "a", b"png"))
    sketch.accept_blobs(blob("composite", "x" * 1000, b"png"))
    sketch.accept_blobs(blob("composite", "big", b"\0" * (ui.MAX_DRAWING_BYTES + 1)))
    assert sketch.blob_storage == {}
    drawing = b"\0" * (ui.MAX_DRAWING_BYTES // 2)
    for n in range(3 * ui.MAX_DRAWINGS_KEPT_BYTES // len(drawing)):
        sketch.accept_blobs(blob("composite", f"d{n}", drawing))
    kept = sketch.blob_storage
    assert sum(len(b.composite) for b in kept.values()) <= ui.MAX_DRAWINGS_KEPT_BYTES
    assert f"d{n}" in kept and "d0" not in kept  # the newest kept, the oldest dropped
    assert sketch.preprocess(types.SimpleNamespace(id="d0", composite=None))["composite"] is None


def test_aborted_uploads_are_swept_and_every_app_deletes_its_old_files(tmp_path, monkeypatch):
    old, fresh = tmp_path / "tmpabc123", tmp_path / "tmpdef456"
    for path in (old, fresh, tmp_path / "kept.png"):
        path.write_bytes(b"x")
    (tmp_path / "tmpfolder").mkdir()
    (tmp_path / "0123abcd").mkdir()
    (tmp_path / "0123abcd" / "tmpupload.png").write_bytes(b"x")  # a finished upload in its own folder
    an_hour_ago = time.time() - 2 * ui.CACHE_MAX_AGE_S
    for path in (old, tmp_path / "kept.png", tmp_path / "0123abcd" / "tmpupload.png"):
        os.utime(path, (an_hour_ago, an_hour_ago))
    ui.remove_aborted_uploads(tmp_path, ui.CACHE_MAX_AGE_S)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0123abcd", "kept.png", "tmpdef456", "tmpfolder"]
    with gr.Blocks() as demo:
        gr.Markdown("x")
    assert ui.harden(demo).delete_cache == (ui.CACHE_SWEEP_S, ui.CACHE_MAX_AGE_S)
    # at shutdown gradio deletes every file the app made; an upload under way (another replica's, in a
    # shared upload folder) is kept
    monkeypatch.setattr(ui, "get_upload_folder", lambda: str(tmp_path))
    route_utils.delete_files_created_by_app(demo, None)
    assert fresh.exists()
    ui.remove_aborted_uploads(tmp_path, None)  # every aborted upload
    assert not fresh.exists() and (tmp_path / "0123abcd" / "tmpupload.png").exists()


def test_the_backend_choice_offers_only_what_the_picked_model_runs():
    assert ui.offered_backends("classification", "digits-convnext") == [  # bf16 where it runs here
        "torch", "onnx", "int8", *(["bf16"] if bf16.available() else [])]
    assert ui.offered_backends("classification", "efficientnet-lite0") == ["torch", "onnx"]  # no held-out check
    assert ui.offered_backends("captioning", None) == ["torch", "onnx"]  # the default: no int8 offered
    assert ui.offered_backends("vqa", "dandelin/vilt-b32-finetuned-vqa") == ["torch"]  # does not export
    with gr.Blocks():
        model = ui.model_picker("vqa")
        backend = ui.backend_radio("vqa", model)
    assert [choice for _, choice in backend.choices] == ui.offered_backends("vqa", model.value)


def test_a_refusal_stays_on_the_page_until_it_is_closed():
    """gradio's toast faded after 10 s and left a bare "Error" badge over the outputs (found by a
    visitor): every sentence of the apps is shown until the visitor closes it."""
    from shared.errors import UserError

    @ui.user_errors
    def refuses():
        raise UserError("No image was given.")

    try:
        refuses()
    except gr.Error as err:
        assert err.message == "No image was given." and err.duration is None and not err.print_exception
    else:
        raise AssertionError("no gr.Error")


def test_a_client_is_its_ipv4_address_or_its_ipv6_network():
    """An IPv6 subscriber holds a /64: counted by address, one attacker would be millions of clients
    for the per-client queue share and upload budget (found by the hostile client)."""
    from shared.serving.clients import client_address

    assert client_address({}, ("203.0.113.7", 5000)) == "203.0.113.7"
    assert client_address({}, ("::ffff:203.0.113.7", 5000)) == "203.0.113.7"
    assert client_address({}, ("2001:db8:1:2:aaaa::1", 5000)) == client_address({}, ("2001:db8:1:2::ffff", 1)) \
        == "2001:db8:1:2::/64"
    assert client_address({}, ("2001:db8:1:3::1", 5000)) != "2001:db8:1:2::/64"
