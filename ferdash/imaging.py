"""Safe decoding of uploaded image bytes into the greyscale array the pipeline works on.

Everything a user uploads is untrusted: the checks here (size cap, pixel cap read from
the header before any decoding, an allow-list of still formats) run before Pillow
decodes a single pixel, and every failure becomes an :class:`UploadError` whose message
can be shown next to the file as is.
"""

from __future__ import annotations

import base64
import io
import os
import stat
import zlib
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

#: Largest upload accepted, in bytes. A phone photo is 2-8 MB; 20 MB leaves room for
#: high-quality PNGs while keeping a session's memory bounded.
MAX_UPLOAD_BYTES = 20 * 1024 * 1024

#: Largest image accepted, in pixels (width x height), checked from the header before
#: decoding: a few-kilobyte "decompression bomb" can otherwise expand to gigabytes.
MAX_PIXELS = 50_000_000

#: Most bytes an image may take in Pillow's memory once decoded (pixels times the bytes
#: Pillow stores each pixel in: 1 for grey or palette, 2 for 16-bit grey, 4 for colour,
#: alpha, 32-bit and float), checked from the header before decoding. Everything after
#: the decode works on a copy of at most WORKING_MAX_SIDE, so a file's peak memory is
#: about this plus ~35 MB, whatever its format or depth.
MAX_DECODED_BYTES = 128 * 1024 * 1024

#: Most scans a JPEG may hold. Each scan is a pass over the whole image: a photo has 1
#: (baseline) or about 10 (progressive), while a few hundred kilobytes repeating a cheap
#: scan thousands of times cost a worker a minute of decoding.
MAX_JPEG_SCANS = 100

#: Still formats Pillow reads natively. Passed to ``Image.open(formats=...)`` so that
#: plugins which shell out (EPS runs Ghostscript) or read vector/containers never see
#: user bytes. (Camera MPO files are opened by the JPEG plugin.) Not QOI: Pillow decodes
#: it in pure Python, holding the interpreter lock for tens of seconds on a large file.
ALLOWED_FORMATS: tuple[str, ...] = (
    "JPEG",
    "PNG",
    "BMP",
    "DIB",
    "WEBP",
    "TIFF",
    "GIF",
    "PPM",
    "TGA",
    "ICO",
    "PCX",
    "SGI",
)

#: What the file picker offers; a hint only (the bytes are checked whatever the name).
ACCEPT: list[str] = [
    "image/*",
    ".jpg",
    ".jpeg",
    ".png",
    ".bmp",
    ".webp",
    ".tif",
    ".tiff",
    ".gif",
]

#: Decoded images are reduced to at most this long side: the face detector works on a
#: much smaller copy and the model input is tiny, so more pixels only cost time/memory.
WORKING_MAX_SIDE = 2048


class UploadError(ValueError):
    """An upload that cannot be used; the message is meant for the person who sent it."""


@dataclass(frozen=True)
class DecodedImage:
    """An upload decoded to greyscale."""

    grey: np.ndarray  # uint8, (H, W), after EXIF orientation and any working-size reduction
    format: str  # what Pillow identified, e.g. "JPEG"
    original_size: tuple[int, int]  # (width, height) as stored in the file
    multi_frame: bool  # an animated GIF/WebP or multi-page TIFF: only the first frame is used


def read_upload(path: str | Path, max_bytes: int = MAX_UPLOAD_BYTES) -> bytes:
    """Read an uploaded file from the server's temporary path, refusing it above ``max_bytes``.

    ``path`` must be the path the server chose (Shiny's ``datapath``), never a name the
    user typed.
    """
    try:
        with open(path, "rb") as fh:
            # One byte more than allowed tells "too big" without reading it all. Asked
            # for as such, read() sets aside the whole limit (20 MB) for every file, which
            # took longer than decoding a 48x48 crop: a regular file is asked for its size.
            info = os.fstat(fh.fileno())
            size = min(info.st_size, max_bytes) if stat.S_ISREG(info.st_mode) else max_bytes
            data = fh.read(size + 1)
            if size < len(data) <= max_bytes:  # it grew meanwhile
                data += fh.read(max_bytes + 1 - len(data))
    except OSError as exc:
        raise UploadError("The upload could not be read on the server.") from exc
    if len(data) > max_bytes:
        raise UploadError(f"The file is larger than the {max_bytes // (1024 * 1024)} MB limit.")
    return data


