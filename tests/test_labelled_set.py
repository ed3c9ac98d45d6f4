"""Labelled sets: reading a user's zip of class folders (hostile archives included),
labels from folders and file names, and the score of predictions against them.

Every archive is built here with zipfile and Pillow; forged ones are patched byte by
byte in their headers.
"""

from __future__ import annotations

import gzip
import io
import math
import os
import stat
import struct
import sys
import threading
import time
import zipfile
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ferdash import labelled_set, set_score
from ferdash.labelled_set import (
    LABEL_SYNONYMS,
    MAX_MEMBERS,
    LabelledSetError,
    label_from_filename,
    label_images,
    read_zip,
)
from ferdash.runs.rundir import FER2013_CLASSES
from ferdash.set_score import PER_FACE_COLUMNS, per_class_frame, per_face_frame, score

FER7 = FER2013_CLASSES
HAPPY_SAD = ("happy", "sad")


def png(value: int = 128) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (8, 8), value).save(buf, format="PNG")
    return buf.getvalue()


def make_zip(entries: dict[str, bytes] | list[tuple[str | zipfile.ZipInfo, bytes]],
             compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as archive:
        for name, data in (entries.items() if isinstance(entries, dict) else entries):
            archive.writestr(name, data)
    return buf.getvalue()


def patch_headers(data: bytes, name: str, *, file_size: int | None = None,
                  flag_bits: int | None = None) -> bytes:
    """``data`` with the member ``name``'s local header and directory entry rewritten."""
    out = bytearray(data)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        info = archive.getinfo(name)
        directory_at = archive.start_dir
    local = info.header_offset
    assert out[local : local + 4] == b"PK\x03\x04"
    at = directory_at
    while out[at : at + 4] == b"PK\x01\x02":
        name_len, extra_len, comment_len = struct.unpack_from("<3H", out, at + 28)
        if out[at + 46 : at + 46 + name_len].decode() == name:
            break
        at += 46 + name_len + extra_len + comment_len
    else:
        raise AssertionError(f"{name} is not in the directory")
    if file_size is not None:
        struct.pack_into("<L", out, local + 22, file_size)
        struct.pack_into("<L", out, at + 24, file_size)
    if flag_bits is not None:
        struct.pack_into("<H", out, local + 6, flag_bits)
        struct.pack_into("<H", out, at + 8, flag_bits)
    return bytes(out)


def labels(result: labelled_set.LabelledSet) -> dict[str, str]:
    return {image.name: image.label for image in result.images}


# --- layout and labels ----------------------------------------------------------------


def test_class_folders_inside_one_top_folder_are_labelled_by_their_folder() -> None:
    a, b, c = png(10), png(20), png(30)
    result = read_zip(make_zip({"set/happy/a.png": a, "set/sad/b.png": b, "set/sad/c.jpg": c}), FER7)
    assert labels(result) == {"set/happy/a.png": "happy", "set/sad/b.png": "sad", "set/sad/c.jpg": "sad"}
    assert [image.data for image in result.images] == [a, b, c]
    assert result.counts() == {c: {"happy": 1, "sad": 2}.get(c, 0) for c in FER7}
    assert result.notes == () and result.non_images == 0


def test_class_folders_at_the_top_are_labelled_by_their_folder() -> None:
    result = read_zip(make_zip({"happy/a.png": png(), "sad/b.png": png(), "happy/": b""}), FER7)
    assert labels(result) == {"happy/a.png": "happy", "sad/b.png": "sad"}


def test_a_single_class_folder_is_a_class_not_a_wrapper() -> None:
    result = read_zip(make_zip({"happy/a.png": png(), "happy/b.png": png()}), HAPPY_SAD)
    assert set(labels(result).values()) == {"happy"}


def test_synonyms_and_case_match_the_run_classes() -> None:
    folders = {
        "Happiness": "happy", "SADNESS": "sad", "Anger": "angry", "surprised": "surprise",
        "Fearful": "fear", "afraid": "fear", "fearfulness": "fear", "Disgusted": "disgust",
        "NEUTRAL": "neutral",
    }
    result = read_zip(make_zip({f"{folder}/x.png": png() for folder in folders}), FER7)
    assert labels(result) == {f"{folder}/x.png": label for folder, label in folders.items()}
    assert set(LABEL_SYNONYMS.values()) <= set(FER7)


def test_contempt_and_unknown_folders_are_ignored_with_a_note() -> None:
    archive = make_zip({
        "happy/a.png": png(), "contempt/b.png": png(), "Contempt/c.png": png(),
        "faces/d.png": png(),
    })
    result = read_zip(archive, FER7)
    assert labels(result) == {"happy/a.png": "happy"}
    assert "contempt is not one of the run's classes: 2 files ignored." in result.notes
    assert "Folder 'faces' is not an expression: 1 file ignored." in result.notes


def test_a_happy_sad_run_ignores_the_other_expressions_with_a_note() -> None:
    archive = make_zip({"happy/a.png": png(), "sad/b.png": png(), "Anger/c.png": png(),
                        "neutral/d.png": png(), "neutral/e.png": png()})
    result = read_zip(archive, HAPPY_SAD)
    assert set(labels(result).values()) == {"happy", "sad"}
    assert "angry is not one of the run's classes: 1 file ignored." in result.notes
    assert "neutral is not one of the run's classes: 2 files ignored." in result.notes


def test_non_images_are_counted_and_macos_forks_are_dropped() -> None:
    archive = make_zip({
        "set/happy/a.png": png(), "set/readme.txt": b"hi", "set/happy/.DS_Store": b"\0",
        "set/labels.csv": b"a,b", "__MACOSX/set/happy/._a.png": b"\0\5\26\7",
    })
    result = read_zip(archive, FER7)
    assert labels(result) == {"set/happy/a.png": "happy"}
    assert result.non_images == 3
    assert any(note.startswith("Not images") and "3 files" in note for note in result.notes)


def test_loose_files_go_by_their_name_and_deeper_ones_are_ignored() -> None:
    archive = make_zip({
        "happy_01.jpg": png(), "Sad-3.png": png(), "IMG_0001.png": png(),
        "happy/sub/x.png": png(), "sad/y.png": png(),
    })
    result = read_zip(archive, FER7)
    assert labels(result) == {"happy_01.jpg": "happy", "Sad-3.png": "sad", "sad/y.png": "sad"}
    assert "Deeper than <class>/<image>: 1 file ('happy/sub/x.png') ignored." in result.notes
    assert any("name does not start with a class" in n and "IMG_0001.png" in n for n in result.notes)


def test_loose_files_in_a_wrapper_folder_go_by_their_name() -> None:
    result = read_zip(make_zip({"faces/happy_1.png": png(), "faces/sadness 2.png": png()}), FER7)
    assert labels(result) == {"faces/happy_1.png": "happy", "faces/sadness 2.png": "sad"}


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("happy_01.jpg", "happy"),
        ("Sad-3.png", "sad"),
        ("HAPPY.png", "happy"),
        ("happiness7.png", "happy"),
        ("surprised face.jpg", "surprise"),
        ("upload/dir\\anger_2.png", "angry"),
        ("happysad.png", None),
        ("IMG_happy.jpg", None),
        ("01_happy.png", None),
        ("contempt_1.png", None),
        ("", None),
    ],
)
def test_label_from_filename(name: str, expected: str | None) -> None:
    assert label_from_filename(name, FER7) == expected


