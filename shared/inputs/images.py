"""The one place where uploaded images are opened: every app and the CLI call `decode_image`.

Uploads are untrusted. This refuses what cannot be answered, with a sentence that names the
problem and the limit, and converts what can: EXIF rotation is applied, transparency is laid
on white, CMYK, palette, 1-bit, grayscale and 16-bit images become 8-bit RGB, and an animated
image gives its first frame (said in the notes). Size is checked from the header before any
pixel is decoded, so a decompression bomb costs nothing.
"""

from __future__ import annotations

import io
import os
import stat
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageFilter, ImageOps, PngImagePlugin, UnidentifiedImageError

from shared.errors import UserError

MAX_UPLOAD_BYTES = 10 * 2**20
MAX_SIDE = 8192
MAX_PIXELS = 40_000_000
MIN_SIDE = 8
# A progressive JPEG's scans are each a pass over the whole image: libjpeg writes 10 or fewer, and a
# hostile client's 200 KB file of 140,000 empty scans held a worker for 100 s (libjpeg-turbo's djpeg
# has -maxscans for this; Pillow has no such setting). The SOS marker is never inside entropy-coded
# data (a 0xFF there is stuffed with 0x00), so counting it bounds the scans from above.
MAX_JPEG_SCANS = 100
# Pillow reads a GIF's extension blocks up to its first image on opening, and joins each comment to
# the ones before (a copy each time): 800,000 one-byte comments in 4 MB took 18 s of a core, and the
# time grows with the square of the count. A GIF has a handful (loop count, timing, a comment).
MAX_GIF_EXTENSION_BLOCKS = 1000
# Formats people upload; sniffed from the bytes, not the file name. Never EPS (Ghostscript).
# (Phones' multi-picture JPEGs open through the JPEG plugin.)
FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
_DECODE_ERRORS = (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError, SyntaxError,
                  EOFError)


class DecodedImage(NamedTuple):
    image: Image.Image  # 8-bit RGB, upright
    notes: list[str]  # what was converted that the user may want to know


NOT_AN_UPLOAD = ("Images are taken only as files uploaded to this server, never as a path on the server: "
                 "upload the file and try again.")


def uploaded_file(path: str | Path, upload_folder: str | Path) -> Path:
    """`path` if it is a regular file inside `upload_folder` (links resolved), else one UserError.

    What a server is handed as a file path comes from an API client: nothing outside the upload
    folder is ever opened, and the sentence is the same whether such a path exists or not.
    """
    try:
        real = Path(os.path.realpath(path))
        if not real.is_relative_to(os.path.realpath(upload_folder)):
            raise UserError(NOT_AN_UPLOAD)
        info = os.stat(real)
    except (OSError, ValueError):  # ValueError: a NUL byte in the path
        raise UserError(NOT_AN_UPLOAD) from None
    if not stat.S_ISREG(info.st_mode):  # a device, FIFO, socket or folder is never read
        raise UserError(NOT_AN_UPLOAD)
    if info.st_size > MAX_UPLOAD_BYTES:
        raise UserError(_too_big(info.st_size))
    return real


def _too_big(size: int) -> str:
    return (f"The file is {size / 2**20:.1f} MB; the limit is {MAX_UPLOAD_BYTES // 2**20} MB. "
            "Upload a smaller image.")