def decode_image(data: bytes, max_bytes: int = MAX_UPLOAD_BYTES) -> DecodedImage:
    """Decode image bytes to a greyscale uint8 array, or raise :class:`UploadError`.

    Handles EXIF orientation, transparency (composited on white), palette, CMYK,
    16-bit and float images, and takes the first frame of animations and multi-page files.
    """
    if not data:
        raise UploadError("The file is empty (0 bytes).")
    if len(data) > max_bytes:
        raise UploadError(f"The file is larger than the {max_bytes // (1024 * 1024)} MB limit.")
    plain = _decode_plain_png(data)
    if plain is not None:
        return plain
    if data[:4] == _ICO_SIGNATURE:
        _check_icon_entries(data)  # Pillow decodes an icon's image as it opens the file
    try:
        # Pillow's own bomb guard warns above 89 MP and raises above 179 MP; ours is
        # stricter and checked below, so silence the warning locally (not globally:
        # other code in the process may rely on it).
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=_open_formats())
    except Image.DecompressionBombError as exc:
        raise UploadError(_too_many_pixels_message()) from exc
    except ValueError as exc:
        raise _metadata_error(exc) or UploadError(
            "The file is corrupt: its image header cannot be read."
        ) from exc
    except UnidentifiedImageError as exc:
        sniffed = sniff_format(data)
        if sniffed:
            raise UploadError(
                f"The file starts like a {sniffed} image but is corrupt: its header cannot be read."
            ) from exc
        raise UploadError(
            "This is not an image format the app reads (JPEG, PNG, BMP, WebP, TIFF, GIF, ...)."
        ) from exc
    except Exception as exc:  # Broken headers raise assorted types inside plugins.
        raise UploadError("The file is corrupt: its image header cannot be read.") from exc

    with img:
        width, height = img.size
        if width <= 0 or height <= 0:
            raise UploadError("The image has no pixels.")
        if width * height > MAX_PIXELS:
            raise UploadError(_too_many_pixels_message(width, height))
        fmt = img.format or "unknown"
        _check_decoding_cost(img, data)
        # Not n_frames: counting a GIF's frames means reading all of them, which a file
        # with thousands of frames turns into a CPU bomb. is_animated looks at one more.
        multi_frame = bool(getattr(img, "is_animated", False))
        try:
            grey = _to_grey(img)
        except UploadError:
            raise
        except Exception as exc:  # Truncated data surfaces as OSError, SyntaxError, ...
            raise _metadata_error(exc) or UploadError(
                "The file is truncated or corrupt: its pixels cannot be decoded."
            ) from exc
    return DecodedImage(grey=grey, format=fmt, original_size=(width, height), multi_frame=multi_frame)


def _metadata_error(exc: Exception) -> UploadError | None:
    """The message for Pillow's refusal of a compressed text chunk (PNG zTXt/iTXt) that
    inflates beyond its cap, before the pixels (at open) or after them (at load)."""
    if isinstance(exc, ValueError) and "Decompressed" in str(exc):
        return UploadError(
            "The file's metadata is too large: a compressed text chunk expands beyond what "
            "an image needs. Save the image again without its metadata."
        )
    return None


