"""A webcam snapshot button: one frame from the browser's camera, sent like an upload.

The browser does the capture (``getUserMedia``, one frame drawn on a canvas, the camera
stopped at once) and sends the frame as a JPEG data URL through
``Shiny.setInputValue(id, {data}, {priority: "event"})``, or ``{error, message}`` when
the camera is denied, absent or not offered (browsers hide ``mediaDevices`` on pages
served over plain http from another machine). The server decodes it here, with a size
cap, and hands the bytes to the same per-file path as an upload.
"""

from __future__ import annotations

import base64
import binascii
import re
from datetime import datetime
from typing import Any

from htmltools import Tag, TagList
from shiny import ui
from shiny.module import resolve_id

from .imaging import MAX_UPLOAD_BYTES, UploadError

#: Longest side of the frame sent to the server: larger gains nothing for a 48 px face.
MAX_SIDE = 1280

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

# Idempotent: the script may be in the page once per panel that shows a button.
_SCRIPT = """
(function () {
  if (window.__ferdashWebcam) return;
  window.__ferdashWebcam = true;
  var MAX_SIDE = %d;
  document.addEventListener("click", async function (event) {
    var button = event.target.closest("[data-ferdash-webcam]");
    if (!button) return;
    var id = button.getAttribute("data-ferdash-webcam");
    var send = function (value) { Shiny.setInputValue(id, value, {priority: "event"}); };
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      send({error: "unavailable", message: "navigator.mediaDevices is not available"});
      return;
    }
    button.disabled = true;
    var stream = null;
    try {
      stream = await navigator.mediaDevices.getUserMedia({video: true, audio: false});
      var video = document.createElement("video");
      video.muted = true;
      video.playsInline = true;
      video.srcObject = stream;
      await video.play();
      if (!video.videoWidth) {
        await new Promise(function (resolve) {
          video.addEventListener("loadeddata", resolve, {once: true});
        });
      }
      var scale = Math.min(1, MAX_SIDE / Math.max(video.videoWidth, video.videoHeight));
      var canvas = document.createElement("canvas");
      canvas.width = Math.round(video.videoWidth * scale);
      canvas.height = Math.round(video.videoHeight * scale);
      canvas.getContext("2d").drawImage(video, 0, 0, canvas.width, canvas.height);
      send({data: canvas.toDataURL("image/jpeg", 0.92)});
      // The snapshot replaces the upload's cards: the file field must not go on naming
      // the files it no longer shows.
      var replaced = document.getElementById(button.getAttribute("data-ferdash-replaces") || "");
      var group = replaced && replaced.closest(".input-group");
      var text = group && group.querySelector("input[type=text]");
      if (text) text.value = "webcam snapshot";
    } catch (err) {
      send({error: (err && err.name) || "Error", message: String((err && err.message) || err)});
    } finally {
      if (stream) stream.getTracks().forEach(function (track) { track.stop(); });
      button.disabled = false;
    }
  });
})();
""" % MAX_SIDE


class WebcamError(UploadError):
    """A snapshot that did not arrive: the message says why, for the person at the camera."""


def snapshot_button(
    input_id: str, label: str = "Webcam snapshot", replaces: str | None = None
) -> TagList:
    """A button that sends one camera frame to the input ``input_id`` (namespaced here).

    ``replaces``: the file input whose results a snapshot replaces; its text then reads
    "webcam snapshot". Call inside a module's UI to namespace both ids like the module's
    other inputs.
    """
    target = resolve_id(input_id)
    button: Tag = ui.tags.button(
        ui.tags.span("\U0001f4f7", aria_hidden="true"),
        " ",
        label,
        type="button",
        class_="btn btn-outline-secondary btn-sm ferdash-webcam",
        id=resolve_id(input_id + "_button"),
        data_ferdash_webcam=target,
        data_ferdash_replaces=resolve_id(replaces) if replaces else None,
    )
    return TagList(button, ui.tags.script(_SCRIPT))


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