def test_label_from_filename_uses_only_the_run_classes() -> None:
    assert label_from_filename("angry_1.png", HAPPY_SAD) is None
    assert label_from_filename("Happiness_1.png", HAPPY_SAD) == "happy"


def test_loose_uploads_are_labelled_by_name() -> None:
    result = label_images(
        [("happy_1.png", png(1)), ("sad_2.jpg", png(2)), ("angry_3.png", png(3)), ("notes.txt", b"x")],
        HAPPY_SAD,
    )
    assert labels(result) == {"happy_1.png": "happy", "sad_2.jpg": "sad"}
    assert result.non_images == 1
    assert "angry is not one of the run's classes: 1 file ignored." in result.notes
    with pytest.raises(LabelledSetError, match="No image in the upload carries one of the run's classes"):
        label_images([("me.png", png())], HAPPY_SAD)


def test_no_labelled_image_is_an_error_that_says_why() -> None:
    with pytest.raises(LabelledSetError) as caught:
        read_zip(make_zip({"contempt/a.png": png(), "readme.txt": b"x"}), HAPPY_SAD)
    message = str(caught.value)
    assert "(happy, sad)" in message and "contempt is not one of the run's classes" in message


def test_a_path_on_the_server_reads_like_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = make_zip({"happy/a.png": png(), "sad/b.png": png()})
    path = tmp_path / "upload.zip"
    path.write_bytes(archive)
    assert labels(read_zip(path, FER7)) == labels(read_zip(archive, FER7))
    assert labels(read_zip(str(path), FER7)) == labels(read_zip(archive, FER7))
    monkeypatch.setattr(labelled_set, "MAX_ARCHIVE_BYTES", len(archive) - 1)
    for source in (path, archive):
        with pytest.raises(LabelledSetError, match="larger than the 0 MB limit"):
            read_zip(source, FER7)
    with pytest.raises(LabelledSetError, match="could not be read on the server"):
        read_zip(tmp_path / "missing.zip", FER7)


