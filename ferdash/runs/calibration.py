"""Temperature scaling and the measures of calibration (numpy only).

A network trained with cross-entropy tends to be over-confident: of the faces it calls
"happy, 90%", fewer than 90% are happy. Temperature scaling (Guo et al. 2017, "On
Calibration of Modern Neural Networks") divides the logits by one number T fitted on
validation data to minimise the negative log-likelihood. It changes no prediction (the
order of the classes is kept), only how sure each one claims to be.

The run directories hold softmax outputs, not logits; ``log p`` is the logits up to a
constant per face, which the softmax removes, so scaling ``log p`` by ``1/T`` is exactly
scaling the logits. With test-time augmentation, T applies to the averaged
probabilities: what is fitted is what is applied.

Expected calibration error (ECE): faces split by their top-1 confidence into
:data:`ECE_BINS` equal-width bins; the gap between each bin's mean confidence and its
accuracy, weighted by the bin's share of the faces.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

#: Equal-width confidence bins of the ECE and the reliability diagram.
ECE_BINS = 15
#: Temperatures a run may declare: wide enough for any network, narrow enough that a
#: forged run.json cannot turn every answer into one class at 100% or a uniform guess.
TEMPERATURE_MIN = 0.05
TEMPERATURE_MAX = 20.0
#: Floor of a probability before its log: float32 softmax rounds tiny ones to 0.
_FLOOR = 1e-12


def check_temperature(value: Any) -> float | None:
    """``value`` as a temperature, None when absent; ValueError saying what is wrong."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"'temperature' must be a number, not {value!r}")
    if not TEMPERATURE_MIN <= value <= TEMPERATURE_MAX:
        raise ValueError(
            f"'temperature' {value} is outside {TEMPERATURE_MIN}-{TEMPERATURE_MAX}"
        )
    return float(value)


def apply_temperature(probs: np.ndarray, temperature: float | None) -> np.ndarray:
    """``softmax(log(probs) / T)`` row by row; ``probs`` itself when T is None or 1."""
    probs = np.asarray(probs, dtype=np.float32)
    if temperature is None or temperature == 1.0 or probs.size == 0:
        return probs
    logits = np.log(np.maximum(probs.astype(np.float64), _FLOOR)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    scaled = np.exp(logits)
    scaled /= scaled.sum(axis=1, keepdims=True)
    return scaled.astype(np.float32)


def negative_log_likelihood(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean ``-log p(true class)`` (natural log)."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) == 0:
        return math.nan
    true = probs[np.arange(len(labels)), labels]
    return float(-np.log(np.maximum(true, _FLOOR)).mean())


def fit_temperature(probs: np.ndarray, labels: np.ndarray) -> float:
    """The T in [:data:`TEMPERATURE_MIN`, :data:`TEMPERATURE_MAX`] of least NLL.

    The NLL of temperature-scaled logits is convex in 1/T, hence unimodal in log T: a
    golden-section search on log T finds its minimum to ~1e-6 relative in 60 steps,
    without an optimiser library.
    """
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) == 0:
        raise ValueError("cannot fit a temperature on no images")
    logp = np.log(np.maximum(probs, _FLOOR))
    rows = np.arange(len(labels))

    def nll(log_t: float) -> float:
        z = logp / math.exp(log_t)
        z -= z.max(axis=1, keepdims=True)
        return float((np.log(np.exp(z).sum(axis=1)) - z[rows, labels]).mean())

    lo, hi = math.log(TEMPERATURE_MIN), math.log(TEMPERATURE_MAX)
    ratio = (math.sqrt(5) - 1) / 2
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = nll(a), nll(b)
    for _ in range(60):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = nll(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = nll(b)
    return float(math.exp((lo + hi) / 2))


def reliability(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> dict[str, Any]:
    """Per confidence bin: face count, mean top-1 confidence and accuracy (None when
    empty), and the ECE they add up to."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    confidence = probs.max(axis=1) if len(probs) else np.zeros(0)
    correct = (probs.argmax(axis=1) == labels) if len(probs) else np.zeros(0, bool)
    # Bin i holds (i/bins, (i+1)/bins]; a confidence of exactly 0 (impossible for a
    # softmax top-1) would fall into bin 0.
    index = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)
    counts = np.bincount(index, minlength=bins)
    conf_sum = np.bincount(index, weights=confidence, minlength=bins)
    hit_sum = np.bincount(index, weights=correct.astype(np.float64), minlength=bins)
    total = int(counts.sum())
    ece = 0.0
    mean_conf: list[float | None] = []
    accuracy: list[float | None] = []
    for n, c, h in zip(counts, conf_sum, hit_sum):
        if n == 0:
            mean_conf.append(None)
            accuracy.append(None)
            continue
        mean_conf.append(round(float(c / n), 6))
        accuracy.append(round(float(h / n), 6))
        ece += (n / total) * abs(c / n - h / n)
    return {
        "bins": bins,
        "count": [int(n) for n in counts],
        "confidence": mean_conf,
        "accuracy": accuracy,
        "ece": float(ece) if total else math.nan,
    }


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    return reliability(probs, labels, bins)["ece"]


def calibration_report(
    raw: np.ndarray, labels: np.ndarray, temperature: float | None
) -> dict[str, Any]:
    """What ``evaluation.json`` records under "calibration": ECE and NLL of the
    unscaled and the scaled probabilities, and both reliability tables."""
    scaled = apply_temperature(raw, temperature)
    before = reliability(raw, labels)
    after = reliability(scaled, labels)
    return {
        "temperature": temperature,
        "bins": ECE_BINS,
        "ece_before": before["ece"],
        "ece_after": after["ece"],
        "nll_before": negative_log_likelihood(raw, labels),
        "nll_after": negative_log_likelihood(scaled, labels),
        "reliability_before": {k: before[k] for k in ("count", "confidence", "accuracy")},
        "reliability_after": {k: after[k] for k in ("count", "confidence", "accuracy")},
    }
