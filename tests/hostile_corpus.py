"""A corpus of hostile and awkward uploads, generated in memory in well under a second.

Each entry says what the app must do with it: refuse it with a message containing
some words (``error``), or read it (``ok``) with optional checks on the result. Shared
by the inference-layer tests and the browser test in ``test_hostile_uploads.py``.
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image
from skimage import data


@dataclass(frozen=True)
class Case:
    name: str  # the file name the "user" sends: display text only
    content: bytes
    error: str | None = None  # a regex the refusal message must match; None: must be read
    checks: dict[str, Any] = field(default_factory=dict)  # expectations on Prepared when read
    mime: str = "application/octet-stream"


def _save(img: Image.Image, fmt: str, **kwargs: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))
        + kind
        + payload
        + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)
    )


def png_bomb(width: int = 20_000, height: int = 20_000) -> bytes:
    """A valid 1-bit PNG of ``width`` x ``height`` zero pixels: ~50 kB on disk, 400 MP decoded.

    Built by hand so making it costs one zlib pass over 50 MB of zeros (~0.2 s), not a
    400-megapixel image in memory.
    """
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed bits
    compressor = zlib.compressobj(9)
    chunks = [compressor.compress(row * 1000) for _ in range(height // 1000)]
    chunks.append(compressor.compress(row * (height % 1000)))
    chunks.append(compressor.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit greyscale
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", b"".join(chunks))
        + _png_chunk(b"IEND", b"")
    )


def png_text_bomb() -> bytes:
    """A small PNG whose zTXt chunk inflates to 8 MB (Pillow caps text chunks)."""
    small = _save(Image.new("L", (8, 8), 128), "PNG")
    text = b"Comment\x00\x00" + zlib.compress(b"A" * (8 * 1024 * 1024), 9)
    iend = small.rindex(b"IEND") - 4
    return small[:iend] + _png_chunk(b"zTXt", text) + small[iend:]


def png_metadata_bomb() -> bytes:
    """A small PNG whose zTXt chunk, before the pixels, inflates to 100 MB: beyond
    Pillow's cap on text."""
    small = _save(Image.new("L", (8, 8), 128), "PNG")
    compressor = zlib.compressobj(9)
    body = b"".join(compressor.compress(b"\x00" * 2**20) for _ in range(100)) + compressor.flush()
    idat = small.index(b"IDAT") - 4
    return small[:idat] + _png_chunk(b"zTXt", b"Comment\x00\x00" + body) + small[idat:]


def jpeg_with_many_scans(repeats: int = 3000) -> bytes:
    """A progressive JPEG whose last scan is repeated ``repeats`` times: a few hundred
    kB that cost libjpeg a pass over the whole image per scan."""
    jpg = _save(Image.new("L", (64, 64), 90), "JPEG", progressive=True)
    last = jpg.rindex(b"\xff\xda")
    scan = jpg[last:-2]  # the last scan, up to the end-of-image marker
    return jpg[:-2] + scan * repeats + b"\xff\xd9"


def ico_with_huge_png(side: int = 13_000) -> bytes:
    """An ICO whose one entry says 256 x 256 but holds a ``side`` x ``side`` PNG."""
    png = png_bomb(side, side)
    header = struct.pack("<HHH", 0, 1, 1)
    entry = struct.pack("<BBBBHHII", 0, 0, 0, 0, 1, 32, len(png), 6 + 16)
    return header + entry + png