# --- hostile archives -----------------------------------------------------------------


class OpenedFiles:
    """Files the process opens from Python while recording (an audit hook cannot be
    removed, so one is installed per process and switched on and off)."""

    _installed = False
    _lock = threading.Lock()
    recording = False
    events: list[str] = []

    @classmethod
    def record(cls) -> None:
        with cls._lock:
            if not cls._installed:
                sys.addaudithook(cls._hook)
                cls._installed = True
        cls.events.clear()
        cls.recording = True

    @classmethod
    def _hook(cls, event: str, args: tuple) -> None:
        if cls.recording and event in ("open", "os.mkdir", "os.rename", "os.symlink", "os.link"):
            cls.events.append(f"{event} {args[0]!r}")


@pytest.fixture
def no_extraction(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("a member was extracted")

    monkeypatch.setattr(zipfile.ZipFile, "extract", refuse)
    monkeypatch.setattr(zipfile.ZipFile, "extractall", refuse)


def test_traversal_names_never_reach_the_file_system(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_extraction: None
) -> None:
    work = tmp_path / "a" / "b" / "work"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    archive = make_zip({
        "../../etc/x.png": png(), "happy/../../y.png": png(), "/abs/happy/z.png": png(),
        "C:\\happy\\w.png": png(), "sad/ok.png": png(),
    })
    OpenedFiles.record()
    try:
        result = read_zip(archive, FER7)
    finally:
        OpenedFiles.recording = False
    assert OpenedFiles.events == []
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == ["a", "a/b", "a/b/work"]
    # A leading "/" or drive is only dropped, and the rest read as folder names.
    assert labels(result) == {"sad/ok.png": "sad", "C:\\happy\\w.png": "happy"}
    assert "'..' in the path: 2 files ('../../etc/x.png', 'happy/../../y.png') skipped." in result.notes
    assert any(n.startswith("Deeper than") and "/abs/happy/z.png" in n for n in result.notes)


def test_absolute_names_under_one_folder_are_labelled_by_the_rule(no_extraction: None) -> None:
    archive = make_zip({"/abs/happy/x.png": png(), "/abs/sad/y.png": png(), "/abs/sad\\w.png": png()})
    result = read_zip(archive, FER7)
    assert labels(result) == {"/abs/happy/x.png": "happy", "/abs/sad/y.png": "sad", "/abs/sad\\w.png": "sad"}


def test_a_symlink_member_is_skipped() -> None:
    link = zipfile.ZipInfo("happy/link.png")
    link.create_system = 3
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    result = read_zip(make_zip([(link, b"/etc/passwd"), ("happy/a.png", png())]), FER7)
    assert labels(result) == {"happy/a.png": "happy"}
    assert "Links or other special files: 1 file ('happy/link.png') skipped." in result.notes


def test_nested_archives_are_skipped_not_opened() -> None:
    inner = make_zip({"happy/a.png": png()})
    archive = make_zip({
        "happy/inner.zip": inner, "sad/more.tar.gz": gzip.compress(b"x" * 100),
        "sad/b.7z": b"7z\xbc\xaf\x27\x1c", "sad/c.png": png(),
    })
    result = read_zip(archive, FER7)
    assert labels(result) == {"sad/c.png": "sad"}
    assert result.non_images == 0
    assert any(n.startswith("Archives inside the archive are not opened: 3 files") for n in result.notes)


def test_an_encrypted_member_is_skipped() -> None:
    archive = patch_headers(make_zip({"happy/secret.png": png(), "happy/a.png": png()}),
                            "happy/secret.png", flag_bits=0x1)
    result = read_zip(archive, FER7)
    assert labels(result) == {"happy/a.png": "happy"}
    assert "Encrypted: 1 file ('happy/secret.png') skipped." in result.notes


def forged_bomb() -> bytes:
    """1 MB of zeros whose headers claim 3.75 GB (what a real bomb's honest headers say;
    the reader must refuse it without unpacking, so the bytes behind it do not matter)."""
    honest = make_zip({"happy/a.png": png(), "happy/bomb.png": bytes(1024 * 1024)})
    return patch_headers(honest, "happy/bomb.png", file_size=0xF000_0000)


@pytest.mark.parametrize(
    "archive",
    [
        pytest.param(lambda: make_zip({"happy/a.png": png(), "happy/bomb.png": bytes(15 * 1024 * 1024)}),
                     id="15MB-of-zeros"),
        pytest.param(forged_bomb, id="declares-3.75GB"),
    ],
)
def test_a_zip_bomb_is_refused_before_anything_is_unpacked(archive, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = archive()
    assert len(archive) < 100_000
    opened: list[str] = []
    real_open = zipfile.ZipFile.open
    monkeypatch.setattr(zipfile.ZipFile, "open",
                        lambda self, name, *a, **k: opened.append(str(name)) or real_open(self, name, *a, **k))
    start = time.perf_counter()
    with pytest.raises(LabelledSetError, match=r"zip bomb: 'happy/bomb.png' unpacks to [\d,]+ times"):
        read_zip(archive, FER7)
    assert time.perf_counter() - start < 1.0
    assert opened == []


def test_a_set_too_large_when_unpacked_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(labelled_set, "MAX_TOTAL_BYTES", 3 * 1024 * 1024)
    archive = make_zip({f"happy/{i}.png": os.urandom(1024 * 1024) for i in range(4)},
                       compression=zipfile.ZIP_STORED)
    with pytest.raises(LabelledSetError, match=r"too large when unpacked \(4 MB of labelled images; the limit is 3 MB\)"):
        read_zip(archive, FER7)


def test_an_image_over_the_one_image_limit_is_skipped_unread(monkeypatch: pytest.MonkeyPatch) -> None:
    big = bytes(labelled_set.MAX_MEMBER_BYTES + 1)
    archive = make_zip({"happy/big.png": big, "happy/a.png": png()}, compression=zipfile.ZIP_STORED)
    opened: list[str] = []
    real_open = zipfile.ZipFile.open
    monkeypatch.setattr(zipfile.ZipFile, "open",
                        lambda self, name, *a, **k: opened.append(getattr(name, "filename", name)) or real_open(self, name, *a, **k))
    result = read_zip(archive, FER7)
    assert labels(result) == {"happy/a.png": "happy"}
    assert opened == ["happy/a.png"]
    assert "Larger than the 20 MB limit for one image: 1 file ('happy/big.png') skipped." in result.notes


def test_a_header_that_declares_less_is_caught_while_unpacking() -> None:
    # 8 MB of zeros whose headers claim 1,000 bytes: the caps pass on the claim, and
    # unpacking stops at it (zipfile then finds the checksum wrong).
    honest = make_zip({"happy/liar.png": bytes(8 * 1024 * 1024), "happy/a.png": png()})
    forged = patch_headers(honest, "happy/liar.png", file_size=1000)
    start = time.perf_counter()
    result = read_zip(forged, FER7)
    assert time.perf_counter() - start < 1.0
    assert labels(result) == {"happy/a.png": "happy"}
    assert any(n.startswith("Could not be unpacked") and "happy/liar.png" in n for n in result.notes)


def test_a_member_that_unpacks_past_its_declared_size_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    # Our own count, whatever the zip reader does: here a reader that trusts the data.
    archive = make_zip({"happy/a.png": png()})
    declared = zipfile.ZipFile(io.BytesIO(archive)).getinfo("happy/a.png").file_size
    monkeypatch.setattr(zipfile.ZipFile, "open", lambda self, name, *a, **k: io.BytesIO(bytes(declared + 1)))
    with pytest.raises(LabelledSetError, match=r"forged: 'happy/a.png' unpacks to more than the [\d,]+ bytes"):
        read_zip(archive, FER7)


def test_a_damaged_member_is_skipped_and_the_others_kept() -> None:
    archive = bytearray(make_zip({"happy/a.png": png(1), "happy/b.png": png(2)}, compression=zipfile.ZIP_STORED))
    info = zipfile.ZipFile(io.BytesIO(bytes(archive))).getinfo("happy/b.png")
    data_at = info.header_offset + 30 + len(info.filename)
    archive[data_at + 20] ^= 0xFF
    result = read_zip(bytes(archive), FER7)
    assert labels(result) == {"happy/a.png": "happy"}
    assert any(n.startswith("Could not be unpacked") for n in result.notes)


def test_too_many_members_are_refused_before_the_list_is_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    archive = make_zip({f"happy/{i}.png": b"" for i in range(MAX_MEMBERS + 1)}, compression=zipfile.ZIP_STORED)
    parsed = []
    real_init = zipfile.ZipFile.__init__
    monkeypatch.setattr(zipfile.ZipFile, "__init__", lambda self, *a, **k: parsed.append(1) or real_init(self, *a, **k))
    with pytest.raises(LabelledSetError, match=r"too many files \(10,001; the limit is 10,000\)"):
        read_zip(archive, FER7)
    assert parsed == []


def test_an_end_record_that_understates_the_count_is_caught_after_parsing() -> None:
    archive = bytearray(make_zip({f"happy/{i}.png": b"" for i in range(MAX_MEMBERS + 1)},
                                 compression=zipfile.ZIP_STORED))
    end = archive.rfind(b"PK\x05\x06")
    struct.pack_into("<2H", archive, end + 8, 1, 1)  # entries on this disk, in all
    with pytest.raises(LabelledSetError, match=r"too many files \(10,001;"):
        read_zip(bytes(archive), FER7)


def test_an_oversized_file_list_is_refused_from_the_end_record(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(labelled_set, "MAX_DIRECTORY_BYTES", 1024)
    archive = make_zip({f"happy/{'x' * 200}{i}.png": png() for i in range(10)})
    with pytest.raises(LabelledSetError, match="list of files is too large"):
        read_zip(archive, FER7)


def test_the_zip64_end_record_is_read_too() -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", allowZip64=True) as archive:
        archive.writestr("happy/a.png", png())
    data = bytearray(buf.getvalue())
    # Make the archive point at a ZIP64 end record whose count is over the cap.
    end = data.rfind(b"PK\x05\x06")
    record = struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0,
                         MAX_MEMBERS + 5, MAX_MEMBERS + 5, 50, 0)
    locator = struct.pack("<4sLQL", b"PK\x06\x07", 0, end, 1)
    forged = bytes(data[:end]) + record + locator + bytes(data[end:])
    with pytest.raises(LabelledSetError, match=r"too many files \(10,005;"):
        read_zip(forged, FER7)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", r"empty \(0 bytes\)"),
        (b"just some text", "not a zip archive"),
        (png(), "not a zip archive"),
        (gzip.compress(b"a" * 1000), "This is a gzip file, not a zip archive"),
        (b"7z\xbc\xaf\x27\x1c" + bytes(40), "This is a 7z archive"),
        (b"Rar!\x1a\x07\x00" + bytes(40), "This is a RAR archive"),
        (b"PK\x03\x04" + bytes(100), "damaged or truncated"),
    ],
    ids=["empty", "text", "png", "gzip", "7z", "rar", "zip-start"],
)
def test_bytes_that_are_no_zip_get_a_clear_message(content: bytes, message: str) -> None:
    with pytest.raises(LabelledSetError, match=message):
        read_zip(content, FER7)


