"""Decoding what the webcam button sends (ferdash.webcam), without a browser."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from ferdash.imaging import UploadError, decode_image
from ferdash.panels.webcam_button import snapshot_button
from ferdash.webcam import camera_error_text, decode_snapshot


def _jpeg_data_url(size=(64, 48)) -> str:
    buf = io.BytesIO()
    Image.fromarray(np.full((size[1], size[0], 3), 120, np.uint8)).save(buf, format="JPEG")
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def test_a_frame_decodes_to_image_bytes_with_a_server_made_name() -> None:
    name, data = decode_snapshot({"data": _jpeg_data_url(), "name": "../../etc/passwd"})
    assert name.startswith("webcam snapshot ") and name.endswith(".jpg") and "/" not in name
    assert decode_image(data).original_size == (64, 48)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        ("NotAllowedError", "Camera access was denied"),
        ("NotFoundError", "No camera was found"),
        ("unavailable", "only over https or on localhost"),
        ("WeirdError", "The camera could not be used (WeirdError: boom)"),
    ],
)
def test_camera_errors_become_clear_messages(error: str, expected: str) -> None:
    with pytest.raises(UploadError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        decode_snapshot({"error": error, "message": "boom"})
    assert expected in camera_error_text({"error": error, "message": "boom"})


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, "did not arrive"),
        ({"data": 3}, "did not arrive"),
        ({"data": "data:text/html;base64,PGI+"}, "not a JPEG, PNG or WebP"),
        ({"data": "data:image/png;base64,!!!!"}, "not a JPEG"),
        ({"data": "data:image/png;base64,abc"}, "damaged"),
        ({"data": "data:image/png;base64,"}, "empty"),
    ],
)
def test_malformed_snapshots_are_refused(value, expected: str) -> None:
    with pytest.raises(UploadError, match=expected):
        decode_snapshot(value)


def test_oversized_snapshots_are_refused_before_decoding() -> None:
    with pytest.raises(UploadError, match="larger than the 1 MB limit"):
        decode_snapshot({"data": "data:image/jpeg;base64," + "A" * 2_000_000}, max_bytes=2**20)


def test_the_button_targets_the_namespaced_input() -> None:
    from shiny._namespaces import namespace_context

    html = str(snapshot_button("webcam"))
    assert 'data-ferdash-webcam="webcam"' in html and "getUserMedia" in html
    with namespace_context("predict"):  # what a module's UI function runs in
        html = str(snapshot_button("webcam"))
    assert 'data-ferdash-webcam="predict-webcam"' in html
