"""The webcam snapshot button: one frame from the browser's camera, sent like an upload.

The browser does the capture (``getUserMedia``, one frame drawn on a canvas, the camera
stopped at once) and sends the frame as a JPEG data URL through
``Shiny.setInputValue(id, {data}, {priority: "event"})``, or ``{error, message}`` when
the camera is denied, absent or not offered (browsers hide ``mediaDevices`` on pages
served over plain http from another machine). The server decodes what arrives with
:func:`ferdash.webcam.decode_snapshot`.
"""

from __future__ import annotations

from htmltools import Tag, TagList
from shiny import ui
from shiny.module import resolve_id

#: Longest side of the frame sent to the server: larger gains nothing for a 48 px face.
MAX_SIDE = 1280

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