def test_a_truncated_zip_gets_a_clear_message() -> None:
    archive = make_zip({f"happy/{i}.png": png(i) for i in range(20)})
    with pytest.raises(LabelledSetError, match="zip archive is damaged or truncated|not a zip archive"):
        read_zip(archive[: len(archive) // 2], FER7)


def test_a_forged_directory_gets_a_clear_message() -> None:
    archive = bytearray(make_zip({"happy/a.png": png()}))
    at = archive.rfind(b"PK\x01\x02")
    archive[at : at + 4] = b"PK\x09\x09"  # the entry's signature
    with pytest.raises(LabelledSetError, match="damaged or truncated"):
        read_zip(bytes(archive), FER7)


def test_names_in_notes_are_shown_escaped() -> None:
    result = read_zip(make_zip({"happy/a.png": png(), "evil\u202egnp.txt": b"x", "x\n.txt": b"y"}), FER7)
    note = next(n for n in result.notes if n.startswith("Not images"))
    assert "\u202e" not in note and "\n" not in note and "\\u202e" in note


# --- scoring --------------------------------------------------------------------------

# By hand, classes (angry, happy, sad); None: no answer.
#   angry: angry, angry, happy, None   happy: happy x3, sad   sad: sad, angry, None
HAND_TRUE = ["angry"] * 4 + ["happy"] * 4 + ["sad"] * 3
HAND_PRED = ["angry", "angry", "happy", None, "happy", "happy", "happy", "sad", "sad", "angry", None]
HAND_CLASSES = ("angry", "happy", "sad")


def test_scores_match_a_hand_count() -> None:
    result = score(HAND_TRUE, HAND_PRED, HAND_CLASSES)
    np.testing.assert_array_equal(result.confusion, [[2, 1, 0], [0, 3, 1], [1, 0, 1]])
    np.testing.assert_array_equal(result.unclassified, [1, 0, 1])
    assert (result.images, result.classified, result.unclassified_count, result.correct) == (11, 9, 2, 6)
    assert result.accuracy == pytest.approx(6 / 11)  # no answer counts as wrong
    assert result.accuracy_classified == pytest.approx(6 / 9)
    expected = {  # precision over the answers given, recall over every image of the class
        "angry": (Fraction(2, 3), Fraction(2, 4), Fraction(4, 7), 4),
        "happy": (Fraction(3, 4), Fraction(3, 4), Fraction(3, 4), 4),
        "sad": (Fraction(1, 2), Fraction(1, 3), Fraction(2, 5), 3),
    }
    for name, (precision, recall, f1, support) in expected.items():
        got = result.per_class[name]
        assert got["precision"] == pytest.approx(float(precision)), name
        assert got["recall"] == pytest.approx(float(recall)), name
        assert got["f1"] == pytest.approx(float(f1)), name
        assert got["support"] == support, name
    assert result.macro_f1 == pytest.approx(241 / 420)  # (4/7 + 3/4 + 2/5) / 3


def test_macro_f1_leaves_out_only_classes_never_seen() -> None:
    absent = score(HAND_TRUE, HAND_PRED, (*HAND_CLASSES, "surprise"))
    assert absent.macro_f1 == pytest.approx(241 / 420)
    assert absent.per_class["surprise"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    # Predicted once, wrongly: its F1 of 0 counts.
    wrongly = score(HAND_TRUE + ["sad"], HAND_PRED + ["surprise"], (*HAND_CLASSES, "surprise"))
    sad = wrongly.per_class["sad"]["f1"]
    assert sad == pytest.approx(2 * (1 / 2) * (1 / 4) / (1 / 2 + 1 / 4))
    assert wrongly.macro_f1 == pytest.approx((4 / 7 + 3 / 4 + sad + 0.0) / 4)


def test_no_answer_at_all_scores_zero_and_nan() -> None:
    result = score(["happy", "sad"], [None, None], HAPPY_SAD)
    assert result.accuracy == 0.0 and math.isnan(result.accuracy_classified)
    assert result.macro_f1 == 0.0 and result.classified == 0


def test_a_perfect_set_scores_one() -> None:
    result = score(["happy", "sad", "sad"], ["happy", "sad", "sad"], HAPPY_SAD)
    assert result.accuracy == result.accuracy_classified == result.macro_f1 == 1.0


@pytest.mark.parametrize(
    ("true", "predicted", "classes", "message"),
    [
        (["happy"], [], HAPPY_SAD, "1 labels but 0 predictions"),
        ([], [], HAPPY_SAD, "no images"),
        (["angry"], ["happy"], HAPPY_SAD, "label 'angry'"),
        (["happy"], ["angry"], HAPPY_SAD, "prediction 'angry'"),
        (["happy"], ["happy"], ("happy", "happy"), "distinct"),
        (["happy"], ["happy"], ("happy", ""), "non-empty"),
    ],
)
def test_score_refuses_inputs_that_do_not_fit(true, predicted, classes, message) -> None:
    with pytest.raises(ValueError, match=message):
        score(true, predicted, classes)


def test_the_per_face_frame() -> None:
    frame = per_face_frame(
        ["happy/a.png", "sad/b.png", "sad/c.png"], ["happy", "sad", "sad"],
        ["happy", "happy", None], [0.91234567, 0.6, None], ["", "", "No face found."],
    )
    assert tuple(frame.columns) == PER_FACE_COLUMNS
    assert frame["predicted class"].tolist() == ["happy", "happy", ""]
    assert frame["correct"].tolist() == [True, False, False] and frame["correct"].dtype == bool
    assert frame["top probability"].iloc[0] == 0.9123 and math.isnan(frame["top probability"].iloc[2])
    assert frame["message"].tolist() == ["", "", "No face found."]
    assert per_face_frame(["a"], ["happy"], ["happy"], [0.5])["message"].tolist() == [""]
    with pytest.raises(ValueError, match="one entry per file"):
        per_face_frame(["a", "b"], ["happy"], ["happy"], [0.5])


def test_the_per_class_frame() -> None:
    frame = per_class_frame(score(HAND_TRUE, HAND_PRED, HAND_CLASSES))
    assert frame["class"].tolist() == list(HAND_CLASSES)
    assert frame["images"].tolist() == [4, 4, 3] and frame["unclassified"].tolist() == [1, 0, 1]
    assert frame["recall"].tolist() == pytest.approx([1 / 2, 3 / 4, 1 / 3])


def test_the_confusion_png_is_inspects_figure(monkeypatch: pytest.MonkeyPatch) -> None:
    drawn = {}
    real = set_score.confusion_figure

    def spy(matrix, classes, **kwargs):
        drawn.update(matrix=np.asarray(matrix), classes=list(classes), **kwargs)
        return real(matrix, classes, **kwargs)

    monkeypatch.setattr(set_score, "confusion_figure", spy)
    result = score(HAND_TRUE, HAND_PRED, HAND_CLASSES)
    png_bytes = set_score.confusion_png(result)
    assert png_bytes.startswith(b"\x89PNG\r\n\x1a\n")
    np.testing.assert_array_equal(drawn["matrix"], result.confusion)
    assert drawn["classes"] == list(HAND_CLASSES)
    assert drawn["title"] == "9 classified images; 2 without an answer not shown"
    assert Image.open(io.BytesIO(png_bytes)).size[0] > 300
