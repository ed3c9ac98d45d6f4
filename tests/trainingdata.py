"""Small generated image folders that a CNN can learn in an epoch or two.

Seven classes (named like FER2013's, so class subsets such as happy,sad work) of
drawn shapes and patterns with random position, size, brightness and noise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw

CLASSES = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")


def _draw(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    img = Image.new("L", (size, size), int(rng.integers(0, 60)))
    d = ImageDraw.Draw(img)
    fg = int(rng.integers(170, 256))
    c = size / 2 + rng.uniform(-size / 10, size / 10, 2)
    r = size * rng.uniform(0.22, 0.34)
    box = [c[0] - r, c[1] - r, c[0] + r, c[1] + r]
    w = max(1, size // 12)
    if kind == "angry":  # filled disc
        d.ellipse(box, fill=fg)
    elif kind == "disgust":  # filled square
        d.rectangle(box, fill=fg)
    elif kind == "fear":  # triangle
        d.polygon([(c[0], c[1] - r), (c[0] - r, c[1] + r), (c[0] + r, c[1] + r)], fill=fg)
    elif kind == "happy":  # horizontal stripes
        for y in range(0, size, max(2, size // 6)):
            d.rectangle([0, y, size, y + w], fill=fg)
    elif kind == "neutral":  # vertical stripes
        for x in range(0, size, max(2, size // 6)):
            d.rectangle([x, 0, x + w, size], fill=fg)
    elif kind == "sad":  # cross
        d.line([box[0], box[1], box[2], box[3]], fill=fg, width=w)
        d.line([box[0], box[3], box[2], box[1]], fill=fg, width=w)
    elif kind == "surprise":  # ring
        d.ellipse(box, outline=fg, width=w)
    arr = np.asarray(img, dtype=np.float32) + rng.normal(0, 12, (size, size))
    return np.clip(arr, 0, 255).astype(np.uint8)


def make_image_folder(
    root: str | Path,
    per_class: int = 24,
    size: int = 32,
    classes: tuple[str, ...] = CLASSES,
    seed: int = 0,
) -> Path:
    """Write ``root/<class>/<n>.png`` images; return ``root``."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for cls in classes:
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(_draw(cls, size, rng)).save(root / cls / f"{i:05d}.png")
    return root


def make_dataset(
    root: str | Path,
    train_per_class: int = 24,
    val_per_class: int = 8,
    test_per_class: int = 0,
    size: int = 32,
    classes: tuple[str, ...] = CLASSES,
) -> Path:
    """A prepared-style folder: ``root/train``, ``root/val`` (and ``root/test``)."""
    root = Path(root)
    make_image_folder(root / "train", train_per_class, size, classes, seed=1)
    if val_per_class:
        make_image_folder(root / "val", val_per_class, size, classes, seed=2)
    if test_per_class:
        make_image_folder(root / "test", test_per_class, size, classes, seed=3)
    return root


def assert_runs_refused(
    main: Callable[[list[str]], int],
    base: list[str],
    flag: str,
    cases: dict[str, Path],
    tmp_path: Path,
    capsys,
) -> None:
    """``python -m training`` with ``flag SOURCE`` fails (exit 2) for every case, saying
    the case's message and naming the flag, and writes no model."""
    for message, source in cases.items():
        out = tmp_path / f"out-{source.name}"
        assert main([*base, "--out", str(out), flag, str(source)]) == 2
        err = capsys.readouterr().err
        assert message in err and flag in err, err
        assert not (out / "model.keras").exists()
