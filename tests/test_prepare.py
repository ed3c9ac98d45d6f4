"""`python -m training prepare`: FER2013 CSV -> image folders, exact pixels, bad rows skipped."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from training.prepare import FER2013_LABELS, prepare_fer2013

USAGES = {"Training": "train", "PublicTest": "val", "PrivateTest": "test"}


def _write_csv(path: Path, rows: list[tuple[object, str, str]]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["emotion", "pixels", "Usage"])
        writer.writerows(rows)


@pytest.fixture
def fer_csv(tmp_path: Path) -> tuple[Path, list[tuple[int, str, np.ndarray]]]:
    rng = np.random.default_rng(0)
    good: list[tuple[int, str, np.ndarray]] = []
    rows: list[tuple[object, str, str]] = []
    for usage in USAGES:
        for label in range(7):
            pixels = rng.integers(0, 256, (48, 48), dtype=np.uint8)
            pixels[0, 0], pixels[0, 1] = 0, 255  # The extremes must survive too.
            good.append((len(rows), usage, pixels))
            rows.append((label, " ".join(map(str, pixels.ravel())), usage))
    bad = [
        (3, " ".join(["1"] * 100), "Training"),  # wrong pixel count
        (9, " ".join(["1"] * 2304), "Training"),  # label out of range
        ("x", " ".join(["1"] * 2304), "PublicTest"),  # label not a number
        (2, " ".join(["300"] * 2304), "Training"),  # pixel out of range
        (2, " ".join(["1"] * 2304), "Elsewhere"),  # unknown usage
    ]
    rows[3:3] = bad  # Bad rows in the middle: later rows must still be written.
    good = [(i + len(bad) if i >= 3 else i, u, p) for i, u, p in good]
    path = tmp_path / "fer2013.csv"
    _write_csv(path, rows)
    return path, [(i, u, p) for i, u, p in good]


def test_prepare_round_trips_pixels_and_skips_malformed_rows(fer_csv, tmp_path: Path) -> None:
    csv_path, good = fer_csv
    logs: list[str] = []
    report = prepare_fer2013(csv_path, tmp_path / "out", log=logs.append)
    assert report.written == 21
    assert len(report.skipped) == 5
    assert any("pixels" in reason for _, reason in report.skipped)
    assert any("skipped 5 malformed" in line for line in logs)
    with csv_path.open() as f:
        rows = list(csv.DictReader(f))
    for index, usage, pixels in good:
        label = int(rows[index]["emotion"])
        png = tmp_path / "out" / USAGES[usage] / FER2013_LABELS[label] / f"{index:05d}.png"
        with Image.open(png) as img:
            assert img.mode == "L"
            assert np.array_equal(np.asarray(img), pixels)
    for split in USAGES.values():
        assert sorted(p.name for p in (tmp_path / "out" / split).iterdir()) == sorted(FER2013_LABELS)


def test_prepare_label_order_is_kaggles(tmp_path: Path) -> None:
    # 4 is sad and 6 neutral in the CSV, whatever the alphabetical order of folders.
    rows = [(4, " ".join(["7"] * 2304), "Training"), (6, " ".join(["9"] * 2304), "Training")]
    _write_csv(tmp_path / "f.csv", rows)
    prepare_fer2013(tmp_path / "f.csv", tmp_path / "out", log=lambda *_: None)
    assert (tmp_path / "out/train/sad/00000.png").is_file()
    assert (tmp_path / "out/train/neutral/00001.png").is_file()


def test_prepare_refuses_to_mix_with_an_existing_output(fer_csv, tmp_path: Path) -> None:
    csv_path, _ = fer_csv
    prepare_fer2013(csv_path, tmp_path / "out", log=lambda *_: None)
    with pytest.raises(FileExistsError):
        prepare_fer2013(csv_path, tmp_path / "out", log=lambda *_: None)
    report = prepare_fer2013(csv_path, tmp_path / "out", overwrite=True, log=lambda *_: None)
    assert report.written == 21


def test_prepare_rejects_a_csv_without_the_columns(tmp_path: Path) -> None:
    (tmp_path / "f.csv").write_text("label,data\n1,2\n")
    with pytest.raises(ValueError, match="lacks column"):
        prepare_fer2013(tmp_path / "f.csv", tmp_path / "out", log=lambda *_: None)


def test_prepare_cli(fer_csv, tmp_path: Path, capsys) -> None:
    from training.__main__ import main

    csv_path, _ = fer_csv
    assert main(["prepare", "--csv", str(csv_path), "--out", str(tmp_path / "cli")]) == 0
    assert "wrote 21 images" in capsys.readouterr().out
    assert main(["prepare", "--csv", str(csv_path), "--out", str(tmp_path / "cli")]) == 2
    assert "--overwrite" in capsys.readouterr().err
