"""What the webcam snapshot button sends, decoded: one camera frame, as an upload's bytes.

The browser sends the frame as a JPEG data URL, or ``{error, message}`` when the camera
is denied, absent or not offered (the button and its script are
:mod:`ferdash.panels.webcam_button`). It is decoded here, with a size cap, and handed
to the same per-file path as an upload.
"""

from __future__ import annotations

import base64
import binascii
import re
from datetime import datetime
from typing import Any

from .imaging import MAX_UPLOAD_BYTES, UploadError

_DATA_URL = re.compile(r"^data:image/(jpeg|png|webp);base64,([A-Za-z0-9+/=\s]*)$", re.ASCII)

_CAMERA_ERRORS = {
    "NotAllowedError": "Camera access was denied. Allow the camera for this page in the "
    "browser's site settings, then take the snapshot again.",
    "SecurityError": "Camera access was denied by the browser's security settings.",
    "NotFoundError": "No camera was found on this device.",
    "OverconstrainedError": "No camera was found on this device.",
    "NotReadableError": "The camera cannot be read: another application may be using it.",
    "AbortError": "The camera stopped before a frame was taken; try again.",
    "unavailable": "This browser offers no camera access on this page (browsers allow "
    "the camera only over https or on localhost).",
}


class WebcamError(UploadError):
    """A snapshot that did not arrive: the message says why, for the person at the camera."""


def camera_error_text(value: dict[str, Any]) -> str:
    """The message for a ``{error, message}`` the browser sent instead of a frame."""
    name = str(value.get("error", ""))
    if name in _CAMERA_ERRORS:
        return _CAMERA_ERRORS[name]
    detail = str(value.get("message", "")).strip()[:200]
    return f"The camera could not be used ({name or 'unknown error'}{': ' + detail if detail else ''})."


def decode_snapshot(value: Any, max_bytes: int = MAX_UPLOAD_BYTES) -> tuple[str, bytes]:
    """``(display name, image bytes)`` of what the button sent; :class:`WebcamError` if none.

    The size is checked on the base64 text before decoding, so an oversized message is
    refused without being expanded. The name is made here: nothing the page sends is
    used as a file name.
    """
    if not isinstance(value, dict):
        raise WebcamError("The webcam snapshot did not arrive.")
    if value.get("error"):
        raise WebcamError(camera_error_text(value))
    data = value.get("data")
    if not isinstance(data, str):
        raise WebcamError("The webcam snapshot did not arrive.")
    limit_mb = max_bytes // (1024 * 1024)
    if len(data) > (max_bytes * 4) // 3 + 64:
        raise WebcamError(f"The webcam snapshot is larger than the {limit_mb} MB limit.")
    match = _DATA_URL.match(data)
    if match is None:
        raise WebcamError("The webcam snapshot is not a JPEG, PNG or WebP image.")
    try:
        raw = base64.b64decode(re.sub(r"\s", "", match.group(2)), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise WebcamError("The webcam snapshot is damaged (bad base64).") from exc
    if not raw:
        raise WebcamError("The webcam snapshot is empty.")
    if len(raw) > max_bytes:
        raise WebcamError(f"The webcam snapshot is larger than the {limit_mb} MB limit.")
    name = f"webcam snapshot {datetime.now().strftime('%H:%M:%S')}.{match.group(1).replace('jpeg', 'jpg')}"
    return name, raw
