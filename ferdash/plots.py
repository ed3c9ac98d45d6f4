"""Every figure of the dashboard, as pure functions returning matplotlib Figures.

No Shiny here: each function takes plain data and returns a new Figure, so tests can
count its bars, lines, cells and labels.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .runs.rundir import accuracy_columns, lr_column

# Figures are only ever rendered to PNG bytes, in worker threads: no GUI backend.
matplotlib.use("Agg")


# --- Inspect: training history and confusion matrix ------------------------------------


def _accuracy_metric(history: pd.DataFrame) -> str | None:
    """The accuracy metric's name (``accuracy``, ``acc``, ...), logged for training or validation."""
    train, val = accuracy_columns(history)
    return train or (val.removeprefix("val_") if val else None)


def history_figure(
    histories: Mapping[str, pd.DataFrame],
    best_epochs: Mapping[str, int | None] | None = None,
) -> Figure:
    """Loss and accuracy per epoch, training (solid) vs validation (dashed), one colour per run.

    ``histories`` maps a run name to its ``history.csv`` frame (Keras CSVLogger columns);
    ``best_epochs`` maps a run name to the kept epoch, in the frame's ``epoch`` numbering.
    Epochs are drawn counted from 1 (CSVLogger counts from 0). The kept epoch is a
    star on each validation curve and a dotted vertical line. A third panel shows the
    learning rate when any run logged it (``learning_rate`` or ``lr``).

    Lines carry a gid (``train``, ``val``, ``best``, ``best-epoch``, ``lr``) so tests
    can count them.
    """
    best_epochs = best_epochs or {}
    with_lr = any(lr_column(h) for h in histories.values())
    ncols = 3 if with_lr else 2
    fig = Figure(figsize=(4.2 * ncols, 4.0), layout="tight")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    ax_loss, ax_acc = axes[0], axes[1]
    colours = matplotlib.colormaps["tab10"].colors

    for i, (name, history) in enumerate(histories.items()):
        colour = colours[i % len(colours)]
        x = history["epoch"].to_numpy() + 1
        best = best_epochs.get(name)
        acc = _accuracy_metric(history)
        for ax, metric in ((ax_loss, "loss"), (ax_acc, acc)):
            if metric is None:
                continue
            for column, split, style in ((metric, "train", "-"), (f"val_{metric}", "val", "--")):
                if column not in history.columns:
                    continue
                (line,) = ax.plot(
                    x, history[column].to_numpy(), style, color=colour, label=f"{name} {split}"
                )
                line.set_gid(split)
                if split == "val" and best is not None and (history["epoch"] == best).any():
                    y = float(history.loc[history["epoch"] == best, column].iloc[0])
                    (star,) = ax.plot(
                        [best + 1], [y], "*", color=colour, markersize=13,
                        markeredgecolor="black", label=f"{name} kept epoch {best + 1}",
                    )
                    star.set_gid("best")
            if best is not None and (history["epoch"] == best).any():
                ax.axvline(best + 1, color=colour, linestyle=":", linewidth=1).set_gid("best-epoch")
        if with_lr:
            lr = lr_column(history)
            if lr is not None:
                (line,) = axes[2].plot(x, history[lr].to_numpy(), "-", color=colour, label=name)
                line.set_gid("lr")

    ax_loss.set_title("Loss")
    ax_loss.set_ylabel("loss")
    ax_acc.set_title("Accuracy")
    ax_acc.set_ylabel("accuracy")
    if with_lr:
        ax_lr = axes[2]
        ax_lr.set_title("Learning rate")
        ax_lr.set_ylabel("learning rate")
        values = np.concatenate([ln.get_ydata() for ln in ax_lr.get_lines()] or [np.array([])])
        positive = values[values > 0] if values.size else values
        # A schedule spanning orders of magnitude is unreadable on a linear axis.
        if positive.size and positive.max() / positive.min() >= 100:
            ax_lr.set_yscale("log")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(True, alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
        if not ax.get_lines():
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes,
                    color="grey")
    if ax_loss.get_lines():
        # "best": a rising validation loss (overfitting) fills the upper right corner
        # that a falling loss leaves free.
        ax_loss.legend(fontsize="small", loc="best", framealpha=0.85)
    return fig


#: Runs side by side in :func:`class_recall_figure`, before it starts a new row.
RECALL_PANELS_PER_ROW = 3


