"""The sample photos the Predict tab offers a new user (ferdash/data/samples)."""

from __future__ import annotations

from pathlib import Path

SAMPLES_DIR = Path(__file__).with_name("data") / "samples"

#: Shown in this order: one face, two faces of different sizes, and two photos without
#: a face, so a first try shows what a face reading and an honest "no face" look like.
SAMPLE_FILES = ("astronaut.jpg", "astronaut-twice.jpg", "coffee-cup.jpg", "chelsea-the-cat.jpg")


def sample_files() -> list[tuple[str, bytes]]:
    """``(name, bytes)`` of every sample, for :func:`ferdash.inference.analyse`."""
    return [(name, (SAMPLES_DIR / name).read_bytes()) for name in SAMPLE_FILES]
