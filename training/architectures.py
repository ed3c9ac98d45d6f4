"""Every trainable architecture, in one registry.

Each entry builds the *body* of a network (the layers between the rescaled input and
the classifier) plus its optimizer; :func:`build_model` wraps every body the same way,
so that all run directories honour the contract in ``ferdash.runs.rundir``: raw greyscale
0-255 input, augmentation right after the input (inactive at inference),
``Rescaling(1/255)`` inside the model and a float32 softmax output (float32 even under
``mixed_float16``, where a float16 softmax loses probability mass to rounding).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import keras
from keras import layers, regularizers

from ferdash.runs.architectures import ARCHITECTURES, ArchitectureSpec
from ferdash.runs.rundir import class_recall_metrics

BodyFn = Callable[[keras.KerasTensor], keras.KerasTensor]


@dataclass(frozen=True)
class Architecture:
    """A registered network: its entry in :data:`ferdash.runs.architectures.ARCHITECTURES`
    (name, sizes, defaults) with how to build its body and how to optimise it."""

    spec: ArchitectureSpec
    body: BodyFn
    optimizer: Callable[[], keras.optimizers.Optimizer]
    label_smoothing: float = 0.0

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def description(self) -> str:
        return self.spec.description

    @property
    def default_image_size(self) -> int:
        return self.spec.default_image_size

    @property
    def default_augment(self) -> bool:
        return self.spec.default_augment


REGISTRY: dict[str, Architecture] = {}


def register(arch: Architecture) -> Architecture:
    if ARCHITECTURES.get(arch.name) is not arch.spec:
        raise ValueError(f"architecture {arch.name!r} is not in ferdash.runs.architectures")
    if arch.name in REGISTRY:
        raise ValueError(f"architecture {arch.name!r} is registered twice")
    REGISTRY[arch.name] = arch
    return arch


def get_architecture(name: str) -> Architecture:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown architecture {name!r}; known: {', '.join(REGISTRY)}") from None


# --- the R app's network -------------------------------------------------------------


def _r_parity(x: keras.KerasTensor) -> keras.KerasTensor:
    # The R/keras original, layer for layer (kernel 3x3, 'valid' as R keras defaults).
    x = layers.Conv2D(32, 3, activation="relu")(x)
    x = layers.Conv2D(16, 3)(x)
    x = layers.LeakyReLU(negative_slope=0.5)(x)
    x = layers.BatchNormalization()(x)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Dropout(0.25)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(200, activation="relu")(x)
    return layers.Dropout(0.5)(x)


register(
    Architecture(
        spec=ARCHITECTURES["r_parity"],
        body=_r_parity,
        optimizer=lambda: keras.optimizers.SGD(learning_rate=0.01),
    )
)


# --- VGG-style ------------------------------------------------------------------------


def _vgg_fer(x: keras.KerasTensor) -> keras.KerasTensor:
    for filters, convs in ((32, 2), (64, 2), (128, 3), (256, 3)):
        for _ in range(convs):
            x = layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        x = layers.MaxPooling2D(2)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(1024, activation="relu")(x)
    return layers.Dropout(0.5)(x)


register(
    Architecture(
        spec=ARCHITECTURES["vgg_fer"],
        body=_vgg_fer,
        optimizer=lambda: keras.optimizers.Adam(learning_rate=1e-3),
    )
)


# --- Singh & Nasoz --------------------------------------------------------------------


def _singh_nasoz(x: keras.KerasTensor) -> keras.KerasTensor:
    # 'valid' convolutions: with them the net has the paper's 1,271,687 parameters at
    # 48x48 (48 -> 44 -> pool 21 -> 17 -> pool 8 -> 4 -> pool 2; 2*2*128 into dense).
    for pool, stride in ((3, 2), (3, 2), (2, 2)):
        x = layers.Conv2D(128, 3, activation="relu")(x)
        x = layers.Conv2D(128, 3, activation="relu")(x)
        x = layers.MaxPooling2D(pool, strides=stride)(x)
        x = layers.Dropout(0.2)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(1024, activation="relu")(x)
    return layers.Dropout(0.2)(x)


register(
    Architecture(
        spec=ARCHITECTURES["singh_nasoz"],
        body=_singh_nasoz,
        optimizer=lambda: keras.optimizers.Adam(learning_rate=1e-3),
    )
)


# --- Jaramillo et al., "architecture 5" ------------------------------------------------


def _jaramillo(x: keras.KerasTensor) -> keras.KerasTensor:
    x = layers.Conv2D(32, 3, activation="relu")(x)
    x = layers.Conv2D(32, 3)(x)
    x = layers.BatchNormalization()(x)
    x = layers.Activation("relu")(x)
    x = layers.Conv2D(64, 3, activation="relu")(x)
    x = layers.Conv2D(64, 3, activation="relu")(x)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(512, activation="relu", kernel_regularizer=regularizers.L2(0.001))(x)
    return layers.Dropout(0.25)(x)


register(
    Architecture(
        spec=ARCHITECTURES["jaramillo"],
        body=_jaramillo,
        optimizer=lambda: keras.optimizers.Adam(learning_rate=1e-3),
    )
)


# --- ours ----------------------------------------------------------------------------


def _conv_bn_relu(x: keras.KerasTensor, filters: int) -> keras.KerasTensor:
    # No conv bias: the BatchNorm shift that follows makes it redundant.
    x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    return layers.Activation("relu")(x)


def _fernet_body(widths: Sequence[int], dense: int) -> BodyFn:
    def body(x: keras.KerasTensor) -> keras.KerasTensor:
        # 48 -> 24 -> 12 -> 6 -> 3: four VGG blocks, BN for fast stable training, dropout
        # growing with depth because FER2013 (28k faces) overfits a 2M-parameter net fast.
        for filters, drop in zip(widths, (0.1, 0.2, 0.3, 0.4)):
            x = _conv_bn_relu(x, filters)
            x = _conv_bn_relu(x, filters)
            x = layers.MaxPooling2D(2)(x)
            x = layers.Dropout(drop)(x)
        x = layers.Flatten()(x)
        x = layers.Dense(dense, use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.Activation("relu")(x)
        return layers.Dropout(0.5)(x)

    return body


register(
    Architecture(
        spec=ARCHITECTURES["fernet"],
        body=_fernet_body((32, 64, 128, 256), 256),
        optimizer=lambda: keras.optimizers.Adam(learning_rate=1e-3),
        label_smoothing=0.1,
    )
)

# The same layers at a quarter of the width, so that a fernet run can seed it channel
# by channel: ~7.6M multiply-adds per face against fernet's ~118M.
register(
    Architecture(
        spec=ARCHITECTURES["fernet_s"],
        body=_fernet_body((8, 16, 32, 64), 64),
        optimizer=lambda: keras.optimizers.Adam(learning_rate=1e-3),
        label_smoothing=0.1,
    )
)


def augmentation_layers(seed: int | None = None) -> list[keras.layers.Layer]:
    """Random geometric and photometric changes; Keras disables them at inference.

    Kept as layers inside the model (not in the tf.data pipeline) so that they run on the
    GPU when there is one, and so that ``model.keras`` records how the run was trained.
    """
    return [
        layers.RandomFlip("horizontal", seed=seed, name="aug_flip"),
        layers.RandomRotation(0.05, fill_mode="nearest", seed=seed, name="aug_rotation"),
        layers.RandomZoom(0.1, fill_mode="nearest", seed=seed, name="aug_zoom"),
        layers.RandomTranslation(0.1, 0.1, fill_mode="nearest", seed=seed, name="aug_translation"),
        # value_range matches the raw 0-255 input: augmentation runs before Rescaling.
        layers.RandomContrast(0.2, value_range=(0, 255), seed=seed, name="aug_contrast"),
    ]


def build_model(
    name: str,
    input_size: tuple[int, int],
    num_classes: int,
    *,
    augment: bool = False,
    seed: int | None = None,
) -> keras.Model:
    """The full network of architecture ``name`` (uncompiled), honouring the contract."""
    arch = get_architecture(name)
    height, width = input_size
    inputs = keras.Input(shape=(height, width, 1), name="pixels")
    x = inputs
    if augment:
        for layer in augmentation_layers(seed):
            x = layer(x)
    x = layers.Rescaling(1.0 / 255, name="rescale")(x)
    x = arch.body(x)
    # float32 whatever the global policy: see the module docstring.
    outputs = layers.Dense(num_classes, activation="softmax", dtype="float32", name="probs")(x)
    return keras.Model(inputs, outputs, name=name)


#: ``--optimizer`` choices: the architecture's own, or the SGD recipe that FER2013's
#: best single networks were trained with (Khaireddin & Chen 2021).
OPTIMIZERS = ("default", "sgd")
SGD_LEARNING_RATE = 0.01
SGD_MOMENTUM = 0.9
SGD_WEIGHT_DECAY = 1e-4
#: Per step: the average spans ~100 steps, a fifth of a FER2013 epoch at batch 64.
EMA_MOMENTUM = 0.99


def make_optimizer(
    name: str, kind: str = "default", *, ema: bool = False, weight_decay: float | None = None
) -> keras.optimizers.Optimizer:
    """The optimiser of architecture ``name`` or the SGD recipe, optionally keeping an
    exponential moving average of the weights (swapped in for validation and checkpoints
    by :class:`keras.callbacks.SwapEMAWeights`)."""
    if kind not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {kind!r}; known: {', '.join(OPTIMIZERS)}")
    extra: dict[str, Any] = {"use_ema": True, "ema_momentum": EMA_MOMENTUM} if ema else {}
    if kind == "sgd":
        return keras.optimizers.SGD(
            learning_rate=SGD_LEARNING_RATE,
            momentum=SGD_MOMENTUM,
            nesterov=True,
            weight_decay=SGD_WEIGHT_DECAY if weight_decay is None else weight_decay,
            **extra,
        )
    optimizer = get_architecture(name).optimizer()
    if not extra and weight_decay is None:
        return optimizer
    config = optimizer.get_config()
    config.update(extra)
    if weight_decay is not None:
        config["weight_decay"] = weight_decay
    return optimizer.__class__.from_config(config)


def compile_model(
    model: keras.Model,
    name: str,
    recall_of: Sequence[str] | None = None,
    *,
    optimizer: keras.optimizers.Optimizer | None = None,
) -> keras.Model:
    """Compile with the architecture's optimiser (or ``optimizer``) and loss; accuracy,
    and the recall of each class in ``recall_of`` (the model's output order), logged per
    epoch.

    Per-class recall is what a FER run is judged on beside accuracy (disgust and fear are
    rare and confused with their neighbours): logged per epoch, it shows when a class
    weight or a lower rate trades one class for another. ``top_k=1`` counts a face for a
    class when the class is its top prediction, as the confusion matrix does.
    """
    arch = get_architecture(name)
    metrics: list[Any] = ["accuracy"]
    if recall_of:
        names = class_recall_metrics(list(recall_of))
        metrics += [
            keras.metrics.Recall(class_id=i, top_k=1, name=names[c]) for i, c in enumerate(recall_of)
        ]
    model.compile(
        optimizer=optimizer or arch.optimizer(),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=arch.label_smoothing),
        metrics=metrics,
    )
    return model
