"""Command line: ``python -m training {prepare,train,evaluate,export-lite} --help``."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import fields

from ferdash.train_settings import (
    CLASS_WEIGHT_MODES,
    DEFAULTS,
    MIXED_PRECISION_MODES,
    TTA_MODES,
    TrainConfig,
)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter.


def _image_size(text: str) -> tuple[int, int]:
    parts = text.lower().replace(",", "x").split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"image size {text!r}: use 48 or 48x48") from None
    if len(values) == 1:
        values *= 2
    if len(values) != 2 or min(values) < 8:
        raise argparse.ArgumentTypeError(f"image size {text!r}: use 48 or 48x48 (at least 8)")
    return values[0], values[1]


def _classes(text: str) -> list[str]:
    names = [c.strip() for c in text.split(",") if c.strip()]
    if len(names) < 2 or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError("--classes needs 2+ distinct comma-separated names")
    return names


#: A larger factor drowns every other class (and overflows the loss at the extreme).
MAX_CLASS_BOOST = 100.0


def _class_boost(text: str) -> dict[str, float]:
    boost: dict[str, float] = {}
    for part in (p.strip() for p in text.split(",") if p.strip()):
        name, sep, factor = part.partition("=")
        try:
            value = float(factor)
        except ValueError:
            value = float("nan")
        if not sep or not name.strip() or not 0 < value <= MAX_CLASS_BOOST:
            raise argparse.ArgumentTypeError(
                f"--class-boost takes CLASS=FACTOR pairs with factors above 0 and at most "
                f"{MAX_CLASS_BOOST:g}, e.g. fear=1.5 (got {part!r})"
            )
        if name.strip() in boost:
            raise argparse.ArgumentTypeError(f"--class-boost names {name.strip()!r} twice")
        boost[name.strip()] = value
    if not boost:
        raise argparse.ArgumentTypeError("--class-boost needs at least one CLASS=FACTOR")
    return boost


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"{text} must be between 0 and 1")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is not 0 or a positive integer")
    return value


def _seed(text: str) -> int:
    value = int(text)
    if not 0 <= value < 2**32:  # what keras.utils.set_random_seed takes
        raise argparse.ArgumentTypeError(f"--seed {text}: use an integer from 0 to {2**32 - 1}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text} is not a positive number")
    return value


def _non_negative_float(text: str) -> float:
    if text.strip() in ("0", "0.0"):
        return 0.0
    return _positive_float(text)


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    # Show "(default: X)" only where there is a default worth showing.
    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default in (None, False) or "default" in (action.help or ""):
            return action.help or ""
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    from training.architectures import REGISTRY

    parser = argparse.ArgumentParser(
        prog="python -m training",
        description="FER training pipeline: prepare FER2013, train a run directory, evaluate it.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "prepare",
        help="FER2013 CSV -> image folders",
        description="Write the Kaggle FER2013 CSV (emotion,pixels,Usage) as "
        "OUT/{train,val,test}/<class>/<n>.png (Training, PublicTest, PrivateTest). "
        "Malformed rows are reported and skipped.",
    )
    p.add_argument("--csv", required=True, help="fer2013.csv")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty folder")

    arch_help = "; ".join(f"{a.name}: {a.description}" for a in REGISTRY.values())
    augmented = " and ".join(a.name for a in REGISTRY.values() if a.default_augment)
    t = sub.add_parser(
        "train",
        help="train an architecture on an image folder",
        formatter_class=_Help,
        description="Train NAME on DIR and write the run directory RUN (model.keras, run.json, "
        "history.csv, evaluation.json on the validation data, backup/, logs/). DIR is either "
        "a prepared folder with train/ (and val/, used for validation if present) or a folder "
        "of class sub-folders. A run that was interrupted (even by kill -9) continues from "
        "its last finished epoch when the same command is run again.",
    )
    t.add_argument("--data", required=True, metavar="DIR", help="image folder (DATA/train/<class>/... or DATA/<class>/...)")
    t.add_argument("--arch", required=True, choices=sorted(REGISTRY), metavar="NAME",
                   help=f"one of {', '.join(sorted(REGISTRY))}. {arch_help}")
    t.add_argument("--out", required=True, metavar="RUN", help="run directory, e.g. models/NAME")
    t.add_argument("--classes", type=_classes, metavar="A,B", help="comma-separated class subset, e.g. happy,sad (default: all folders)")
    t.add_argument("--epochs", type=_positive, default=DEFAULTS.epochs, metavar="N", help="epochs to train in total (a resumed run ends at this count)")
    t.add_argument("--batch-size", type=_positive, default=DEFAULTS.batch_size, metavar="N", help="per-replica batch size (scaled by the GPU count, and by the workers when TF_CONFIG names a cluster)")
    t.add_argument("--image-size", type=_image_size, metavar="S|HxW", help="input HxW or S; default: the architecture's (48, r_parity 244)")
    aug = t.add_mutually_exclusive_group()
    aug.add_argument("--augment", dest="augment", action="store_true", default=None,
                     help=f"random flip/rotation/zoom/translation/contrast layers (default: on for {augmented} only)")
    aug.add_argument("--no-augment", dest="augment", action="store_false", help="no augmentation layers")
    t.add_argument("--class-weights", nargs="?", const="balanced", default=DEFAULTS.class_weights,
                   choices=CLASS_WEIGHT_MODES,
                   help="weight the loss by class counts; bare flag = balanced")
    t.add_argument("--class-boost", type=_class_boost, metavar="C=F[,C=F]",
                   help="multiply the loss weight of these classes, e.g. fear=1.5 (on top of --class-weights)")
    t.add_argument("--val-split", type=_fraction, dest="validation_split", default=DEFAULTS.validation_split, metavar="F",
                   help="validation fraction of the training folder, used only when DATA has no val/")
    t.add_argument("--seed", type=_seed, default=DEFAULTS.seed, metavar="N", help="seed of keras.utils.set_random_seed, shuffling and the split")
    t.add_argument("--patience", type=_non_negative, default=DEFAULTS.patience, metavar="N", help="EarlyStopping patience (epochs without better val_accuracy)")
    t.add_argument("--lr-patience", type=_non_negative, default=DEFAULTS.lr_patience, metavar="N", help="ReduceLROnPlateau patience (epochs without lower val_loss; then the rate is multiplied by --lr-factor)")
    t.add_argument("--tta", choices=TTA_MODES, default="none",
                   help="test-time augmentation recorded in run.json and used by evaluation and the app")
    t.add_argument("--init-from", metavar="RUN",
                   help="start from the weights of run directory RUN (same architecture and input "
                   "size, or the wider one this architecture narrows: fernet for fernet_s, "
                   "pruned to its strongest channels); its classifier too when the classes are "
                   "the same, e.g. happy,sad from fer7")
    t.add_argument("--distill-from", metavar="RUN",
                   help="learn from run directory RUN's answers too (knowledge distillation): "
                   "each training target mixes RUN's probabilities (flip TTA and temperature "
                   "as the app gives them) with the label; RUN needs the same classes and input size")
    t.add_argument("--distill-weight", type=_fraction, default=DEFAULTS.distill_weight, metavar="F",
                   help="the teacher's share of each training target (the label has the rest)")
    t.add_argument("--learning-rate", type=_positive_float, metavar="LR",
                   help="starting learning rate (default: the architecture's); lower it to fine-tune")
    from training.architectures import OPTIMIZERS

    t.add_argument("--optimizer", choices=OPTIMIZERS, default=DEFAULTS.optimizer,
                   help="the architecture's own, or sgd: Nesterov momentum 0.9, lr 0.01, weight decay 1e-4")
    t.add_argument("--weight-decay", type=_non_negative_float, metavar="F",
                   help="decoupled weight decay (default: the optimizer's; sgd 1e-4)")
    t.add_argument("--ema", action="store_true",
                   help="keep an exponential moving average of the weights; validate, checkpoint and ship it")
    t.add_argument("--lr-factor", type=_fraction, default=DEFAULTS.lr_factor, metavar="F",
                   help="ReduceLROnPlateau's factor (0.5 halves the rate)")
    t.add_argument("--mixed-precision", choices=MIXED_PRECISION_MODES, default=DEFAULTS.mixed_precision,
                   help="mixed_float16; auto = on when a GPU is present")
    t.add_argument("--limit", type=_positive, dest="limit_per_class", metavar="N",
                   help="use at most this many images per class (smoke runs)")
    t.add_argument("--overwrite", action="store_true", help="discard an existing run in OUT and start over")
    t.add_argument("--verbose", type=int, choices=[0, 1, 2], default=DEFAULTS.verbose, help="Keras fit verbosity (1 = progress bar)")

    e = sub.add_parser(
        "evaluate",
        help="evaluate a run on a labelled folder",
        description="Write RUN/evaluation.json for DATA/<class>/* (only the run's classes are read).",
    )
    e.add_argument("--run", required=True, help="run directory (models/NAME)")
    e.add_argument("--data", required=True, help="labelled folder, e.g. DIR/test")
    e.add_argument("--split", help="name recorded as 'split' (default: the folder's name)")
    e.add_argument("--tta", choices=["run", "none", "hflip"], default="run",
                   help="test-time augmentation; 'run' = what run.json declares")
    e.add_argument("--batch-size", type=_positive, default=256)
    e.add_argument("--fit-temperature", action="store_true",
                   help="fit the run's temperature on this folder first and store it in run.json "
                   "(use the validation data: training does this itself)")

    x = sub.add_parser(
        "export-lite",
        help="write a run's model.tflite (the app's engine) and re-evaluate through it",
        description="Convert RUN/model.keras to RUN/model.tflite (dynamic-range quantised: "
        "int8 weights) and record both files' SHA-256 in run.json, so the app can check the "
        "copy before using it; then evaluate the run again through the copy on the folder "
        "its evaluation.json names, when that folder is there. 'train' does this when a "
        "run finishes; use this for older runs.",
    )
    x.add_argument("--run", required=True, help="run directory (models/NAME)")
    x.add_argument("--float32", action="store_true",
                   help="no quantisation: the copy gives the Keras model's probabilities to 1e-4, "
                   "but is slower; the app then runs only batches of up to 8 rows on it")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.command == "prepare":
        from training.prepare import prepare_fer2013

        try:
            report = prepare_fer2013(args.csv, args.out, overwrite=args.overwrite)
        except (OSError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        return 0 if report.written else 1
    if args.command == "train":
        from training.data import DataError
        from training.train import TrainingError, run_training

        # Each flag's dest is its TrainConfig field ("command" is the subcommand's name).
        settings = {f.name: getattr(args, f.name) for f in fields(TrainConfig)
                    if f.name != "command" and hasattr(args, f.name)}
        settings["tta"] = None if args.tta == "none" else args.tta
        cfg = TrainConfig(**settings, command=["python", "-m", "training", *argv])
        try:
            run_training(cfg)
        except (TrainingError, DataError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        return 0
    if args.command == "evaluate":
        from training.data import DataError
        from training.evaluate import evaluate_folder

        try:
            evaluate_folder(
                args.run,
                args.data,
                split=args.split,
                tta={"run": "run", "none": None}.get(args.tta, args.tta),
                batch_size=args.batch_size,
                fit_temperature=args.fit_temperature,
            )
        except (DataError, ValueError, OSError, RuntimeError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        return 0
    if args.command == "export-lite":
        from ferdash.runs.rundir import DYNAMIC_RANGE, RunDirError
        from training.data import DataError
        from training.export_lite import ExportError, export_lite

        from training.evaluate import reevaluate

        try:
            path = export_lite(args.run, None if args.float32 else DYNAMIC_RANGE)
        except (ExportError, RunDirError, OSError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(f"wrote {path}")
        try:
            from ferdash.runs import model_store
            from ferdash.runs.rundir import read_run_info

            if model_store.get_loaded_run(read_run_info(args.run)).engine != "tflite":
                print(
                    f"error: the app would not use {path}: it fails the check against "
                    "model.keras (the reason is logged above); the run stays on TensorFlow",
                    file=sys.stderr,
                )
                return 2
            reevaluate(args.run)
        except (DataError, ValueError, OSError, RuntimeError) as exc:
            print(f"error: evaluation.json could not be recomputed: {exc}", file=sys.stderr)
            return 2
        return 0
    return 1


if __name__ == "__main__":
    sys.exit(main())
