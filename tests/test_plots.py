"""Unit tests of the Inspect figure functions on small synthetic runs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from synthetic_runs import confusion, history_rows

from ferdash import plots


def _lines(ax, gid: str) -> list:
    return [ln for ln in ax.get_lines() if ln.get_gid() == gid]


def _history(epochs: int = 6, seed: int = 0, **kw) -> pd.DataFrame:
    return pd.DataFrame(history_rows(epochs, seed=seed, **kw))


def test_history_one_run_has_train_and_val_curves_and_lr_panel() -> None:
    fig = plots.history_figure({"run-a": _history()}, {"run-a": 3})
    assert isinstance(fig, Figure)
    ax_loss, ax_acc, ax_lr = fig.axes
    assert [ax.get_title() for ax in fig.axes] == ["Loss", "Accuracy", "Learning rate"]
    for ax in (ax_loss, ax_acc):
        assert len(_lines(ax, "train")) == 1
        assert len(_lines(ax, "val")) == 1
        assert ax.get_xlabel() == "epoch"
        # The kept epoch: a star on the validation curve and a vertical line, drawn 1-based.
        (star,) = _lines(ax, "best")
        assert list(star.get_xdata()) == [4]
        assert len(_lines(ax, "best-epoch")) == 1
    (train,) = _lines(ax_loss, "train")
    assert list(train.get_xdata()) == [1, 2, 3, 4, 5, 6]
    assert len(_lines(ax_lr, "lr")) == 1
    labels = [t.get_text() for t in ax_loss.get_legend().get_texts()]
    assert labels == ["run-a train", "run-a val", "run-a kept epoch 4"]


def test_history_overlays_several_runs_on_the_same_axes() -> None:
    histories = {"a": _history(6, 0), "b": _history(9, 1), "c": _history(4, 2, with_lr=False)}
    fig = plots.history_figure(histories, {"a": 2, "b": None, "c": 1})
    ax_loss, ax_acc, ax_lr = fig.axes
    for ax in (ax_loss, ax_acc):
        assert len(_lines(ax, "train")) == 3
        assert len(_lines(ax, "val")) == 3
        assert len(_lines(ax, "best")) == 2
    # Only the runs that logged a learning rate have a line there.
    assert len(_lines(ax_lr, "lr")) == 2
    colours = {tuple(ln.get_color()) if not isinstance(ln.get_color(), str) else ln.get_color()
               for ln in _lines(ax_loss, "train")}
    assert len(colours) == 3


def test_history_without_lr_or_validation() -> None:
    frame = _history(5, with_lr=False)[["epoch", "loss", "accuracy"]]
    fig = plots.history_figure({"x": frame})
    assert len(fig.axes) == 2
    ax_loss, ax_acc = fig.axes
    assert len(_lines(ax_loss, "train")) == 1
    assert _lines(ax_loss, "val") == [] and _lines(ax_loss, "best") == []


def test_history_reads_lr_column_named_lr() -> None:
    fig = plots.history_figure({"x": _history(5, lr_column="lr")})
    assert len(fig.axes) == 3
    assert len(_lines(fig.axes[2], "lr")) == 1


def test_history_best_epoch_outside_history_is_not_drawn() -> None:
    fig = plots.history_figure({"x": _history(5)}, {"x": 42})
    assert _lines(fig.axes[0], "best") == []


def test_normalize_rows_sums_to_one_and_keeps_empty_rows_zero() -> None:
    m = np.array([[3, 1, 0], [0, 0, 0], [2, 2, 4]])
    norm = plots.normalize_rows(m)
    assert norm[0].sum() == pytest.approx(1.0)
    assert norm[2].sum() == pytest.approx(1.0)
    assert norm[1].tolist() == [0.0, 0.0, 0.0]
    assert norm[2, 2] == pytest.approx(0.5)


@pytest.mark.parametrize("classes", [("happy", "sad"), ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")])
def test_confusion_counts_has_one_number_per_cell_and_class_labels(classes) -> None:
    m = confusion(classes, per_class=10, seed=3)
    fig = plots.confusion_figure(m, classes)
    (ax,) = fig.axes
    texts = [t.get_text() for t in ax.texts]
    assert len(texts) == len(classes) ** 2
    assert texts == [str(int(v)) for v in m.ravel()]
    assert [t.get_text() for t in ax.get_xticklabels()] == list(classes)
    assert [t.get_text() for t in ax.get_yticklabels()] == list(classes)
    assert ax.get_xlabel() == "predicted class" and ax.get_ylabel() == "true class"
    assert ax.images[0].get_array().shape == (len(classes), len(classes))


def test_confusion_normalised_rows_sum_to_one() -> None:
    classes = ("a", "b", "c")
    m = np.array([[5, 3, 2], [1, 8, 1], [0, 0, 4]])
    fig = plots.confusion_figure(m, classes, normalize=True, title="T")
    (ax,) = fig.axes
    shown = np.asarray(ax.images[0].get_array())
    assert np.allclose(shown.sum(axis=1), 1.0)
    values = np.array([float(t.get_text()) for t in ax.texts]).reshape(3, 3)
    assert np.allclose(values.sum(axis=1), 1.0, atol=0.02)
    assert ax.texts[0].get_text() == "0.50"
    assert ax.get_title() == "T"


def test_class_recall_one_panel_per_run_one_line_per_class_same_colour_per_class() -> None:
    seven = ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"]
    histories = {
        "fer7": _history(8, 0, recall_of=seven),
        "happy_sad": _history(5, 1, recall_of=["happy", "sad"]),
    }
    fig = plots.class_recall_figure(
        histories, {"fer7": seven, "happy_sad": ["happy", "sad"]}, {"fer7": 5, "happy_sad": None}
    )
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in visible] == [
        "fer7: validation recall per class", "happy_sad: validation recall per class"
    ]
    first, second = visible
    assert [ln.get_label() for ln in _lines(first, "recall")] == seven
    assert [ln.get_label() for ln in _lines(second, "recall")] == ["happy", "sad"]
    # The validation column is drawn, epochs counted from 1; the kept epoch (5) 1-based.
    fear = _lines(first, "recall")[2]
    np.testing.assert_allclose(fear.get_ydata(), histories["fer7"]["val_recall_fear"])
    assert list(fear.get_xdata()) == list(range(1, 9))
    assert [ln.get_xdata()[0] for ln in _lines(first, "best-epoch")] == [6]
    assert _lines(second, "best-epoch") == []
    colour = {ln.get_label(): ln.get_color() for ln in _lines(first, "recall")}
    for ln in _lines(second, "recall"):
        assert ln.get_color() == colour[ln.get_label()]
    assert len({str(c) for c in colour.values()}) == 7


def test_class_recall_wraps_runs_three_to_a_row() -> None:
    classes = ["a", "b"]
    histories = {f"r{i}": _history(4, i, recall_of=classes) for i in range(4)}
    fig = plots.class_recall_figure(histories, {n: classes for n in histories})
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert len(visible) == 4 and len(fig.axes) == 6  # a 2x3 grid, two panels hidden
    assert all(len(_lines(ax, "recall")) == 2 for ax in visible)


def test_reliability_diagram_draws_each_filled_bin_its_gap_and_the_counts() -> None:
    count = [0] * 10 + [3, 0, 5, 8, 20]
    accuracy = [float("nan")] * 10 + [0.3, float("nan"), 0.6, 0.7, 0.9]
    confidence = [float("nan")] * 10 + [0.7, float("nan"), 0.83, 0.9, 0.97]
    fig = plots.reliability_figure(count, accuracy, confidence, before=(confidence, accuracy),
                                   title="r: ECE 0.1")
    ax, ax_count = fig.axes
    bars = [p for p in ax.patches if p.get_gid() == "accuracy"]
    assert [round(b.get_height(), 2) for b in bars] == [0.3, 0.6, 0.7, 0.9]
    assert len(_lines(ax, "gap")) == 4 and len(_lines(ax, "diagonal")) == 1
    assert len(_lines(ax, "before")[0].get_xdata()) == 4
    assert [int(p.get_height()) for p in ax_count.patches if p.get_gid() == "count"] == count
    assert ax.get_title() == "r: ECE 0.1"
    # Without the unscaled points (a run with no temperature), nothing but the bins.
    assert not _lines(plots.reliability_figure(count, accuracy, confidence).axes[0], "before")
    with pytest.raises(ValueError, match="one value per bin"):
        plots.reliability_figure(count, accuracy[:3], confidence)
