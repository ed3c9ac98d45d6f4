"""The settings of one training run and their defaults: one definition for
``python -m training train`` (its flags' defaults, and the :class:`TrainConfig` it
runs) and for the Train tab (the request it builds, its fields' starting values).

Keras-free: the app imports it at start-up.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

#: ``--class-weights``: none, inverse class frequency, or its square root.
#: How a training run is started, ``python -m training train ...``: by the Train tab's
#: processes, and in the hints that tell a user how to train.
TRAIN_MODULE = "training"
TRAIN_SUBCOMMAND = "train"
TRAIN_COMMAND_TEXT = f"python -m {TRAIN_MODULE} {TRAIN_SUBCOMMAND}"

CLASS_WEIGHT_MODES: tuple[str, ...] = ("none", "balanced", "sqrt")
#: ``--tta``: test-time augmentation ("none" is stored as no TTA).
TTA_MODES: tuple[str, ...] = ("none", "hflip")
#: ``--mixed-precision``: auto is on when a GPU is present.
MIXED_PRECISION_MODES: tuple[str, ...] = ("auto", "on", "off")


@dataclass
class TrainConfig:
    data: str
    arch: str
    out: str
    classes: list[str] | None = None
    epochs: int = 30
    batch_size: int = 64
    image_size: tuple[int, int] | None = None  # None: the architecture's default.
    augment: bool | None = None  # None: the architecture's default.
    class_weights: str = "none"  # one of CLASS_WEIGHT_MODES
    #: Factors on the weights of named classes, e.g. {"fear": 1.5}.
    class_boost: dict[str, float] | None = None
    validation_split: float = 0.1
    seed: int = 1234
    patience: int = 10
    lr_patience: int = 4
    tta: str | None = None
    #: A run directory of the same architecture (or the wider one it narrows, pruned)
    #: whose weights start this run.
    init_from: str | None = None
    #: A run directory with the same classes and input size whose answers the training
    #: targets mix in (knowledge distillation), through the app's engine.
    distill_from: str | None = None
    #: The teacher's share of each training target; the label has the rest.
    distill_weight: float = 0.5
    #: None: the architecture's own starting rate.
    learning_rate: float | None = None
    mixed_precision: str = "auto"
    #: "default" (the architecture's) or "sgd" (see ``training.architectures.OPTIMIZERS``).
    optimizer: str = "default"
    #: None: the optimiser's own (the SGD recipe's 1e-4).
    weight_decay: float | None = None
    #: Keep an exponential moving average of the weights; validate and keep it.
    ema: bool = False
    #: ReduceLROnPlateau's factor.
    lr_factor: float = 0.5
    limit_per_class: int | None = None
    overwrite: bool = False
    verbose: int = 1
    command: list[str] = field(default_factory=lambda: list(sys.argv))
    #: Extra callbacks (tests use one that raises to simulate a crash).
    extra_callbacks: list[Any] = field(default_factory=list)


#: Every default, as one instance (``DEFAULTS.epochs``, ``DEFAULTS.batch_size``, ...).
DEFAULTS = TrainConfig(data="", arch="", out="", command=[])
