"""Starting a run from the weights of another run (``python -m training train --init-from``).

The usual use is a two-class model (happy vs sad) that starts from the seven-class
model's features instead of random ones: FER2013 has 12,000 happy and sad faces but
29,000 faces in all, and features learnt on every expression transfer.

Weights are copied layer by layer in network order, not by layer name: Keras numbers
unnamed layers per process (``conv2d_7``), so the same architecture built in another
process has other names. The classifier (the ``probs`` layer) is copied only when it
has the same classes in the same order; otherwise it starts fresh.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ferdash.runs.rundir import RunInfo, read_run_info

#: Layers named so are random augmentations: they hold only a seed, never learnt weights.
_AUGMENT_PREFIX = "aug_"
_CLASSIFIER = "probs"


class WarmStartError(ValueError):
    """The source run cannot seed this one; the message says why."""


@dataclass(frozen=True)
class WarmStart:
    """What was copied, for the log and run.json."""

    source: RunInfo
    layers_copied: int
    classifier_copied: bool

    def describe(self) -> str:
        head = "and its classifier" if self.classifier_copied else "with a new classifier"
        return f"{self.layers_copied} layers from {self.source.path} ({self.source.name}), {head}"


def _learnt_layers(model: Any) -> list[Any]:
    return [
        layer
        for layer in model.layers
        if layer.weights and not layer.name.startswith(_AUGMENT_PREFIX)
    ]


def check_source(
    source_dir: str | Path, arch: str, input_size: tuple[int, int]
) -> RunInfo:
    """The source run's info, if it can seed a run of ``arch`` at ``input_size``."""
    try:
        info = read_run_info(source_dir)
    except Exception as exc:
        raise WarmStartError(f"--init-from {source_dir}: not a run directory ({exc})") from exc
    source_arch = info.meta.get("architecture")
    if source_arch is None:
        raise WarmStartError(
            f"--init-from {source_dir}: its run.json records no architecture, so it cannot "
            "be matched layer by layer"
        )
    if source_arch != arch:
        raise WarmStartError(
            f"--init-from {source_dir}: it is a {source_arch!r} run; only a {arch!r} run "
            "has the layers this one needs"
        )
    if tuple(info.input_size) != tuple(input_size):
        raise WarmStartError(
            f"--init-from {source_dir}: its input is {info.input_size[0]}x{info.input_size[1]}, "
            f"this run's is {input_size[0]}x{input_size[1]}"
        )
    if not info.model_path.is_file():
        raise WarmStartError(f"--init-from {source_dir}: it has no model.keras")
    # Cheap now, before the data is read: the full load comes once the model is built.
    from ferdash.runs.predictor import ModelLoadError, check_keras_archive

    try:
        check_keras_archive(info.model_path)
    except ModelLoadError as exc:
        raise WarmStartError(f"--init-from {source_dir}: {exc}") from exc
    return info


def copy_weights(model: Any, source: RunInfo, classes: list[str]) -> WarmStart:
    """Copy ``source``'s learnt weights into ``model`` (same architecture; see module doc)."""
    from ferdash.runs.predictor import ModelLoadError, load_keras_model

    try:
        donor = load_keras_model(source.model_path)
    except ModelLoadError as exc:
        raise WarmStartError(f"--init-from {source.path}: {exc}") from exc
    theirs, ours = _learnt_layers(donor), _learnt_layers(model)
    if len(theirs) != len(ours):
        raise WarmStartError(
            f"--init-from {source.path}: {len(theirs)} layers with weights there, "
            f"{len(ours)} here; the architectures differ"
        )
    same_classes = list(source.classes) == list(classes)
    copied, classifier_copied = 0, False
    for mine, donor_layer in zip(ours, theirs):
        if mine.name == _CLASSIFIER and not same_classes:
            continue
        shapes_mine = [tuple(w.shape) for w in mine.weights]
        shapes_donor = [tuple(w.shape) for w in donor_layer.weights]
        if type(mine) is not type(donor_layer) or shapes_mine != shapes_donor:
            raise WarmStartError(
                f"--init-from {source.path}: layer {donor_layer.name} "
                f"({type(donor_layer).__name__} {shapes_donor}) does not fit "
                f"{mine.name} ({type(mine).__name__} {shapes_mine})"
            )
        mine.set_weights(donor_layer.get_weights())
        copied += 1
        classifier_copied = classifier_copied or mine.name == _CLASSIFIER
    return WarmStart(source=source, layers_copied=copied, classifier_copied=classifier_copied)
