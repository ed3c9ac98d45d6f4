"""``python -m training prepare``: the Kaggle FER2013 CSV as image folders.

``emotion,pixels,Usage`` rows become ``OUT/{train,val,test}/<class>/<row>.png`` (Usage
Training, PublicTest, PrivateTest), the layout ``image_dataset_from_directory`` reads.
Files are named by their CSV data-row number so that any image can be traced back.
"""

from __future__ import annotations

import csv
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

#: The CSV's label numbers (Kaggle's order, not alphabetical).
FER2013_LABELS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
USAGE_TO_SPLIT = {"Training": "train", "PublicTest": "val", "PrivateTest": "test"}
SIDE = 48


@dataclass
class PrepareReport:
    written: int = 0
    counts: Counter = field(default_factory=Counter)  # (split, class) -> images
    #: (CSV line number, reason) of every skipped row.
    skipped: list[tuple[int, str]] = field(default_factory=list)


def parse_row(row: dict[str, str]) -> tuple[str, str, np.ndarray]:
    """(split, class, 48x48 uint8 pixels) of one CSV row; ValueError says what is wrong."""
    try:
        label = int(row["emotion"])
    except (TypeError, ValueError):
        raise ValueError(f"emotion {row.get('emotion')!r} is not a number") from None
    if not 0 <= label < len(FER2013_LABELS):
        raise ValueError(f"emotion {label} is not in 0..{len(FER2013_LABELS) - 1}")
    usage = (row.get("Usage") or "").strip()
    if usage not in USAGE_TO_SPLIT:
        raise ValueError(f"Usage {usage!r} is not one of {', '.join(USAGE_TO_SPLIT)}")
    text = (row.get("pixels") or "").split()
    if len(text) != SIDE * SIDE:
        raise ValueError(f"{len(text)} pixels, expected {SIDE * SIDE}")
    try:
        values = np.array([int(v) for v in text], dtype=np.int64)
    except ValueError:
        raise ValueError("pixels are not all integers") from None
    if values.min() < 0 or values.max() > 255:
        raise ValueError("pixel values outside 0..255")
    return USAGE_TO_SPLIT[usage], FER2013_LABELS[label], values.astype(np.uint8).reshape(SIDE, SIDE)


def prepare_fer2013(
    csv_path: str | Path, out: str | Path, *, overwrite: bool = False, log=print
) -> PrepareReport:
    """Write the images; malformed rows are reported and skipped, never fatal."""
    csv_path, out = Path(csv_path), Path(out)
    existing = [out / s for s in USAGE_TO_SPLIT.values() if (out / s).exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{out} already has {', '.join(p.name for p in existing)}; pass --overwrite")
    for path in existing:
        shutil.rmtree(path)
    report = PrepareReport()
    # utf-8-sig: a CSV saved by Excel starts with a byte-order mark that would
    # otherwise become part of the first column's name.
    with csv_path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        missing = {"emotion", "pixels", "Usage"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{csv_path} lacks column(s) {', '.join(sorted(missing))}")
        made: set[Path] = set()
        for index, row in enumerate(reader):
            try:
                split, cls, pixels = parse_row(row)
            except ValueError as exc:
                report.skipped.append((reader.line_num, str(exc)))
                continue
            folder = out / split / cls
            if folder not in made:
                folder.mkdir(parents=True, exist_ok=True)
                made.add(folder)
            Image.fromarray(pixels, mode="L").save(folder / f"{index:05d}.png")
            report.written += 1
            report.counts[(split, cls)] += 1
    for split in USAGE_TO_SPLIT.values():
        per_class = {c: report.counts[(split, c)] for c in FER2013_LABELS if report.counts[(split, c)]}
        if per_class:
            log(f"{split}: {sum(per_class.values())} images ({', '.join(f'{c} {n}' for c, n in sorted(per_class.items()))})")
    if report.skipped:
        log(f"skipped {len(report.skipped)} malformed row(s):")
        for line, reason in report.skipped[:20]:
            log(f"  line {line}: {reason}")
        if len(report.skipped) > 20:
            log(f"  ... and {len(report.skipped) - 20} more")
    log(f"wrote {report.written} images to {out}")
    return report