def class_recall_figure(
    histories: Mapping[str, pd.DataFrame],
    classes: Mapping[str, Sequence[str]],
    best_epochs: Mapping[str, int | None] | None = None,
) -> Figure:
    """Validation recall of each class per epoch: one panel per run, one line per class.

    ``histories`` holds only runs whose ``history.csv`` logged per-class recall
    (:func:`ferdash.runs.rundir.class_recall_metrics`); ``classes`` gives each run's classes.
    A class keeps its colour in every panel, so runs compare class by class. The kept
    epoch is a dotted vertical line, as in :func:`history_figure`. Lines carry the gid
    ``recall`` (and ``best-epoch``) so tests can count them.
    """
    from .runs.rundir import class_recall_metrics

    best_epochs = best_epochs or {}
    palette = matplotlib.colormaps["tab10"].colors
    colour_of: dict[str, tuple] = {}
    for names in classes.values():
        for c in names:
            colour_of.setdefault(c, palette[len(colour_of) % len(palette)])
    n = max(1, len(histories))
    ncols = min(n, RECALL_PANELS_PER_ROW)
    nrows = -(-n // ncols)
    fig = Figure(figsize=(4.6 * ncols, 3.6 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, (name, history) in zip(axes, histories.items()):
        x = history["epoch"].to_numpy() + 1
        for c, metric in class_recall_metrics(list(classes[name])).items():
            column = f"val_{metric}"
            if column in history.columns:
                (line,) = ax.plot(x, history[column].to_numpy(), "-", color=colour_of[c], label=c)
                line.set_gid("recall")
        best = best_epochs.get(name)
        if best is not None and (history["epoch"] == best).any():
            ax.axvline(best + 1, color="black", linestyle=":", linewidth=1).set_gid("best-epoch")
        ax.set_title(f"{name}: validation recall per class")
        ax.set_xlabel("epoch")
        ax.set_ylabel("recall")
        ax.set_ylim(0, 1)
        ax.grid(True, alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.legend(fontsize="small", loc="lower right", framealpha=0.85, ncols=2)
    for ax in axes[len(histories):]:
        ax.set_visible(False)
    return fig


def normalize_rows(matrix: np.ndarray) -> np.ndarray:
    """Each row divided by its sum (recall on the diagonal); an empty row stays zeros."""
    m = np.asarray(matrix, dtype=float)
    sums = m.sum(axis=1, keepdims=True)
    return np.divide(m, sums, out=np.zeros_like(m), where=sums > 0)


def confusion_figure(
    matrix: np.ndarray,
    classes: Sequence[str],
    *,
    normalize: bool = False,
    title: str | None = None,
) -> Figure:
    """Heatmap of a confusion matrix (rows = true class, columns = predicted), numbers in cells.

    ``normalize`` divides each row by its count, so a cell reads "share of this true
    class predicted as that class". One Axes only and no colour bar: the panel maps
    clicks on the image back to (true, predicted) cells.
    """
    counts = np.asarray(matrix)
    values = normalize_rows(counts) if normalize else counts.astype(float)
    n = len(classes)
    side = max(4.5, 0.75 * n + 2.5)
    fig = Figure(figsize=(side + 0.5, side), layout="tight")
    ax = fig.subplots()
    vmax = 1.0 if normalize else max(float(values.max()), 1.0)
    ax.imshow(values, cmap="Blues", vmin=0.0, vmax=vmax, interpolation="nearest")
    for i in range(n):
        for j in range(n):
            text = f"{values[i, j]:.2f}" if normalize else f"{int(counts[i, j])}"
            dark = values[i, j] > 0.55 * vmax
            ax.text(j, i, text, ha="center", va="center", fontsize=9,
                    color="white" if dark else "black")
    ax.set_xticks(range(n), labels=list(classes), rotation=40, ha="right")
    ax.set_yticks(range(n), labels=list(classes))
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title or ("Confusion matrix (row-normalised)" if normalize else "Confusion matrix (counts)"))
    return fig


# --- Inspect: calibration -------------------------------------------------------------


def reliability_figure(
    count: Sequence[int],
    accuracy: Sequence[float],
    confidence: Sequence[float],
    *,
    before: tuple[Sequence[float], Sequence[float]] | None = None,
    title: str | None = None,
) -> Figure:
    """Reliability diagram: accuracy per equal-width confidence bin against the diagonal
    of perfect calibration, and below it how many faces fell in each bin.

    ``count``, ``accuracy`` and ``confidence`` are per bin (nan for an empty bin), as
    evaluation.json stores them; ``before`` is the (confidence, accuracy) per bin of the
    unscaled probabilities, drawn as points for comparison. A bar under the diagonal
    is an over-confident bin. Artists carry gids (``accuracy``, ``gap``, ``before``,
    ``diagonal``, ``count``) so tests can count them.
    """
    bins = len(count)
    if not (len(accuracy) == len(confidence) == bins):
        raise ValueError("count, accuracy and confidence must have one value per bin")
    width = 1.0 / bins
    centres = (np.arange(bins) + 0.5) * width
    filled = [i for i in range(bins) if count[i] > 0 and np.isfinite(accuracy[i])]
    fig = Figure(figsize=(5.6, 5.4), layout="constrained")
    ax, ax_count = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": (3, 1)})
    ax.plot([0, 1], [0, 1], ":", color="grey", label="perfect calibration")[0].set_gid("diagonal")
    bars = ax.bar(
        [centres[i] for i in filled], [accuracy[i] for i in filled], width=width * 0.95,
        color="#2c7fb8", edgecolor="white", label="accuracy",
    )
    for bar in bars:
        bar.set_gid("accuracy")
    # The gap of each bin: from its accuracy to its mean confidence.
    for i in filled:
        if np.isfinite(confidence[i]):
            ax.plot([centres[i], centres[i]], [accuracy[i], confidence[i]], color="#d95f02",
                    linewidth=2)[0].set_gid("gap")
    if before is not None:
        conf_b, acc_b = before
        points = [(c, a) for c, a in zip(conf_b, acc_b) if np.isfinite(c) and np.isfinite(a)]
        if points:
            xs, ys = zip(*points)
            ax.plot(xs, ys, "o", color="black", markersize=4, markerfacecolor="none",
                    label="before scaling")[0].set_gid("before")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.legend(loc="upper left", fontsize=8, frameon=False)
    if title:
        ax.set_title(title, fontsize=10)
    count_bars = ax_count.bar(centres, list(count), width=width * 0.95, color="#a6bddb")
    for bar in count_bars:
        bar.set_gid("count")
    ax_count.set_xlabel("confidence (top-1 probability)")
    ax_count.set_ylabel("faces")
    for a in (ax, ax_count):
        a.spines[["top", "right"]].set_visible(False)
    return fig


# --- Predict: class probabilities of one image ------------------------------------------

_FloatSequence = Sequence[float]  # numpy arrays are accepted too


def probability_bar_chart(
    classes: list[str] | tuple[str, ...],
    probs: _FloatSequence,
    title: str | None = None,
) -> Figure:
    """Horizontal bars of class probabilities (in %), the top class highlighted.

    Classes keep the model's order, top to bottom, so charts of several images compare
    at a glance.
    """
    values = [float(p) * 100.0 for p in probs]
    if len(values) != len(classes):
        raise ValueError(f"{len(classes)} classes but {len(values)} probabilities")
    top = max(range(len(values)), key=values.__getitem__) if values else -1
    # A pyplot-free Figure: no global figure registry, so concurrent sessions never
    # share state and nothing leaks when the figure is dropped.
    fig = Figure(figsize=(4.2, 0.42 * len(values) + 0.9), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    positions = list(range(len(values)))
    colours = ["#2c7fb8" if i == top else "#a6bddb" for i in positions]
    bars = ax.barh(positions, values, color=colours, height=0.7)
    ax.set_yticks(positions, labels=list(classes))
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("probability (%)")
    for bar, value in zip(bars, values):
        inside = value > 85.0  # no room to the right: write it inside the bar, in white
        ax.text(
            value - 1.5 if inside else value + 1.5,
            bar.get_y() + bar.get_height() / 2,
            f"{value:.0f}%",
            va="center",
            ha="right" if inside else "left",
            color="white" if inside else "black",
            fontsize=9,
        )
    ax.spines[["top", "right"]].set_visible(False)
    if title:
        ax.set_title(title, fontsize=10)
    return fig


def figure_png_bytes(fig: Figure, dpi: int = 100) -> bytes:
    """A figure rendered as PNG bytes (for data-URI images in the page)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()
