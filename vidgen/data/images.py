"""Image frames: header reads with the pixel limit, decoding to RGB, EXIF orientation.

Every image vidgen reads goes through :func:`open_image`, which reads the header only and
refuses sizes over the limit (vidgen/data/meta.py) before a pixel is decoded, with one line
naming the file (instead of PIL's DecompressionBombError).
"""

from __future__ import annotations

import io
import os
import re
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from vidgen.data.meta import check_frame_size, max_frame_pixels
from vidgen.errors import DataError

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
_PIL_ERRORS = (OSError, UnidentifiedImageError, ValueError, SyntaxError, EOFError)


def open_image(fp, name: str) -> Image.Image:
    """Open ``fp`` (a path, bytes or a file object) for reading; only the header is read.
    Raises DataError for a file that is not an image or claims too many pixels."""
    if isinstance(fp, (bytes, bytearray)):
        fp = io.BytesIO(fp)
    limit = max_frame_pixels()
    if Image.MAX_IMAGE_PIXELS is not None and 2 * Image.MAX_IMAGE_PIXELS < limit:
        Image.MAX_IMAGE_PIXELS = limit  # vidgen's own limit decides (raised by the user)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(fp)
    except Image.DecompressionBombError as exc:  # PIL's own backstop, at twice its limit
        found = re.search(r"\((\d+) pixels\)", str(exc))
        claim = f"{int(found.group(1))} pixels per frame ({int(found.group(1)) / 1e6:.0f} megapixels)" \
            if found else "too many pixels"
        raise DataError(f"{name}: the header claims {claim}, over the limit of {limit / 1e6:.0f}; not "
                        "decoded (a damaged or hostile file?)") from None
    except _PIL_ERRORS as exc:
        raise DataError(f"{name}: not a readable image ({exc}): replace or remove it") from None
    try:
        check_frame_size(*im.size, name)
    except DataError:
        im.close()
        raise
    return im


def to_rgb(image: Image.Image) -> np.ndarray:
    """PIL image in any mode -> uint8 [H, W, 3]; EXIF orientation applied, alpha over black.
    An RGB image without an orientation tag is not copied on the way (large frames)."""
    if image.getexif().get(0x0112, 1) != 1:
        image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(image, dtype=np.float64)
        a = np.clip(a / (65535.0 if a.max() > 255 else 255.0) * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(a[..., None], 3, axis=-1)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        a = np.asarray(image.convert("RGBA"), dtype=np.uint16)
        rgb = (a[..., :3] * a[..., 3:] + 127) // 255
        return rgb.astype(np.uint8)
    return to_array(image if image.mode == "RGB" else image.convert("RGB"))


def to_array(image: Image.Image, block: int = 1 << 24) -> np.ndarray:
    """PIL image -> numpy array. ``np.asarray`` goes through ``tobytes``, which holds the
    pixels twice more beside PIL's own copy; a large image is copied in bands of rows
    (``block`` pixels each) into one preallocated array instead."""
    w, h = image.size
    if w * h <= block:
        return np.asarray(image)
    rows = max(1, block // w)
    first = np.asarray(image.crop((0, 0, w, min(h, rows))))
    out = np.empty((h,) + first.shape[1:], first.dtype)
    out[:len(first)] = first
    for y in range(len(first), h, rows):
        out[y:y + rows] = np.asarray(image.crop((0, y, w, min(h, y + rows))))
    return out


def decode_image(fp, name: str) -> np.ndarray:
    """A whole image (path, bytes or file object) -> uint8 [H, W, 3]."""
    with open_image(fp, name) as im:
        try:
            im.load()
            return to_rgb(im)
        except _PIL_ERRORS as exc:
            raise DataError(f"{name}: cannot decode frame ({exc}); the image is damaged or "
                            "not an image: replace or remove it") from None


def header_size(fp, name: str) -> tuple[int, int]:
    """(width, height) after EXIF orientation, reading only the header."""
    with open_image(fp, name) as im:
        w, h = im.size
        # JPEG and WEBP carry EXIF before the pixels; a PNG's may follow them, and asking for
        # it would decode the whole image, so only an eXIf chunk already read counts
        readable = im.format in ("JPEG", "WEBP") or (im.format == "PNG" and "exif" in im.info)
        try:
            orientation = im.getexif().get(0x0112, 1) if readable else 1
        except _PIL_ERRORS:
            orientation = 1
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def read_file(path: str | os.PathLike, name: str | None = None) -> bytes:
    """The bytes of an image file (a read error is the file's problem, reported as such)."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise DataError(f"{name or path}: cannot read ({exc.strerror or exc})") from None
