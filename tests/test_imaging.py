"""Decoding uploads: formats, conversions, and every kind of bad file."""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageFile

from ferdash import imaging
from ferdash.imaging import UploadError, decode_image


def encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def gradient(width: int = 64, height: int = 48) -> Image.Image:
    arr = np.tile(np.linspace(0, 255, width, dtype=np.uint8), (height, 1))
    return Image.fromarray(arr, mode="L")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "BMP", "WEBP", "TIFF", "GIF", "PPM", "TGA"])
def test_still_formats_decode_to_grey_uint8(fmt: str) -> None:
    decoded = decode_image(encode(gradient().convert("RGB"), fmt))
    assert decoded.grey.dtype == np.uint8
    assert decoded.grey.shape == (48, 64)
    assert decoded.original_size == (64, 48)
    # The left edge is dark and the right edge light, whatever the codec's losses.
    assert decoded.grey[:, :4].mean() < 40 and decoded.grey[:, -4:].mean() > 215


def test_colour_is_converted_with_luma_weights() -> None:
    red = Image.new("RGB", (8, 8), (255, 0, 0))
    grey = decode_image(encode(red, "PNG")).grey
    assert abs(int(grey[0, 0]) - 76) <= 1  # ITU-R 601: 0.299 * 255


def test_exif_orientation_is_honoured() -> None:
    img = gradient(40, 20).convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    decoded = decode_image(encode(img, "JPEG", exif=exif.tobytes()))
    assert decoded.grey.shape == (40, 20)  # portrait after rotation
    # The dark left edge of the stored image ends up on top.
    assert decoded.grey[:4].mean() < decoded.grey[-4:].mean()


def test_16_bit_png_uses_its_full_range() -> None:
    arr = np.array([[0, 32768, 65535]], dtype=np.uint16)
    data = encode(Image.fromarray(arr), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    grey = decode_image(data).grey
    assert grey.tolist() == [[0, 128, 255]]


def test_palette_with_transparency_is_composited_on_white() -> None:
    img = Image.new("P", (4, 4), 0)
    img.putpalette([0, 0, 0, 10, 10, 10] + [0] * 762)
    img.putpixel((0, 0), 1)
    data = encode(img, "PNG", transparency=0)
    grey = decode_image(data).grey
    assert grey[1, 1] == 255  # transparent black reads as white paper
    assert grey[0, 0] == 10


def test_rgba_transparency_is_white() -> None:
    img = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    assert decode_image(encode(img, "PNG")).grey.min() == 255


def test_cmyk_jpeg_decodes() -> None:
    img = Image.new("CMYK", (16, 16), (0, 0, 0, 0))  # no ink: white
    decoded = decode_image(encode(img, "JPEG"))
    assert decoded.grey.shape == (16, 16)
    assert decoded.grey.mean() > 200


def test_animated_gif_uses_first_frame() -> None:
    frames = [Image.new("L", (10, 10), 0), Image.new("L", (10, 10), 255)]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50)
    decoded = decode_image(data)
    assert decoded.multi_frame
    assert decoded.grey.max() < 20


def test_multipage_tiff_uses_first_page() -> None:
    pages = [Image.new("L", (10, 10), 200), Image.new("L", (10, 10), 10)]
    data = encode(pages[0], "TIFF", save_all=True, append_images=pages[1:])
    decoded = decode_image(data)
    assert decoded.multi_frame
    assert decoded.grey.min() == 200


def test_still_image_is_not_multi_frame() -> None:
    assert not decode_image(encode(gradient(), "GIF")).multi_frame


@pytest.mark.parametrize("size", [(1, 1), (1, 3000), (3000, 1), (5000, 2)])
def test_tiny_and_extreme_aspect_ratios(size: tuple[int, int]) -> None:
    decoded = decode_image(encode(Image.new("L", size, 128), "PNG"))
    assert decoded.grey.size >= 1
    assert max(decoded.grey.shape) <= imaging.WORKING_MAX_SIDE


def test_large_images_are_reduced_to_working_size() -> None:
    decoded = decode_image(encode(Image.new("RGB", (4100, 300), (90, 90, 90)), "JPEG"))
    assert decoded.original_size == (4100, 300)
    assert max(decoded.grey.shape) <= imaging.WORKING_MAX_SIDE