def _read_file(path: Path) -> bytes:
    """A regular file's bytes, at most the upload limit. Opened without blocking and checked on the
    open descriptor, so a FIFO, a device (/dev/zero) or a folder is refused before any read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        raise UserError("The image file could not be found: check the path, or upload it again.") from None
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UserError("That path is not a regular file; give the path of an image file.")
        if info.st_size > MAX_UPLOAD_BYTES:
            raise UserError(_too_big(info.st_size))
        return f.read(MAX_UPLOAD_BYTES + 1)


def _read_bytes(source: str | Path | bytes) -> bytes:
    data = source if isinstance(source, bytes) else _read_file(Path(source))
    if not data:
        raise UserError("The file is empty (0 bytes). Upload a JPEG, PNG, WebP, GIF, BMP or TIFF image.")
    if len(data) > MAX_UPLOAD_BYTES:
        raise UserError(_too_big(len(data)))
    return data


def _check_size(width: int, height: int) -> None:
    if max(width, height) > MAX_SIDE or width * height > MAX_PIXELS:
        raise UserError(f"The image is {width}x{height} px; the limit is {MAX_SIDE} px a side and "
                        f"{MAX_PIXELS / 1e6:.0f} megapixels. Resize it and try again.")
    if min(width, height) < MIN_SIDE:
        raise UserError(f"The image is {width}x{height} px; it needs at least {MIN_SIDE} px a side.")


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # Wide integer or float pixels: stretch their actual range onto 0-255.
        pixels = np.asarray(image, dtype=np.float32)
        low, high = float(pixels.min()), float(pixels.max())
        scaled = (pixels - low) * (255.0 / (high - low)) if high > low else np.zeros_like(pixels)
        image = Image.fromarray(scaled.round().astype(np.uint8), mode="L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def gif_extension_blocks(data: bytes) -> int:
    """The data sub-blocks of a GIF's extensions up to its second image (Pillow reads those on opening
    and when it asks whether the GIF is animated; its read of comments is quadratic): a linear walk
    of the blocks, which stops counting past the limit."""
    def past_sub_blocks(position: int) -> tuple[int, int]:
        count = 0
        while position < len(data) and data[position]:
            count, position = count + 1, position + data[position] + 1
        return position + 1, count

    position, blocks, images = 13, 0, 0  # past the header and the logical screen descriptor
    if len(data) > 10 and data[10] & 0x80:  # a global colour table
        position += 3 * 2 ** ((data[10] & 0x07) + 1)
    while position < len(data) and images < 2 and blocks <= MAX_GIF_EXTENSION_BLOCKS:
        if data[position] == 0x21:  # an extension: its introducer, its label, its sub-blocks
            position, count = past_sub_blocks(position + 2)
            blocks += count
        elif data[position] == 0x2C and position + 10 <= len(data):  # an image, perhaps a local colour table
            flags, images = data[position + 9], images + 1
            position += 10 + (3 * 2 ** ((flags & 0x07) + 1) if flags & 0x80 else 0)
            position, _ = past_sub_blocks(position + 1)  # past the LZW code size, the pixels
        else:  # the trailer, or not a block Pillow would read on
            break
    return blocks


def decode_image(source: str | Path | bytes | Image.Image | None) -> DecodedImage:
    """An upload (path, bytes or PIL image) as upright 8-bit RGB, or a UserError saying why not."""
    if source is None or (isinstance(source, str) and not source):
        raise UserError("No image was given. Upload a photo or pick an example.")
    if isinstance(source, Image.Image):
        _check_size(*source.size)
        return DecodedImage(_to_rgb(source), [])
    data = _read_bytes(source)
    notes: list[str] = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            if data.startswith((b"GIF87a", b"GIF89a")) and gif_extension_blocks(data) > MAX_GIF_EXTENSION_BLOCKS:
                raise UserError(f"The GIF has more than {MAX_GIF_EXTENSION_BLOCKS:,} extension blocks (comments and "
                                "the like) before its picture; re-save it, or upload a PNG.")
            image = Image.open(io.BytesIO(data), formats=FORMATS)
            _check_size(*image.size)
            # every JPEG, whatever Pillow names it (a JPEG with an MPO segment opens as "MPO": a hostile client)
            scans = data.count(b"\xff\xda") if data.startswith(b"\xff\xd8") else 0
            if scans > MAX_JPEG_SCANS:
                raise UserError(f"The JPEG has {scans:,} scans; the limit is {MAX_JPEG_SCANS} (a progressive "
                                "JPEG has about 10). Re-save it as an ordinary JPEG or a PNG.")
            if getattr(image, "is_animated", False):
                # frames are not counted: Pillow decodes each GIF frame it seeks past, and 100 frames of
                # 40 MP in a 3 MB GIF held a worker for a minute
                notes.append("animated image: used its first frame")
            image.load()
            try:
                image = ImageOps.exif_transpose(image)
            except _DECODE_ERRORS:
                notes.append("its EXIF orientation could not be read and was ignored")
            _check_size(*image.size)
            return DecodedImage(_to_rgb(image), notes)
    except UserError:
        raise
    except UnidentifiedImageError:
        raise UserError("The file is not an image this app can read. Upload a JPEG, PNG, WebP, GIF, "
                        "BMP or TIFF image.") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UserError(f"The image has too many pixels to open safely; the limit is "
                        f"{MAX_PIXELS / 1e6:.0f} megapixels.") from None
    except _DECODE_ERRORS as err:
        if "MAX_TEXT_CHUNK" in str(err):  # Pillow's limit on a PNG's text and ICC chunks, decompressed
            raise UserError("The image carries metadata (text or an ICC colour profile) over the safe limit of "
                            f"{PngImagePlugin.MAX_TEXT_CHUNK // 2**20} MB: re-save it without its metadata and "
                            "upload it again.") from None
        raise UserError(f"The image is damaged or truncated and cannot be decoded ({err}). "
                        "Re-save it and upload it again.") from None


PLAIN_SHARE = 0.68  # digits and synthetic scenes: 0.75 and more; the colour example photos: 0.65 at most


def is_plain(image: Image.Image) -> bool:
    """Whether most of the image is two colours, as a digit, a drawing or a synthetic scene is and
    a photo is not (the share of its two commonest colours, at 4 levels a channel, on 32x32 after a
    3x3 median: without it, noise spread a scene's or a digit's colours and it looked like a photo)."""
    small = image.convert("RGB").resize((32, 32), Image.Resampling.BOX).filter(ImageFilter.MedianFilter(3))
    pixels = (np.asarray(small) // 64).astype(np.intp)
    # each colour as one number (64 of them) and counted: np.unique(axis=0) took 2-5 ms a request
    counts = np.bincount((pixels[..., 0] * 16 + pixels[..., 1] * 4 + pixels[..., 2]).ravel(), minlength=64)
    return np.sort(counts)[-2:].sum() / counts.sum() >= PLAIN_SHARE
