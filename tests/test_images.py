"""Every bad or unusual upload either decodes to upright 8-bit RGB or gets a sentence naming the
problem; nothing else escapes `decode_image`."""

import io

import numpy as np
import pytest
from PIL import GifImagePlugin, Image, PngImagePlugin, TiffImagePlugin, WebPImagePlugin

from shared.data.examples import PHOTOS
from shared.errors import UserError
from shared.inputs.images import MAX_SIDE, MAX_UPLOAD_BYTES, decode_image, uploaded_file


def encode(image: Image.Image, fmt: str, **save_args) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save_args)
    return buffer.getvalue()


def refused(source, *words: str) -> str:
    with pytest.raises(UserError) as caught:
        decode_image(source)
    message = str(caught.value)
    for word in words:
        assert word in message, message
    return message


def test_real_photo_decodes_unchanged():
    decoded = decode_image(PHOTOS["cat"])
    original = Image.open(PHOTOS["cat"])
    assert decoded.image.mode == "RGB" and decoded.image.size == original.size and decoded.notes == []
    assert np.array_equal(np.asarray(decoded.image), np.asarray(original.convert("RGB")))


@pytest.mark.parametrize("source", [None, ""])
def test_no_image(source):
    refused(source, "No image")


def test_empty_file():
    refused(b"", "empty", "0 bytes")


def test_missing_path(tmp_path):
    refused(str(tmp_path / "gone.png"), "could not be found")


def test_text_file_is_not_an_image(tmp_path):
    fake = tmp_path / "notes.jpg"  # the name lies; the bytes decide
    fake.write_text("hello, I am not a JPEG")
    refused(str(fake), "not an image", "JPEG, PNG")


