"""Starting a run from the weights of another run (``python -m training train --init-from``).

The usual use is a two-class model (happy vs sad) that starts from the seven-class
model's features instead of random ones: FER2013 has 12,000 happy and sad faces but
29,000 faces in all, and features learnt on every expression transfer.

Weights are copied layer by layer in network order, not by layer name: Keras numbers
unnamed layers per process (``conv2d_7``), so the same architecture built in another
process has other names. The classifier (the ``probs`` layer) is copied only when it
has the same classes in the same order; otherwise it starts fresh.

A network that narrows a wider one (``ArchitectureSpec.narrows``: ``fernet_s`` of
``fernet``) starts from it pruned: each convolution and dense layer keeps the channels
that its BatchNorm scales most (``|gamma| / sqrt(variance + epsilon)``, what a channel
passes on), and the next layer keeps the inputs of those channels. Cut this far (a
quarter of the width) the network answers at chance until it is trained again
(``fer7`` cut to ``fernet_s``: 13.8% on FER2013 PublicTest, every face "fear"); it
learns back from the wide run's features and, with ``--distill-from``, its answers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ferdash.runs.architectures import ARCHITECTURES
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
    #: Cut from a wider network (its strongest channels).
    pruned: bool = False

    def describe(self) -> str:
        head = "and its classifier" if self.classifier_copied else "with a new classifier"
        how = ", pruned to this network's widths" if self.pruned else ""
        return f"{self.layers_copied} layers from {self.source.path} ({self.source.name}){how}, {head}"


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
    narrows = ARCHITECTURES[arch].narrows if arch in ARCHITECTURES else None
    if source_arch not in (arch, narrows):
        also = f" or a {narrows!r} run (pruned)" if narrows else ""
        raise WarmStartError(
            f"--init-from {source_dir}: it is a {source_arch!r} run; only a {arch!r} run"
            f"{also} has the layers this one needs"
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
    """Copy ``source``'s learnt weights into ``model`` (the same architecture, or a wider
    one that ``model``'s narrows; see the module doc)."""
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
    pruned = source.meta.get("architecture") != model.name
    donor_weights = _pruned(theirs, ours, source) if pruned else [l.get_weights() for l in theirs]
    copied, classifier_copied = 0, False
    for mine, donor_layer, weights in zip(ours, theirs, donor_weights):
        if mine.name == _CLASSIFIER and not same_classes:
            continue
        shapes_mine = [tuple(w.shape) for w in mine.weights]
        shapes_donor = [tuple(w.shape) for w in weights]
        if type(mine) is not type(donor_layer) or shapes_mine != shapes_donor:
            raise WarmStartError(
                f"--init-from {source.path}: layer {donor_layer.name} "
                f"({type(donor_layer).__name__} {shapes_donor}) does not fit "
                f"{mine.name} ({type(mine).__name__} {shapes_mine})"
            )
        mine.set_weights(weights)
        copied += 1
        classifier_copied = classifier_copied or mine.name == _CLASSIFIER
    return WarmStart(
        source=source, layers_copied=copied, classifier_copied=classifier_copied, pruned=pruned
    )


def _pruned(theirs: list[Any], ours: list[Any], source: RunInfo) -> list[list[np.ndarray]]:
    """The donor's weights cut to ``ours``' widths, layer by layer (see the module doc).

    Walks the chain of Conv2D, BatchNormalization and Dense layers: a layer's input
    channels are those its predecessor kept; its output channels are the ones the
    BatchNorm after it scales most (the classifier keeps all its classes). A dense layer
    after a Flatten keeps, at every position, the inputs of the kept channels.
    """
    import keras

    out: list[list[np.ndarray]] = []
    kept: np.ndarray | None = None  # the previous layer's channels, in the donor's numbering
    width = 0  # the previous layer's channel count in the donor
    for i, (donor, mine) in enumerate(zip(theirs, ours)):
        weights = donor.get_weights()
        if isinstance(donor, keras.layers.BatchNormalization):
            if kept is None or len(weights[0]) != width:
                raise WarmStartError(f"--init-from {source.path}: {donor.name} follows no layer it can be cut with")
            out.append([w[kept] for w in weights])
            continue
        if not isinstance(donor, (keras.layers.Conv2D, keras.layers.Dense)) or isinstance(
            donor, keras.layers.SeparableConv2D
        ):
            raise WarmStartError(f"--init-from {source.path}: {donor.name} ({type(donor).__name__}) cannot be pruned")
        kernel, rest = weights[0], weights[1:]
        inputs = np.arange(kernel.shape[-2]) if kept is None else kept
        if isinstance(donor, keras.layers.Dense) and kept is not None and kernel.shape[0] != width:
            if kernel.shape[0] % width:
                raise WarmStartError(f"--init-from {source.path}: {donor.name}'s inputs do not match")
            # After Flatten: input index = position * channels + channel.
            positions = np.arange(kernel.shape[0] // width)
            inputs = (positions[:, None] * width + kept[None, :]).reshape(-1)
        n_out = int(mine.weights[0].shape[-1])
        following = theirs[i + 1] if i + 1 < len(theirs) else None
        if n_out == kernel.shape[-1]:
            keep = np.arange(n_out)
        elif isinstance(following, keras.layers.BatchNormalization):
            gamma, _beta, _mean, variance = following.get_weights()
            strength = np.abs(gamma) / np.sqrt(variance + following.epsilon)
            keep = np.sort(np.argsort(-strength, kind="stable")[:n_out])
        else:
            strength = np.abs(kernel).reshape(-1, kernel.shape[-1]).sum(axis=0)
            keep = np.sort(np.argsort(-strength, kind="stable")[:n_out])
        if isinstance(donor, keras.layers.Conv2D):
            cut = kernel[:, :, inputs][..., keep]
        else:
            cut = kernel[inputs][:, keep]
        out.append([cut, *(b[keep] for b in rest)])
        kept, width = keep, kernel.shape[-1]
    return out