def test_empty_file() -> None:
    with pytest.raises(UploadError, match="empty"):
        decode_image(b"")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_file(fmt: str) -> None:
    rng = np.random.default_rng(0)
    noisy = Image.fromarray(rng.integers(0, 255, (200, 200), dtype=np.uint8))
    data = encode(noisy, fmt)
    with pytest.raises(UploadError, match="truncated or corrupt"):
        decode_image(data[: len(data) // 2])


@pytest.mark.parametrize(
    "data",
    [
        b"this is a text file, named photo.png",
        b"\x89PNG\r\n\x1a\n" + b"\x00" * 40,  # PNG signature, garbage after
        b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n",  # EPS would run Ghostscript
    ],
)
def test_non_images_are_refused(data: bytes) -> None:
    with pytest.raises(UploadError):
        decode_image(data)


def test_pixel_bomb_is_refused_from_the_header(monkeypatch: pytest.MonkeyPatch) -> None:
    # 64 megapixels of 1-bit white compress to a few kB.
    data = encode(Image.new("1", (8000, 8000), 1), "PNG")
    assert len(data) < 200_000

    def no_decoding(self):  # the pixels must never be decoded
        raise AssertionError("decoded a bomb")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    with pytest.raises(UploadError, match="50 megapixels"):
        decode_image(data)


def test_size_cap() -> None:
    with pytest.raises(UploadError, match="larger than"):
        decode_image(b"\x00" * 2048, max_bytes=1024)


def test_read_upload_stops_at_the_cap(tmp_path) -> None:
    path = tmp_path / "upload"
    path.write_bytes(b"\x00" * 5000)
    with pytest.raises(UploadError, match="larger than"):
        imaging.read_upload(path, max_bytes=4096)
    assert imaging.read_upload(path, max_bytes=5000) == b"\x00" * 5000
    with pytest.raises(UploadError):
        imaging.read_upload(tmp_path / "missing")


def test_png_data_uri_downscales() -> None:
    uri = imaging.png_data_uri(np.zeros((1000, 500), dtype=np.uint8), max_side=100)
    assert uri.startswith("data:image/png;base64,")
    img = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    assert img.size == (50, 100)


def test_shrink_to_max_side_reduces_the_long_side_only_when_needed() -> None:
    wide = np.arange(300 * 1000, dtype=np.uint32).reshape(300, 1000).astype(np.uint8)
    small, scale = imaging.shrink_to_max_side(wide, 200)
    assert small.shape == (60, 200) and scale == pytest.approx(0.2)
    tall, scale = imaging.shrink_to_max_side(np.zeros((1000, 3), dtype=np.uint8), 100)
    assert tall.shape == (100, 1) and scale == pytest.approx(0.1)  # never below 1 px
    # Area averaging: a flat image stays flat, a mean is kept.
    flat, _ = imaging.shrink_to_max_side(np.full((400, 400), 77, dtype=np.uint8), 100)
    assert (flat == 77).all()
    # Small enough already (or exactly the size): the same array, scale 1, never enlarged.
    face = np.zeros((48, 48), dtype=np.uint8)
    kept, scale = imaging.shrink_to_max_side(face, 96)
    assert kept is face and scale == 1.0
    same, scale = imaging.shrink_to_max_side(wide, 1000)
    assert same is wide and scale == 1.0


def test_corrupt_file_with_an_image_signature_says_so() -> None:
    with pytest.raises(UploadError, match="starts like a PNG image but is corrupt"):
        decode_image(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(UploadError, match="not an image format"):
        decode_image(b"GIF? no, plain text")


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    import zlib

    crc = zlib.crc32(kind + payload).to_bytes(4, "big")
    return len(payload).to_bytes(4, "big") + kind + payload + crc


def _astronaut(mode: str) -> Image.Image:
    from skimage import data

    return Image.fromarray(data.astronaut()).convert(mode)


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_plain_png_is_decoded_by_opencv_like_pillow(mode: str) -> None:
    data = encode(_astronaut(mode), "PNG")
    decoded = imaging._decode_plain_png(data)
    assert decoded is not None, "a plain 8-bit PNG should take the OpenCV path"
    assert (decoded.format, decoded.original_size, decoded.multi_frame) == ("PNG", (512, 512), False)
    fast = decoded.grey
    pillow = np.asarray(Image.open(io.BytesIO(data)).convert("L"), dtype=np.int16)
    assert fast.shape == pillow.shape == (512, 512)
    # Same luma weights; fixed-point rounding differs by at most one level, rarely.
    assert np.abs(fast.astype(np.int16) - pillow).max() <= 1
    assert np.mean(fast != pillow) < 0.01
    assert np.array_equal(decode_image(data).grey, fast)


def test_plain_png_path_keeps_the_working_size_limit() -> None:
    data = encode(Image.new("RGB", (4100, 1000), (10, 200, 30)), "PNG")
    assert imaging._decode_plain_png(data) is not None
    assert decode_image(data).grey.shape == (500, 2048)


def _ztxt() -> Any:
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "a compressed comment", zip=True)
    return info


def _png_cases() -> dict[str, bytes]:
    import cv2

    palette = _astronaut("RGB").resize((64, 64)).convert("P")
    exif = Image.Exif()
    exif[0x0112] = 6
    frames = [Image.new("L", (32, 32), v) for v in (0, 255)]
    animated = io.BytesIO()
    frames[0].save(animated, format="PNG", save_all=True, append_images=frames[1:])
    plain = encode(gradient(), "PNG")
    end = plain.rindex(b"IEND") - 4
    many_chunks = plain[:33] + _png_chunk(b"tEXt", b"k\x00v") * 5000 + plain[33:]
    rgb16 = np.zeros((48, 64, 3), dtype=np.uint16)
    rgb16[..., 1] = np.linspace(0, 65535, 64, dtype=np.uint16)
    return {
        "16-bit RGB": cv2.imencode(".png", rgb16)[1].tobytes(),
        "palette": encode(palette, "PNG"),
        "grey with tRNS": encode(gradient(), "PNG", transparency=0),
        "RGBA": encode(_astronaut("RGBA"), "PNG"),
        "eXIf orientation": encode(gradient(40, 20).convert("RGB"), "PNG", exif=exif.tobytes()),
        "animated (APNG)": animated.getvalue(),
        "no IEND (truncated)": plain[:end],
        "5000 chunks": many_chunks,
        "compressed text": encode(gradient(), "PNG", pnginfo=_ztxt()),
    }


@pytest.mark.parametrize("case", sorted(_png_cases()))
def test_pngs_that_need_pillow_are_left_to_it(case: str) -> None:
    data = _png_cases()[case]
    assert imaging._decode_plain_png(data) is None
    decoded = decode_image(data)  # Pillow's path decodes each of them
    assert decoded.grey.dtype == np.uint8 and decoded.grey.size > 0


_XMP_ROTATED = (
    '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
    'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description '
    'xmlns:tiff="http://ns.adobe.com/tiff/1.0/" tiff:Orientation="6"/></rdf:RDF></x:xmpmeta>'
)


def _rotated_pngs() -> dict[str, bytes]:
    """A 40x20 RGB gradient PNG told to rotate 90 degrees, in each place Pillow reads it."""
    from PIL import PngImagePlugin

    img = gradient(40, 20).convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6
    raw = exif.tobytes()
    raw_profile = f"\nexif\n{len(raw):8d}\n{raw.hex()}\n"
    cases = {"eXIf chunk": encode(img, "PNG", exif=raw)}
    for key, text in (("XML:com.adobe.xmp", _XMP_ROTATED), ("Raw profile type exif", raw_profile)):
        info = PngImagePlugin.PngInfo()
        info.add_text(key, text)
        before = encode(img, "PNG", pnginfo=info)
        cases[f"tEXt {key}"] = before
        # The same chunk after the pixels, where a header-only read cannot see it.
        plain = encode(img, "PNG")
        chunk = _png_chunk(b"tEXt", key.encode("latin-1") + b"\x00" + text.encode("latin-1"))
        end = plain.rindex(b"IEND") - 4
        cases[f"tEXt {key} after IDAT"] = plain[:end] + chunk + plain[end:]
    return cases


@pytest.mark.parametrize("case", sorted(_rotated_pngs()))
def test_png_exif_orientation_is_honoured(case: str) -> None:
    data = _rotated_pngs()[case]
    assert imaging._decode_plain_png(data) is None
    decoded = decode_image(data)
    assert decoded.grey.shape == (40, 20)  # portrait after rotation
    assert decoded.grey[:4].mean() < decoded.grey[-4:].mean()


def test_16_bit_rgb_png_keeps_its_levels() -> None:
    data = _png_cases()["16-bit RGB"]
    grey = decode_image(data).grey
    # Green ramps 0..65535 left to right: luma 0.587 of full scale at the right edge.
    assert grey[:, 0].max() <= 1 and abs(int(grey[0, -1]) - 150) <= 2


def test_corrupt_png_pixels_are_refused_on_either_path(capfd: pytest.CaptureFixture[str]) -> None:
    data = bytearray(encode(_astronaut("RGB"), "PNG"))
    data[5000] ^= 0xFF  # inside IDAT: the chunk walk still sees a whole file
    # The IDAT's CRC no longer matches: Pillow words the refusal, and libpng (OpenCV's
    # decoder) is never handed the file to print its complaint into the server's log.
    assert imaging._decode_plain_png(bytes(data)) is None
    with pytest.raises(UploadError, match="truncated or corrupt"):
        decode_image(bytes(data))
    assert "libpng" not in capfd.readouterr().err


def test_png_with_a_bad_crc_after_the_pixels_is_left_to_pillow() -> None:
    data = bytearray(encode(gradient(), "PNG"))
    data[-1] ^= 0xFF  # IEND's CRC: the pixels themselves are intact
    assert imaging._decode_plain_png(bytes(data)) is None
    assert np.array_equal(decode_image(bytes(data)).grey, decode_image(encode(gradient(), "PNG")).grey)


def _never_decode(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_decoding(self):
        raise AssertionError("decoded pixels that should have been refused from the header")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)


@pytest.mark.parametrize(
    ("mode", "per_pixel"), [("L", 1), ("1", 1), ("I;16", 2), ("RGB", 4), ("RGBA", 4), ("F", 4), ("P", 4)]
)
def test_memory_is_budgeted_by_the_bytes_each_pixel_takes(
    mode: str, per_pixel: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The same 1000 x 1000 pixels pass or not depending on their depth.
    data = encode(Image.new(mode, (1000, 1000)), "TIFF" if mode in ("F", "I;16") else "PNG")
    monkeypatch.setattr(imaging, "MAX_DECODED_BYTES", 1000 * 1000 * per_pixel)
    assert decode_image(data).original_size == (1000, 1000)
    monkeypatch.setattr(imaging, "MAX_DECODED_BYTES", 1000 * 1000 * per_pixel - 1)
    _never_decode(monkeypatch)
    with pytest.raises(UploadError, match=f"1000 x 1000 pixels in mode {mode} take .* MB"):
        decode_image(data)


def test_a_huge_jpeg_is_budgeted_at_the_scale_libjpeg_decodes_it(monkeypatch: pytest.MonkeyPatch) -> None:
    # 8192 px wide: drafted to 1/4 in luminance only, 2048 x 1024 bytes.
    data = encode(Image.new("RGB", (8192, 4096), (90, 120, 200)), "JPEG")
    monkeypatch.setattr(imaging, "MAX_DECODED_BYTES", 2048 * 1024)
    assert decode_image(data).grey.shape == (1024, 2048)


def test_progressive_photos_decode_and_scan_bombs_do_not(monkeypatch: pytest.MonkeyPatch) -> None:
    from hostile_corpus import jpeg_with_many_scans

    photo = encode(gradient(640, 480).convert("RGB"), "JPEG", progressive=True)
    assert decode_image(photo).grey.shape == (480, 640)
    bomb = jpeg_with_many_scans(500)
    _never_decode(monkeypatch)
    with pytest.raises(UploadError, match=r"stored in \d+ scans; at most 100"):
        decode_image(bomb)


def test_an_icon_is_read_and_one_hiding_a_huge_image_is_not(monkeypatch: pytest.MonkeyPatch) -> None:
    from hostile_corpus import ico_with_huge_png

    icon = encode(gradient(64, 64).convert("RGBA"), "ICO", sizes=[(64, 64)])
    assert decode_image(icon).format == "ICO"
    # The directory says 256 x 256; the entry's own header says 9000 x 9000 (81 MP).
    bomb = ico_with_huge_png(9000)
    _never_decode(monkeypatch)
    with pytest.raises(UploadError, match="icon holds an image of 9000 x 9000"):
        decode_image(bomb)


def test_float_images_with_missing_rows_keep_their_picture() -> None:
    picture = np.tile(np.linspace(-2.0, 5.0, 80, dtype=np.float32), (60, 1))
    picture[10] = np.nan
    picture[20] = np.inf
    picture[30] = -np.inf
    with np.errstate(all="raise"):  # no overflow or invalid-value warnings either
        grey = decode_image(encode(Image.fromarray(picture, mode="F"), "TIFF")).grey
    # The finite values span the whole grey range, left to right as stored.
    assert grey[0, 0] == 0 and grey[0, -1] == 255
    assert np.all(np.diff(grey[0].astype(int)) >= 0)
    assert np.all(grey[[10, 20, 30]] == 0)  # the missing rows are the darkest value


def test_signed_32_bit_images_use_their_own_range() -> None:
    values = np.tile(np.linspace(-1000, 1000, 100).astype(np.int32), (40, 1))
    grey = decode_image(encode(Image.fromarray(values, mode="I"), "TIFF")).grey
    assert grey[0, 0] == 0 and grey[0, -1] == 255 and 120 <= grey[0, 50] <= 135


def test_large_deep_images_are_reduced_before_conversion() -> None:
    wide = np.tile(np.linspace(0, 1, 5000, dtype=np.float32), (300, 1))
    grey = decode_image(encode(Image.fromarray(wide, mode="F"), "TIFF")).grey
    assert max(grey.shape) <= imaging.WORKING_MAX_SIDE and grey[0, 0] == 0 and grey[0, -1] >= 250
    sixteen = Image.fromarray(np.tile(np.linspace(0, 65535, 5000).astype(np.uint16), (300, 1)))
    grey = decode_image(encode(sixteen, "PNG")).grey
    assert max(grey.shape) <= imaging.WORKING_MAX_SIDE and grey[0, -1] == 255
    rgba = Image.new("RGBA", (5000, 300), (0, 0, 0, 0))
    grey = decode_image(encode(rgba, "PNG")).grey
    assert max(grey.shape) <= imaging.WORKING_MAX_SIDE and np.all(grey == 255)  # transparent: white
