"""The networks ``python -m training train --arch`` can build, as the app knows them.

Keras-free, so that the Train tab can list them and check an image size without
importing TensorFlow at start-up; ``training/architectures.py`` attaches each one's
Keras body and optimiser to its entry here (and refuses a network without one).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ArchitectureSpec:
    name: str
    description: str
    #: Input side the design was made for (the default of ``--image-size``).
    default_image_size: int = 48
    #: The smallest input side it takes: its pooling shrinks a smaller one to nothing
    #: (checked against the built networks by the tests).
    min_image_size: int = 16
    #: Default of ``--augment`` (the papers' nets trained without it unless they say so).
    default_augment: bool = False
    #: A wider network of the same layout whose runs can seed this one through
    #: ``--init-from``, each layer keeping its strongest channels (``training.warm_start``).
    narrows: str | None = None


ARCHITECTURES: dict[str, ArchitectureSpec] = {
    spec.name: spec
    for spec in (
        ArchitectureSpec(
            "fernet",
            "ours: 4 VGG blocks (2x conv3x3+BN+ReLU, 32/64/128/256 filters, max-pool, dropout "
            ".1-.4), dense 256+BN, dropout .5; Adam 1e-3, label smoothing 0.1, augmentation "
            "on by default",
            default_augment=True,
        ),
        ArchitectureSpec(
            "fernet_s",
            "fernet at a quarter of its width for fast batch scoring: 8/16/32/64 filters, "
            "dense 64; a sixteenth of its multiply-adds; can start from a fernet run "
            "(--init-from) and learn from it (--distill-from)",
            default_augment=True,
            narrows="fernet",
        ),
        ArchitectureSpec(
            "vgg_fer",
            "VGG-style: conv 32x2, 64x2, 128x3, 256x3 with max-pools, dense 1024; Adam 1e-3",
        ),
        ArchitectureSpec(
            "singh_nasoz",
            "Singh & Nasoz's CNN: six conv-128, pools 3/2, 3/2, 2/2, dropout 0.2, dense "
            "1024; 1,271,687 parameters at 48x48; Adam 1e-3",
            min_image_size=39,
        ),
        ArchitectureSpec(
            "jaramillo",
            "Jaramillo et al.'s architecture 5: conv 32, 32+BN, 64, 64, max-pool, dense 512 "
            "with L2 0.001, dropout 0.25; Adam 1e-3",
            min_image_size=10,
        ),
        ArchitectureSpec(
            "r_parity",
            "the R app's net: conv32 relu, conv16 leaky-relu 0.5, BN, pool, dropout .25, "
            "dense 200, dropout .5; SGD (input 244x244 in the original)",
            default_image_size=244,
            min_image_size=6,
        ),
    )
}