#: The eight bytes every PNG starts with.
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (_PNG_SIGNATURE, "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)


def sniff_format(data: bytes) -> str | None:
    """The format a file's first bytes claim, to tell "corrupt PNG" from "not an image"."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    return next((name for magic, name in _SIGNATURES if data.startswith(magic)), None)


def _open_formats() -> list[str]:
    # Pillow raises KeyError for a format whose plugin this build lacks; offer only those it has.
    Image.init()
    return [f for f in ALLOWED_FORMATS if f in Image.OPEN]


def _too_many_pixels_message(width: int | None = None, height: int | None = None) -> str:
    size = f" ({width} x {height})" if width and height else ""
    return (
        f"The image is too large{size}: at most {MAX_PIXELS // 1_000_000} megapixels are accepted."
    )


def _decode_plain_png(data: bytes) -> DecodedImage | None:
    """A plain 8-bit greyscale or RGB PNG decoded by OpenCV, else None.

    Why: a PNG is what FER datasets and screenshots come as, and this path never hands
    the file to Pillow: libpng's SIMD unfiltering decodes a photo-sized PNG ~20% faster
    than Pillow's decoder (9.9 against 8.4 ms for the 512x512 astronaut), and for a
    48x48 face crop Pillow's opening of the file was a third of its whole preparation
    (``benchmarks/bench_cli.py``). The header is read here: the same pixel and memory
    caps as Pillow's path, the bit depth and colour type. Every PNG that needs Pillow's
    handling (16-bit, palette, transparency, alpha, animation, an EXIF orientation, a
    size over the caps, which Pillow's path refuses in words) and every file OpenCV
    cannot decode whole (truncated, corrupt) goes to Pillow, which gives the message.
    Colour is reduced with OpenCV's luma weights, the same as Pillow's ``convert("L")``
    but for a rounding difference of at most 1 grey level.
    """
    if (
        not data.startswith(_PNG_SIGNATURE)
        # IHDR follows the 8-byte signature: width, height, then bit depth at byte 24
        # and colour type at 25 (0 grey, 2 RGB).
        or data[8:16] != b"\x00\x00\x00\rIHDR"
        or len(data) < 33
        or data[24] != 8
        or data[25] not in (0, 2)
    ):
        return None
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    # What Pillow keeps per pixel: 1 byte for grey, 4 for RGB (see _check_decoding_cost).
    per_pixel = 1 if data[25] == 0 else 4
    if not 0 < width * height <= MAX_PIXELS or width * height * per_pixel > MAX_DECODED_BYTES:
        return None
    walked = _png_chunk_types(data)
    if walked is None:
        return None
    chunks, text_keys = walked
    # No IEND: truncated (the commonest damage), left to Pillow, which reads what is
    # there, without libpng printing its complaint to the server's log first. Compressed
    # text is left to Pillow too, so that a text bomb after the pixels is refused as it is
    # before them; and an EXIF orientation, which Pillow reads from eXIf, from EXIF or XMP
    # text, and exif_transpose in _to_grey applies.
    if (
        b"IEND" not in chunks
        or not chunks.isdisjoint({b"eXIf", b"tRNS", b"acTL", b"zTXt", b"iTXt"})
        or any(key.startswith(_ORIENTATION_TEXT_KEYS) for key in text_keys)
    ):
        return None
    try:
        pixels = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error:
        return None
    if pixels is None or pixels.dtype != np.uint8 or pixels.shape[:2] != (height, width):
        return None
    if pixels.ndim == 3:
        pixels = cv2.cvtColor(pixels, cv2.COLOR_BGR2GRAY)
    return DecodedImage(
        grey=_working_size(pixels), format="PNG", original_size=(width, height), multi_frame=False
    )


#: tEXt keywords under which Pillow finds EXIF or XMP (and so an orientation) in a PNG.
_ORIENTATION_TEXT_KEYS = (b"Raw profile type", b"XML:com.adobe.xmp", b"exif")


def _png_chunk_types(
    data: bytes, max_chunks: int = 4096
) -> tuple[set[bytes], set[bytes]] | None:
    """The chunk types of a PNG and the keywords of its tEXt chunks, read by walking the
    chunks; None past ``max_chunks`` or at a chunk whose CRC does not match.

    A walk over lengths rather than a search of the bytes: ~10 steps for a photo; the cap
    bounds a file made of millions of empty chunks. The CRCs are checked (~0.1 ms for a
    photo, against ~9 ms to decode it) so that damaged pixels go to Pillow, which words the
    refusal, instead of first making libpng print its complaint into the server's log.
    """
    types: set[bytes] = set()
    text_keys: set[bytes] = set()
    view = memoryview(data)
    pos = 8
    for _ in range(max_chunks):
        if pos + 8 > len(data):
            return types, text_keys
        length = int.from_bytes(data[pos : pos + 4], "big")
        end = pos + 8 + length
        if end + 4 <= len(data) and zlib.crc32(view[pos + 4 : end]) != int.from_bytes(
            data[end : end + 4], "big"
        ):
            return None
        kind = data[pos + 4 : pos + 8]
        types.add(kind)
        if kind == b"IEND":
            return types, text_keys
        if kind == b"tEXt":
            # The keyword (1-79 bytes) ends at a NUL; the text follows it.
            text_keys.add(data[pos + 8 : pos + 88].split(b"\x00", 1)[0])
        pos = end + 4
    return None


_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")


def _stored_bytes_per_pixel(mode: str) -> int:
    """Bytes Pillow keeps per pixel of ``mode`` once decoded (a palette image counts as
    the RGBA it is converted to)."""
    if mode in ("1", "L"):
        return 1
    if mode in _SIXTEEN_BIT:
        return 2
    return 4


def _draft_scale(size: tuple[int, int]) -> int:
    """The reduction :func:`_to_grey` asks libjpeg for: the image stays at least the
    working size."""
    return max(1, max(size) // WORKING_MAX_SIDE)


def _jpeg_decoded_size(img: Image.Image) -> tuple[int, int]:
    """The size libjpeg decodes a JPEG at once :func:`_to_grey` drafts it: the largest
    power-of-two reduction (1/1 to 1/8) within the requested one."""
    scale = _draft_scale(img.size)
    reduce = 1
    while reduce * 2 <= min(scale, 8):
        reduce *= 2
    return -(-img.size[0] // reduce), -(-img.size[1] // reduce)


def _ico_entry_sizes(data: bytes) -> list[tuple[int, int]]:
    """(width, height) of each image an ICO file holds, read from the entries themselves.

    The directory states at most 256x256, but an entry may be a PNG of any size, which
    Pillow would decode whole before any check on the stated size could help.
    """
    sizes = []
    count = int.from_bytes(data[4:6], "little")
    for i in range(min(count, 256)):
        entry = data[6 + 16 * i : 22 + 16 * i]
        if len(entry) < 16:
            break
        offset = int.from_bytes(entry[12:16], "little")
        head = data[offset : offset + 24]
        if head[:8] == b"\x89PNG\r\n\x1a\n" and len(head) == 24:
            sizes.append((int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")))
        elif len(head) >= 12:  # BITMAPINFOHEADER: the height counts the AND mask too
            width = abs(int.from_bytes(head[4:8], "little", signed=True))
            height = abs(int.from_bytes(head[8:12], "little", signed=True)) // 2
            sizes.append((width, height))
    return sizes


_ICO_SIGNATURE = b"\x00\x00\x01\x00"


def _check_icon_entries(data: bytes) -> None:
    for w, h in _ico_entry_sizes(data):
        if w * h > MAX_PIXELS or w * h * 4 > MAX_DECODED_BYTES:
            raise UploadError(f"The icon holds an image of {w} x {h} pixels: too large to decode.")


def _check_decoding_cost(img: Image.Image, data: bytes) -> None:
    """Refuse, before decoding, a file whose pixels would cost more than one upload may:
    more than :data:`MAX_DECODED_BYTES` of memory, or a JPEG with more than
    :data:`MAX_JPEG_SCANS` passes over the image."""
    if img.format in ("JPEG", "MPO"):
        scans = data.count(b"\xff\xda")  # start-of-scan markers (0xFF in data is stuffed)
        if scans > MAX_JPEG_SCANS:
            raise UploadError(
                f"The JPEG is stored in {scans} scans; at most {MAX_JPEG_SCANS} are accepted "
                "(a photo has 1 to about 10). Save it again as a normal JPEG."
            )
        width, height = _jpeg_decoded_size(img) if img.mode in ("RGB", "YCbCr", "L") else img.size
        per_pixel = 1 if img.mode in ("RGB", "YCbCr", "L") else _stored_bytes_per_pixel(img.mode)
    else:
        (width, height), per_pixel = img.size, _stored_bytes_per_pixel(img.mode)
    if width * height * per_pixel > MAX_DECODED_BYTES:
        megabytes = width * height * per_pixel / 2**20
        raise UploadError(
            f"The image is too large to decode: {img.size[0]} x {img.size[1]} pixels in mode "
            f"{img.mode} take {megabytes:.0f} MB, and at most {MAX_DECODED_BYTES // 2**20} MB "
            "are accepted. Save a smaller copy, or one with 8 bits per channel."
        )


def _reduced(img: Image.Image) -> Image.Image:
    """``img`` shrunk by a whole factor to a long side of at most about
    :data:`WORKING_MAX_SIDE` (a box filter), before any conversion copies its pixels."""
    factor = -(-max(img.size) // WORKING_MAX_SIDE)
    if factor <= 1:
        return img
    if img.mode == "1":
        img = img.convert("L")
    elif img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in _SIXTEEN_BIT:
        return img  # Pillow cannot reduce these: _numeric_grey shrinks the array instead
    return img.reduce(factor)


def _numeric_grey(img: Image.Image) -> np.ndarray:
    """16-bit, 32-bit integer and float greyscale stretched to 0-255.

    Pillow's ``convert("L")`` clips at 255, which turns most 16-bit images white, and
    float or signed images have no fixed range: 16-bit files use their full scale (or
    0-255 if no pixel is above it); 32-bit and float ones their own range of finite
    values, where NaN and infinities (missing rows) become the darkest value rather
    than stretching the range to nothing.
    """
    arr = np.asarray(img)
    if arr.dtype == np.uint16 or arr.dtype.newbyteorder("=") == np.uint16:
        arr = _working_size(arr.astype(np.uint16))
        top = 65535.0 if arr.max(initial=0) > 255 else 255.0
        return np.clip(arr.astype(np.float32) * (255.0 / top), 0, 255).round().astype(np.uint8)
    arr = arr.astype(np.float64)
    finite = np.isfinite(arr)
    if not finite.any():
        return np.zeros(arr.shape, dtype=np.uint8)
    lo, hi = float(arr[finite].min()), float(arr[finite].max())
    if img.mode == "I" and lo >= 0 and hi <= 65535:
        lo, hi = 0.0, (65535.0 if hi > 255 else 255.0)  # unsigned data in a 32-bit file
    arr[~finite] = lo
    if hi <= lo:
        return np.zeros(arr.shape, dtype=np.uint8)
    return np.clip((arr - lo) * (255.0 / (hi - lo)), 0, 255).round().astype(np.uint8)


def _to_grey(img: Image.Image) -> np.ndarray:
    if getattr(img, "tell", lambda: 0)() != 0:
        img.seek(0)  # is_animated may have moved on: animations use their first frame
    if img.format in ("JPEG", "MPO") and img.mode in ("RGB", "YCbCr", "L"):
        # Let libjpeg decode luminance only, and at a reduced scale for huge photos:
        # several times faster than decoding colour and converting afterwards.
        scale = _draft_scale(img.size)
        img.draft("L", (img.size[0] // scale, img.size[1] // scale))
    img.load()
    img = _reduced(img)
    try:
        img = ImageOps.exif_transpose(img) or img
    except Exception:
        pass  # malformed EXIF: show the pixels as stored rather than refuse the photo

    mode = img.mode
    if mode in (*_SIXTEEN_BIT, "I", "F"):
        grey = _numeric_grey(img)
    else:
        if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
            mode == "P" and "transparency" in img.info
        ) or (mode in ("L", "RGB") and "transparency" in img.info):
            # Transparent pixels carry arbitrary colour; show them as white paper.
            rgba = img.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            img = Image.alpha_composite(background, rgba)
        if img.mode not in ("L", "RGB"):
            img = img.convert("RGB")  # CMYK, palette, YCbCr, 1-bit, LAB, ...
        grey = np.asarray(img.convert("L"), dtype=np.uint8)

    return _working_size(grey)


def _working_size(grey: np.ndarray) -> np.ndarray:
    """``grey`` contiguous, reduced to a long side of :data:`WORKING_MAX_SIDE` if longer."""
    grey = np.ascontiguousarray(grey)
    long_side = max(grey.shape)
    if long_side > WORKING_MAX_SIDE:
        factor = long_side / WORKING_MAX_SIDE
        new_size = (max(1, round(grey.shape[1] / factor)), max(1, round(grey.shape[0] / factor)))
        grey = np.asarray(Image.fromarray(grey).resize(new_size, Image.Resampling.BOX))
    return grey


def shrink_to_max_side(image: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """``image`` reduced so its long side is at most ``max_side``, and the scale applied.

    Area averaging (``cv2.INTER_AREA``), aspect ratio kept, each side at least 1 px. An
    image already small enough is returned as it is (the same array) with scale 1.0;
    never enlarged. The detector's search copies and the Predict previews use it.
    """
    height, width = image.shape[:2]
    long_side = max(height, width)
    if long_side <= max_side:
        return image, 1.0
    scale = max_side / long_side
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA), scale


def png_data_uri(image: np.ndarray, max_side: int | None = None) -> str:
    """Encode a uint8 greyscale ``(H, W)`` or RGB ``(H, W, 3)`` array as a PNG data URI.

    Downscales to ``max_side`` (keeping the aspect ratio) so previews stay small in the
    page; upscales tiny images with nearest-neighbour so a 48x48 face stays crisp.
    """
    pil = Image.fromarray(np.ascontiguousarray(image))
    if max_side:
        w, h = pil.size
        scale = max_side / max(w, h)
        if scale < 1:
            pil = pil.resize(
                (max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BILINEAR
            )
    buf = io.BytesIO()
    pil.save(buf, format="PNG", optimize=False, compress_level=3)
    return png_bytes_data_uri(buf.getvalue())


def png_bytes_data_uri(png: bytes) -> str:
    """A PNG file's bytes (e.g. a Matplotlib figure's) as a data URI for an ``<img>``."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")
