"""Animated GIF89a, written frame by frame (used by `vidgen.render.writer` for ``.gif``).

Each frame gets its own 256-colour palette (a local colour table), so colours stay right
when the content changes; Pillow quantises and LZW-compresses each frame, and the file is
assembled here from the blocks of the GIF89a specification: header and logical screen
descriptor (sections 17-18), the NETSCAPE2.0 looping extension, a comment extension
(section 24) holding the render settings, and per frame a graphic control extension with
the delay (section 23) followed by the image descriptor, local colour table and image data
(sections 20-22). Memory does not grow with the number of frames.
"""

from __future__ import annotations

import io
import struct
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image

from vidgen.errors import VidgenError


def skip_sub_blocks(data: bytes, pos: int) -> int:
    """Position after the data sub-blocks starting at ``pos`` (each: a length byte, then
    that many bytes; a zero length ends them)."""
    while data[pos]:
        pos += data[pos] + 1
    return pos + 1


def sub_blocks(data: bytes) -> bytes:
    """``data`` as GIF data sub-blocks of at most 255 bytes, with the terminating zero."""
    return b"".join(bytes([len(data[i:i + 255])]) + data[i:i + 255] for i in range(0, len(data), 255)) + b"\x00"


def gif_frame(frame: np.ndarray, colors: int) -> tuple[bytes, int, bytes]:
    """One frame -> (its own 256-colour palette, palette size bits, LZW image data).

    Pillow quantises and LZW-compresses the frame as a one-frame GIF; we lift the palette and
    the image data out of it (GIF89a spec sections 18-22), so each frame is written at once.
    """
    pal_img = Image.fromarray(frame, "RGB").quantize(colors=colors, method=Image.Quantize.FASTOCTREE)
    buf = io.BytesIO()
    pal_img.save(buf, format="GIF", optimize=False, interlace=False)
    data = buf.getvalue()
    flags, pos, table, bits = data[10], 13, b"", 0
    if flags & 0x80:  # global colour table
        bits = flags & 7
        table, pos = data[pos:pos + 3 * 2 ** (bits + 1)], pos + 3 * 2 ** (bits + 1)
    while data[pos] == 0x21:  # extensions before the image
        pos = skip_sub_blocks(data, pos + 2)
    assert data[pos] == 0x2C, "Pillow wrote an unexpected GIF block"
    left, top, w, h, iflags = struct.unpack("<HHHHB", data[pos + 1:pos + 10])
    assert (left, top, w, h) == (0, 0, frame.shape[1], frame.shape[0]) and not iflags & 0x40
    pos += 10
    if iflags & 0x80:  # local colour table
        bits = iflags & 7
        table, pos = data[pos:pos + 3 * 2 ** (bits + 1)], pos + 3 * 2 ** (bits + 1)
    end = skip_sub_blocks(data, pos + 1)  # LZW minimum code size byte, then sub-blocks
    return table, bits, data[pos:end]


class GifBackend:
    """An animated GIF, written frame by frame with a local palette per frame, into the open
    file ``tmp`` (the writer renames it into place); ``payload`` is the settings JSON."""

    def __init__(self, tmp: Path, fps: Fraction, size: tuple[int, int], payload: str, colors: int = 256):
        self.size, self.fps, self.colors, self.index = size, fps, colors, 0
        h, w = size
        if max(h, w) > 65535:
            raise VidgenError(f"gif frames are at most 65535 pixels wide or high; got {w}x{h}")
        self.file = open(tmp, "wb")
        self.file.write(b"GIF89a" + struct.pack("<HHBBB", w, h, 0, 0, 0))  # no global palette
        self.file.write(b"\x21\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00")  # loop forever
        self.file.write(b"\x21\xfe" + sub_blocks(payload.encode("ascii")))  # comment extension

    def write(self, frames: np.ndarray) -> None:  # frames: [T, H, W, 3] uint8
        h, w = self.size
        for frame in frames:
            # delays are in 1/100 s; rounding the running total keeps the average rate exact
            delay = round(100 * (self.index + 1) / self.fps) - round(100 * self.index / self.fps)
            self.index += 1
            table, bits, lzw = gif_frame(frame, self.colors)
            self.file.write(b"\x21\xf9\x04" + struct.pack("<BHB", 0x04, max(delay, 1), 0) + b"\x00")
            self.file.write(b"\x2c" + struct.pack("<HHHHB", 0, 0, w, h, 0x80 | bits) + table + lzw)

    def finish(self) -> None:
        self.file.write(b"\x3b")
        self.file.close()

    def abort(self) -> None:
        self.file.close()
