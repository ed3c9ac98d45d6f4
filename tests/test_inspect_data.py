"""Unit tests of the Inspect data layer: cached readers, tables, gallery paths."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pandas as pd
import pytest
from synthetic_runs import history_rows, make_broken_run, make_run, write_history

from ferdash import inspect_data as idata
from ferdash.runs.rundir import discover_runs, file_stamp, read_evaluation


@pytest.fixture(autouse=True)
def _fresh_caches():
    idata.clear_caches()
    yield
    idata.clear_caches()


def test_history_is_cached_until_the_file_changes(tmp_path: Path) -> None:
    run = make_run(tmp_path, "r", epochs=4, evaluation=False)
    first = idata.load_history(run)
    assert first.ok and len(first.value) == 4
    assert idata.load_history(run) is first  # same object: not parsed again
    write_history(run, history_rows(6))
    # Make sure the new file version gets a new stamp even on coarse-mtime file systems.
    st = (run / "history.csv").stat()
    os.utime(run / "history.csv", ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    second = idata.load_history(run)
    assert second is not first and len(second.value) == 6


def test_file_stamp_changes_with_the_file_and_is_none_when_missing(tmp_path: Path) -> None:
    path = tmp_path / "f.txt"
    assert file_stamp(path) is None
    path.write_text("abc")
    st = path.stat()
    assert file_stamp(path) == file_stamp(str(path)) == (st.st_mtime_ns, 3)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert file_stamp(path) == (st.st_mtime_ns + 1_000_000_000, 3)


def test_missing_and_malformed_files_give_messages(tmp_path: Path) -> None:
    run = make_run(tmp_path, "r", history=False, evaluation=False)
    assert "history.csv is missing" in idata.load_history(run).error
    assert "evaluation.json is missing" in idata.load_evaluation(run).error
    bad = make_broken_run(tmp_path, "bad-eval", "evaluation")
    assert "not valid JSON" in idata.load_evaluation(bad).error
    bad_hist = make_broken_run(tmp_path, "bad-hist", "history")
    assert "non-numeric" in idata.load_history(bad_hist).error


def test_best_epoch_prefers_run_json_then_val_accuracy_then_val_loss() -> None:
    h = pd.DataFrame({"epoch": [0, 1, 2], "val_accuracy": [0.2, 0.5, 0.4], "val_loss": [3, 1, 2]})
    assert idata.best_epoch(h, {"best_epoch": 2}) == (2, "run.json best_epoch")
    assert idata.best_epoch(h, {"best_epoch": 9})[0] == 1  # not an epoch of the history
    assert idata.best_epoch(h, {})[0] == 1
    only_loss = pd.DataFrame({"epoch": [0, 1, 2], "val_loss": [3.0, 2.0, 2.5]})
    assert idata.best_epoch(only_loss)[0] == 1
    assert idata.best_epoch(pd.DataFrame({"epoch": [0], "loss": [1.0]}))[0] is None


def test_comparison_frame_lists_every_run_with_its_problems(tmp_path: Path) -> None:
    make_run(tmp_path, "a-seven", seed=1, parameters=1000, best_epoch=5)
    make_run(tmp_path, "b-happy-sad", classes=("happy", "sad"), seed=2, architecture="tiny")
    make_broken_run(tmp_path, "c-broken", "run-json")
    make_run(tmp_path, "d-no-eval", evaluation=False)
    frame = idata.comparison_frame(discover_runs(tmp_path))
    assert list(frame["run"]) == ["a-seven", "b-happy-sad", "c-broken", "d-no-eval"]
    a = frame.iloc[0]
    assert a["architecture"] == "fernet" and a["parameters"] == 1000 and a["classes"] == 7
    assert a["input size"] == "48×48" and a["epochs"] == 8 and a["best epoch"] == 6
    ev = read_evaluation(tmp_path / "a-seven")
    assert a["eval acc %"] == round(100 * ev.accuracy, 1)
    assert a["recall sad %"] == round(100 * ev.per_class["sad"]["recall"], 1)
    assert "recall angry %" in frame.columns
    b = frame.iloc[1]
    assert math.isnan(b["recall angry %"]) and not math.isnan(b["recall happy %"])
    c = frame.iloc[2]
    assert c["problems"] == "run.json is not valid JSON; evaluation.json is missing; no model.keras"
    assert c["epochs"] == 4  # history still read although run.json is broken
    d = frame.iloc[3]
    assert d["problems"] == "evaluation.json is missing; no model.keras"
    assert math.isnan(d["eval acc %"])
    assert "no model.keras" in a["problems"]


def test_per_class_frame_uses_stored_metrics(tmp_path: Path) -> None:
    run = make_run(tmp_path, "r", classes=("happy", "sad"))
    ev = read_evaluation(run)
    frame = idata.per_class_frame(ev)
    assert list(frame["class"]) == ["happy", "sad"]
    assert frame.loc[0, "recall"] == ev.per_class["happy"]["recall"]
    assert frame["support"].sum() == ev.image_count


def test_gallery_root_override_and_reasons(tmp_path: Path) -> None:
    data = tmp_path / "data"
    run = make_run(tmp_path / "models", "r", data_dir=data)
    ev = read_evaluation(run)
    assert idata.gallery_root(ev, None, run).path == data.resolve()
    other = tmp_path / "elsewhere"
    other.mkdir()
    root = idata.gallery_root(ev, other, run)
    assert root.path == other.resolve() and root.source == "FERDASH_DATA_DIR"
    missing = idata.gallery_root(ev, tmp_path / "nope", run)
    assert missing.path is None and "FERDASH_DATA_DIR" in missing.problem
    gone = make_run(tmp_path / "models", "gone", data_dir=tmp_path / "not-here", write_faces=False)
    reason = idata.gallery_root(read_evaluation(gone), None, gone)
    assert reason.path is None and "not on this machine" in reason.problem


def test_gallery_root_reads_a_relative_data_dir_from_the_run_folder(tmp_path: Path) -> None:
    # Shipped runs say "../../../shared/..." so that they work in any checkout.
    data = tmp_path / "shared" / "val"
    data.mkdir(parents=True)
    run = make_run(tmp_path / "repo" / "models", "r", data_dir=data, write_faces=False)
    ev = read_evaluation(run)
    assert ev.data_dir == "../../../shared/val"  # written relative to the run folder
    assert idata.gallery_root(ev, None, run).path == data.resolve()


def test_safe_image_path_refuses_to_leave_the_data_folder(tmp_path: Path) -> None:
    root = tmp_path / "data"
    (root / "happy").mkdir(parents=True)
    (root / "happy" / "x.png").write_bytes(b"")
    secret = tmp_path / "secret.txt"
    secret.write_text("s")
    (root / "link").symlink_to(secret)
    assert idata.safe_image_path(root, "happy/x.png") == (root / "happy" / "x.png").resolve()
    for bad in ("../secret.txt", str(secret), "happy/../../secret.txt", "link", "", None, 3, ".", "a\x00b"):
        assert idata.safe_image_path(root, bad) is None, bad


def test_mistakes_filter_and_malformed_entries(tmp_path: Path) -> None:
    run = make_run(tmp_path, "r", per_class=30)
    ev = read_evaluation(run)
    mistakes, bad = idata.misclassified_entries(ev)
    assert bad == 0 and len(mistakes) == len(ev.misclassified)
    sad = idata.filter_mistakes(mistakes, "sad", None)
    assert sad and all(m.true == "sad" for m in sad)
    probs = [m.probability for m in sad]
    assert probs == sorted(probs, reverse=True)
    pair = idata.filter_mistakes(mistakes, "sad", "happy")
    assert all(m.true == "sad" and m.predicted == "happy" for m in pair)
    assert len(idata.filter_mistakes(mistakes, "", None)) == len(mistakes)
    ev.misclassified.extend([{"file": 3}, "junk", {"true": "sad"}])
    assert idata.misclassified_entries(ev)[1] == 3


def test_thumbnail_uri(tmp_path: Path) -> None:
    data = tmp_path / "data"
    run = make_run(tmp_path / "m", "r", data_dir=data, classes=("happy", "sad"), per_class=10)
    file = read_evaluation(run).misclassified[0]["file"]
    uri = idata.thumbnail_uri(data / file)
    assert uri and uri.startswith("data:image/png;base64,")
    not_image = data / "notes.png"
    not_image.write_text("hello")
    assert idata.thumbnail_uri(not_image) is None
    assert idata.thumbnail_uri(data / "missing.png") is None


def test_no_runs_message_says_how_to_train() -> None:
    msg = idata.no_runs_message([Path("/x/models")])
    assert "/x/models" in msg and "python -m training train --data DIR --arch fernet --out models/NAME" in msg


def test_selector_choices_name_the_folder_only_where_two_runs_share_a_name() -> None:
    from pathlib import Path

    from ferdash.inspect_data import selector_choices

    runs = [
        (Path("/a/models/fer7"), "fer7", "fer7 (fernet, 7 classes)"),
        (Path("/b/runs/fer7"), "fer7", "fer7 (fernet, 3 classes)"),
        (Path("/a/models/happy_sad"), "happy_sad", "happy_sad (fernet, 2 classes)"),
    ]
    assert selector_choices(runs) == {
        "/a/models/fer7": "fer7 (fernet, 7 classes) — /a/models",
        "/b/runs/fer7": "fer7 (fernet, 3 classes) — /b/runs",
        "/a/models/happy_sad": "happy_sad (fernet, 2 classes)",
    }


def test_calibration_is_read_from_the_evaluation_and_shown_in_the_runs_table(tmp_path: Path) -> None:
    calibrated = make_run(tmp_path, "a-calibrated", temperature=2.0)
    make_run(tmp_path, "b-plain")
    figures = idata.calibration_of(read_evaluation(calibrated))
    assert figures is not None and figures.temperature == 2.0
    assert figures.before.bins == figures.after.bins == 15
    assert sum(figures.after.count) == 500
    assert figures.ece == figures.ece_after < figures.ece_before
    assert idata.calibration_of(read_evaluation(tmp_path / "b-plain")) is None

    frame = idata.comparison_frame(discover_runs(tmp_path))
    # What a user compares leads the table.
    assert list(frame.columns[:6]) == ["run", "problems", "eval split", "eval acc %", "macro F1", "ECE"]
    assert frame.iloc[0]["ECE"] == round(figures.ece_after, 4)
    assert frame.iloc[0]["temperature"] == 2.0
    assert math.isnan(frame.iloc[1]["ECE"]) and math.isnan(frame.iloc[1]["temperature"])


@pytest.mark.parametrize(
    "damage",
    [
        lambda c: c.update(bins="15"),
        lambda c: c.update(bins=0),
        lambda c: c["reliability_after"].update(count=[1, 2]),
        lambda c: c["reliability_after"].update(count=[-1] * 15),
        lambda c: c["reliability_before"].update(accuracy="high"),
        lambda c: c.update(temperature=float("inf")),
        lambda c: c.pop("reliability_before"),
    ],
)
def test_malformed_calibration_figures_are_not_drawn(tmp_path: Path, damage) -> None:
    run = make_run(tmp_path, "r", temperature=2.0)
    path = run / "evaluation.json"
    data = json.loads(path.read_text())
    damage(data["calibration"])
    path.write_text(json.dumps(data))
    assert idata.calibration_of(read_evaluation(run)) is None


def test_discovering_runs_in_unreadable_folders_lists_nothing_and_raises_nothing(tmp_path: Path) -> None:
    make_run(tmp_path / "runs", "a")
    roots = [tmp_path / ("x" * 300), tmp_path / "missing", str(tmp_path) + "/bad\x00name", tmp_path / "runs"]
    assert [r.name for r in discover_runs(*roots)] == ["a"]


def test_the_runs_signature_changes_with_a_run_and_survives_unreadable_folders(tmp_path: Path) -> None:
    from ferdash.runs.rundir import runs_signature

    roots = [tmp_path / "runs", tmp_path / ("x" * 300), str(tmp_path) + "/bad\x00name"]
    before = runs_signature(roots)
    make_run(tmp_path / "runs", "a")
    after = runs_signature(roots)
    assert after != before and any("a" == Path(entry[0]).name for entry in after if len(entry) > 2)


def test_predict_and_inspect_open_on_the_same_run(tmp_path: Path) -> None:
    from ferdash.prediction import MODE_FER7, default_run
    from ferdash.runs.rundir import DEFAULT_RUN_NAME, preferred_run

    make_run(tmp_path / "mine", "a-first")
    make_run(tmp_path / "mine", DEFAULT_RUN_NAME, classes=("happy", "sad"))  # a namesake
    make_run(tmp_path / "shipped", DEFAULT_RUN_NAME)
    infos = [r.info for r in discover_runs(tmp_path / "mine", tmp_path / "shipped")]
    chosen = preferred_run(infos, DEFAULT_RUN_NAME)
    assert chosen.path == tmp_path / "shipped" / DEFAULT_RUN_NAME  # the seven-class one
    assert default_run([i for i in infos if not i.is_happy_sad], MODE_FER7).path == chosen.path
    assert preferred_run(infos[:1], DEFAULT_RUN_NAME).name == "a-first"
    assert preferred_run([], DEFAULT_RUN_NAME) is None