def test_svg_and_eps_are_refused():
    refused(b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>', "not an image")
    refused(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", "not an image")


def test_truncated_png():
    data = encode(Image.open(PHOTOS["coffee"]), "PNG")
    refused(data[: len(data) // 2], "damaged or truncated")


def test_decompression_bomb_refused_from_header():
    bomb = encode(Image.new("1", (7000, 7000)), "PNG")  # 49 MP, a few KB on disk
    assert len(bomb) < 100_000
    refused(bomb, "7000x7000", "megapixels")


def test_huge_side_refused():
    refused(encode(Image.new("L", (1, MAX_SIDE + 1)), "PNG"), f"1x{MAX_SIDE + 1}", f"{MAX_SIDE} px a side")


def test_too_small_refused():
    refused(encode(Image.new("RGB", (1, 1)), "PNG"), "1x1", "at least")


def test_upload_over_size_limit(tmp_path):
    big = tmp_path / "big.png"
    big.write_bytes(b"\0" * (MAX_UPLOAD_BYTES + 1))
    refused(str(big), "the limit is 10 MB")


@pytest.mark.parametrize("mode", ["L", "1", "P", "CMYK", "LA", "RGBA"])
def test_modes_become_rgb(mode):
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    decoded = decode_image(encode(Image.open(PHOTOS["coffee"]).convert(mode), fmt))
    assert decoded.image.mode == "RGB" and decoded.image.size == (600, 400)


def test_transparency_is_laid_on_white():
    clear = Image.new("RGBA", (32, 32), (255, 0, 0, 0))
    assert decode_image(encode(clear, "PNG")).image.getpixel((5, 5)) == (255, 255, 255)


def test_16_bit_grayscale_keeps_its_contrast():
    ramp = np.tile(np.linspace(0, 65535, 64, dtype=np.uint16), (64, 1))
    pixels = np.asarray(decode_image(encode(Image.fromarray(ramp, mode="I;16"), "PNG")).image)
    assert pixels[0, 0, 0] == 0 and pixels[0, -1, 0] == 255  # not clipped to white


def test_exif_rotation_is_applied():
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    rotated = decode_image(encode(Image.new("RGB", (40, 20)), "JPEG", exif=exif))
    assert rotated.image.size == (20, 40)


def test_animated_gif_uses_first_frame():
    frames = [Image.new("RGB", (16, 16), colour) for colour in [(255, 0, 0), (0, 0, 255)]]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    decoded = decode_image(data)
    assert decoded.image.getpixel((0, 0))[0] > 200 and decoded.notes == ["animated image: used its first frame"]


@pytest.mark.parametrize("kind", ["GIF", "TIFF", "PNG", "WEBP"])
def test_an_animation_is_not_walked_frame_by_frame(kind, monkeypatch):
    """Pillow decodes each GIF frame it seeks past: 101 frames of 40 MP in a 3 MB GIF held a worker
    for a minute, and 100,000 pages of a 10 MB TIFF for 72 s. Only the first frame is read."""
    frames = [Image.new("RGB", (8, 8), (shade, 0, 0)) for shade in range(0, 250, 2)]
    data = encode(frames[0], kind, save_all=True, append_images=frames[1:])
    seeks = []

    def counted(real_seek):
        def seek(self, frame):
            seeks.append(frame)
            return real_seek(self, frame)
        return seek

    for plugin in (GifImagePlugin.GifImageFile, TiffImagePlugin.TiffImageFile, PngImagePlugin.PngImageFile,
                   WebPImagePlugin.WebPImageFile):
        monkeypatch.setattr(plugin, "seek", counted(plugin.seek))
    decoded = decode_image(data)
    assert decoded.image.getpixel((0, 0))[0] == 0 and decoded.notes == ["animated image: used its first frame"]
    assert all(frame == 0 for frame in seeks), seeks


@pytest.mark.parametrize("path", ["/etc/passwd\x00.png", "\x00", "../\x00/etc/passwd"])
def test_a_path_with_a_nul_byte_gets_the_not_an_upload_sentence(tmp_path, path):
    with pytest.raises(UserError, match="never as a path on the server"):
        uploaded_file(path, tmp_path)


def test_a_png_with_metadata_over_pillows_limit_gets_a_sentence_without_pillows_words(tmp_path):
    """A real image with a 5 MB ICC profile: Pillow's refusal named its own MAX_TEXT_CHUNK."""
    from PIL import Image

    path = tmp_path / "big-profile.png"
    Image.new("RGB", (32, 32), "white").save(path, icc_profile=bytes(range(256)) * 20_000)
    with pytest.raises(UserError) as refused:
        decode_image(path)
    assert str(refused.value) == ("The image carries metadata (text or an ICC colour profile) over the safe limit of "
                                  "1 MB: re-save it without its metadata and upload it again.")


def test_a_jpeg_of_thousands_of_scans_is_refused_before_it_is_decoded():
    """Each scan of a progressive JPEG is a pass over the whole image: a hostile client's 200 KB file of
    140,000 scans held a worker for 100 s. An ordinary progressive JPEG (10 scans) still decodes."""
    progressive = encode(Image.open(PHOTOS["cat"]).convert("RGB"), "JPEG", progressive=True)
    assert progressive.count(b"\xff\xda") == 10 and decode_image(progressive).image.size == (451, 300)
    last_scan = progressive.rindex(b"\xff\xda")
    repeated = progressive[:-2] + progressive[last_scan:-2] * 200 + b"\xff\xd9"  # its last scan, 200 times more
    refused(repeated, "The JPEG has 210 scans; the limit is 100", "Re-save it")
    # with a multi-picture segment Pillow names it MPO, and the count was skipped (the hostile client's)
    mpo = encode(Image.new("RGB", (16, 16)), "MPO", save_all=True, append_images=[Image.new("RGB", (8, 8))])
    start = mpo.index(b"\xff\xe2")
    segment = mpo[start:start + 2 + int.from_bytes(mpo[start + 2:start + 4], "big")]
    as_mpo = repeated[:2] + segment + repeated[2:]
    assert Image.open(io.BytesIO(as_mpo)).format == "MPO"
    refused(as_mpo, "The JPEG has 210 scans; the limit is 100")


def test_a_gif_of_thousands_of_comment_blocks_is_refused_before_pillow_reads_them():
    """Pillow joins a GIF's comments with a copy each time: 800,000 one-byte comments in 4 MB took 18 s
    of a core (a hostile client). An animated GIF with a comment still decodes."""
    frames = [Image.open(PHOTOS["cat"]).convert("RGB").rotate(angle) for angle in (0, 20)]
    animated = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], comment=b"made here", loop=0,
                      duration=100)  # each frame's timing block
    assert decode_image(animated).notes == ["animated image: used its first frame"]
    refused(encode(frames[0], "GIF", comment=b"A" * 300_000), "more than 1,000 extension blocks")  # 1,177 blocks
    second_timing = animated.index(b"\x21\xf9", animated.index(b"\x21\xf9") + 1)  # before the second frame
    refused(animated[:second_timing] + b"\x21\xfe\x01A\x00" * 2000 + animated[second_timing:],
            "more than 1,000 extension blocks")