def qoi_image(side: int = 64) -> bytes:
    """A QOI file (header and a run of identical pixels): a format Pillow decodes in Python."""
    header = b"qoif" + struct.pack(">IIBB", side, side, 4, 0)
    runs = b"\xfd" * (side * side // 62 + 1)  # QOI_OP_RUN of 62 pixels
    return header + runs + b"\x00" * 7 + b"\x01"


def jpeg_with_huge_header() -> bytes:
    """A small JPEG whose frame header claims 65000 x 65000 pixels (4.2 gigapixels)."""
    jpg = bytearray(_save(Image.new("L", (16, 16), 100), "JPEG"))
    sof = jpg.index(b"\xff\xc0")
    jpg[sof + 5 : sof + 9] = struct.pack(">HH", 65000, 65000)
    return bytes(jpg)


def astronaut_face(side: int = 200) -> Image.Image:
    """The astronaut's head and shoulders (a real, frontal face) as an RGB square."""
    return Image.fromarray(data.astronaut()[0:260, 110:370]).resize((side, side))


def five_faces() -> bytes:
    """Five copies of the astronaut's face in a 3 + 2 grid on a grey 660 x 440 canvas.

    Each face is ~80 px wide, well above the smallest face the detectors find in a photo
    of this size (docs/predict-pipeline.md, "Faces").
    """
    canvas = Image.new("RGB", (660, 440), (120, 120, 120))
    face = astronaut_face(210)
    for i in range(5):
        canvas.paste(face, (10 + (i % 3) * 215, 10 + (i // 3) * 215))
    return _save(canvas, "PNG")


def _exif_rotated_jpeg() -> bytes:
    img = Image.fromarray(np.tile(np.arange(120, dtype=np.uint8), (80, 1)))  # 120 wide, 80 high
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    return _save(img, "JPEG", exif=exif.tobytes())


def _malformed_exif_jpeg() -> bytes:
    return _save(Image.new("RGB", (64, 40), (90, 90, 90)), "JPEG", exif=b"Exif\x00\x00garbage")


def _animated_gif(frames: int) -> bytes:
    # Consecutive frames differ: Pillow merges identical ones when saving.
    images = [Image.new("L", (32, 32), (i * 37) % 256) for i in range(frames)]
    return _save(images[0], "GIF", save_all=True, append_images=images[1:], duration=10)


def _multipage_tiff() -> bytes:
    pages = [Image.new("L", (40, 40), v) for v in (30, 200, 90)]
    return _save(pages[0], "TIFF", save_all=True, append_images=pages[1:])


def _zip_bytes() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("x.png", b"not inside")
    return buf.getvalue()


def build_corpus() -> list[Case]:
    """Every case, in a fixed order (the browser test relies on it)."""
    rng = np.random.default_rng(7)
    noise_640 = Image.fromarray(rng.integers(0, 255, (480, 640), dtype=np.uint8))
    astronaut_png = _save(Image.fromarray(data.astronaut()), "PNG")
    good_png = _save(Image.fromarray(data.camera()).resize((256, 256)), "PNG")
    good_jpeg = _save(Image.fromarray(data.astronaut()), "JPEG", quality=85)
    rgba = Image.new("RGBA", (60, 60), (0, 0, 0, 0))
    rgba.paste((0, 0, 0, 255), (20, 20, 40, 40))
    palette = Image.new("P", (50, 50), 0)
    palette.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)
    palette.paste(1, (10, 10, 40, 40))
    float_tiff = _save(Image.fromarray(rng.random((50, 50), dtype=np.float32) * 3.0 - 1.0, mode="F"), "TIFF")

    return [
        Case("empty.png", b"", error="empty"),
        Case("truncated.png", astronaut_png[: len(astronaut_png) // 2], error="truncated|corrupt"),
        Case("truncated.jpg", good_jpeg[: len(good_jpeg) // 3], error="truncated|corrupt"),
        Case("signature-only.png", b"\x89PNG\r\n\x1a\n", error="PNG.*corrupt"),
        Case("png-then-html.png", b"\x89PNG\r\n\x1a\n<script>alert(1)</script>", error="corrupt"),
        Case("zero-width.png", png_bomb(0, 10), error="corrupt|no pixels"),
        Case("bomb-20000x20000.png", png_bomb(), error="too large.*megapixels"),
        Case("text-chunk-bomb.png", png_text_bomb(), error="metadata is too large"),
        Case("huge-header.jpg", jpeg_with_huge_header(), error="too large.*megapixels"),
        Case("metadata-bomb.png", png_metadata_bomb(), error="metadata is too large"),
        Case("many-scans.jpg", jpeg_with_many_scans(), error=r"stored in \d{4} scans; at most 100"),
        Case("icon-with-huge-png.ico", ico_with_huge_png(), error="icon holds an image of 13000 x 13000"),
        Case("pure-python-decoder.qoi", qoi_image(), error="not an image format"),
        Case("page.html.png", b"<!doctype html><html><script>alert(1)</script></html>", error="not an image format"),
        Case(
            "drawing.svg",
            b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10"/></svg>',
            error="not an image format",
        ),
        Case("archive.png", _zip_bytes(), error="not an image format"),
        Case("notes.jpg", "plain text, not a picture\n".encode(), error="not an image format"),
        Case("doc.pdf.png", b"%PDF-1.4\n1 0 obj\n<<>>\nendobj\n%%EOF\n", error="not an image format"),
        Case("ghostscript.eps", b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n", error="not an image format"),
        Case("layers.psd.png", b"8BPS\x00\x01" + b"\x00" * 64, error="not an image format"),
        Case("too-big.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * (20 * 1024 * 1024 + 1), error="larger than"),
        Case("1x1.png", _save(Image.new("L", (1, 1), 77), "PNG"), checks={"tight_crop": True}),
        Case("strip-100000x10.png", _save(Image.new("L", (100_000, 10), 200), "PNG"), checks={"faces_found": 0}),
        Case("cmyk.jpg", _save(Image.new("CMYK", (64, 48), (0, 0, 0, 128)), "JPEG"), checks={"format": "JPEG"}),
        Case("16-bit.png", _save(Image.fromarray(np.full((40, 40), 60000, dtype=np.uint16)), "PNG")),
        Case("palette-transparent.png", _save(palette, "PNG", transparency=0)),
        Case("rgba.png", _save(rgba, "PNG")),
        Case("float.tif", float_tiff),
        Case("one-bit.bmp", _save(Image.new("1", (70, 30), 1), "BMP")),
        Case("animated.gif", _animated_gif(3), checks={"multi_frame": True}),
        Case("many-frames.gif", _animated_gif(2000), checks={"multi_frame": True}),
        Case("multipage.tif", _multipage_tiff(), checks={"multi_frame": True}),
        Case("exif-rotated.jpg", _exif_rotated_jpeg(), checks={"original_size": (120, 80), "shape": (120, 80)}),
        Case("bad-exif.jpg", _malformed_exif_jpeg()),
        Case("../../x.png", good_png),
        Case("/etc/passwd", good_png),
        Case("C:\\Windows\\win.ini.png", good_png),
        Case("Ünïcödé face 😀 with spaces .png", good_png),
        Case("=HYPERLINK(\"http://x\").png", good_png),
        Case("<img src=x onerror=alert(1)>.png", good_png),
        Case("no-face-noise.png", _save(noise_640, "PNG"), checks={"faces_found": 0, "box": None}),
        Case("webp.webp", _save(Image.fromarray(data.astronaut()).resize((256, 256)), "WEBP")),
        Case("astronaut.jpg", good_jpeg, checks={"faces_found": 1}),
        Case("five-faces.png", five_faces(), checks={"faces_found": 5}),
    ]
