"""``python -m training train``: an image folder in, a run directory out."""

from __future__ import annotations

import contextlib
import csv
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ferdash import data_layout
from ferdash.runs.rundir import (
    BACKUP_DIR,
    HISTORY_FILE,
    MODEL_FILE,
    write_run_info,
)
from ferdash.train_settings import TrainConfig
from training.errors import TrainingError

LOGS_DIR = "logs"
#: Free space demanded beyond the estimated size of the files a run writes.
SPARE_BYTES = 50 * 2**20


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def check_writable(out: Path) -> None:
    """Fail now, with a clear message, rather than after the first (long) epoch."""
    for part in (out, *out.parents):
        if part.exists() and not part.is_dir():
            raise TrainingError(f"output folder {out} is not writable: {part} is a file, not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-probe"
        with probe.open("wb") as f:
            f.write(b"\0" * 65536)
            f.flush()
            os.fsync(f.fileno())
        probe.unlink()
    except OSError as exc:
        raise TrainingError(f"output folder {out} is not writable: {exc.strerror or exc}") from exc


def check_free_space(out: Path, params: int) -> None:
    # model.keras (weights + 2 Adam moments while training), the backup and its
    # previous copy, plus logs: ~5 copies of the float32 weights x 3.
    needed = params * 4 * 3 * 5 + SPARE_BYTES
    free = shutil.disk_usage(out).free
    if free < needed:
        raise TrainingError(
            f"not enough free disk space in {out}: {free / 2**20:.0f} MiB free, "
            f"{needed / 2**20:.0f} MiB needed for checkpoints and backups"
        )


def _clear_run(out: Path) -> None:
    from training import resume

    for name in resume.RUN_FILES:
        (out / name).unlink(missing_ok=True)
    resume.partial_checkpoint(out / MODEL_FILE).unlink(missing_ok=True)
    for name in (BACKUP_DIR, LOGS_DIR):
        shutil.rmtree(out / name, ignore_errors=True)


def _history_header(path: Path) -> list[str]:
    from training import resume

    try:
        return resume.read_history_rows(path)[0]
    except (OSError, UnicodeDecodeError, csv.Error):
        return []


def _check_image_size(arch: str, size: tuple[int, int]) -> None:
    """Fail before the data is read, not after, when the network cannot take ``size``."""
    from training.architectures import build_model

    try:
        build_model(arch, size, 2)
    except ValueError as exc:
        raise TrainingError(
            f"--image-size {size[0]}x{size[1]} is too small for {arch}: its layers shrink "
            f"it to nothing ({str(exc).splitlines()[0][:200]}); use its default size or larger"
        ) from exc


def run_training(cfg: TrainConfig, log=print) -> Path:
    """Train (or resume, or finish) the run in ``cfg.out``; return the run directory.

    A failure before anything was written leaves no empty ``--out`` folder behind. When
    ``TF_CONFIG`` names a cluster, this is one of its workers (see
    :mod:`training.multiworker`): the chief writes ``cfg.out``, any other its own copy.
    """
    from training import multiworker

    cluster = multiworker.from_env()
    out = Path(cfg.out)
    if cluster is not None and not cluster.is_chief:
        out = multiworker.worker_dir(out, cluster)
    created = not out.exists()
    try:
        _run_training(cfg, out, cluster, log)
        return Path(cfg.out)
    except BaseException:
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        raise


#: How a worker's plan travels to the others (:meth:`training.multiworker.Team.together`).
_STARTS = ("fresh", "resume", "finish")


def _run_training(cfg: TrainConfig, out: Path, cluster: Any, log) -> None:
    """``out``: the folder this process writes, the run directory itself unless it is a
    non-chief worker of a cluster."""
    from training import multiworker
    from training.architectures import get_architecture
    from training.device import setup_device

    arch = get_architecture(cfg.arch)
    size = cfg.image_size or (arch.default_image_size, arch.default_image_size)
    augment = arch.default_augment if cfg.augment is None else cfg.augment
    classes = sorted(cfg.classes) if cfg.classes else None
    # First of all TensorFlow: a multi-worker strategy must exist before anything runs.
    device = setup_device(cfg.mixed_precision, cluster=cluster)
    team = multiworker.Team(device.strategy, cluster) if cluster else multiworker.Solo()
    if not team.is_chief:
        log(f"{cluster.name} of {cluster.workers} workers: the chief writes {cfg.out}, this worker its copy in {out}")

    from training import distill, resume, warm_start

    # What a run is, as far as it is known before the data is read (the classes of a
    # whole folder are added once it is): a resume with another seed run, starting rate,
    # class weighting, or other images would mix two runs' epochs in one history.
    data_dir = Path(cfg.data)
    val_folder = data_layout.val_folder(data_dir) is not None
    identity: dict[str, Any] = {
        "architecture": cfg.arch,
        **({"classes": classes} if classes else {}),
        "input_size": [int(size[0]), int(size[1])],
        "augment": augment,
        "batch_size": cfg.batch_size,
        "seed": cfg.seed,
        "init_from": cfg.init_from,
        "distill_from": cfg.distill_from,
        "distill_weight": cfg.distill_weight if cfg.distill_from else None,
        "learning_rate": cfg.learning_rate,
        "optimizer": cfg.optimizer,
        "weight_decay": cfg.weight_decay,
        "ema": cfg.ema,
        "class_weight_mode": cfg.class_weights,
        "class_boost": cfg.class_boost or None,
        "data": cfg.data,
        "limit_per_class": cfg.limit_per_class,
        "val_split": None if val_folder else cfg.validation_split,
    }
    backup_dir = out / BACKUP_DIR

    def check() -> bool:
        _check_image_size(cfg.arch, size)
        check_writable(out)
        for flag, run in (("--init-from", cfg.init_from), ("--distill-from", cfg.distill_from)):
            if run and Path(run).resolve() == Path(cfg.out).resolve():
                raise TrainingError(f"{flag} {run} is the run being trained")
        # Whether the run is finished is the chief's to say: a worker's copy is gone then.
        return team.is_chief and resume.already_finished(out, identity, overwrite=cfg.overwrite, log=log)

    _, finished = team.together("checking --out", check, lambda done: [int(done)], width=1)
    if finished[0][0]:
        if not team.is_chief:
            log(f"the chief found {cfg.out} finished: nothing to train")
            multiworker.remove_worker_dir(out)
        return

    import keras
    import tensorflow as tf

    from training.architectures import build_model, compile_model, make_optimizer
    from training.data import class_weights, load_training_data

    keras.utils.set_random_seed(cfg.seed)
    global_batch = cfg.batch_size * device.replicas

    def new_model(recall: bool, scope: Any) -> Any:
        with scope:
            model = compile_model(
                build_model(cfg.arch, size, len(data.classes), augment=augment, seed=cfg.seed),
                cfg.arch,
                recall_of=data.classes if recall else None,
                optimizer=make_optimizer(
                    cfg.arch, cfg.optimizer, ema=cfg.ema, weight_decay=cfg.weight_decay
                ),
            )
            if cfg.learning_rate is not None:
                model.optimizer.learning_rate = cfg.learning_rate
        return model

    # Every variable made in a multi-worker scope is a collective op (the chief sends its
    # initial value), so the workers may only build the model they train, once they agree
    # on it: the one that tries the backup is built outside the strategy.
    def planning_scope() -> Any:
        return contextlib.nullcontext() if cluster else device.strategy.scope()

    def plan() -> tuple[str, int | None, bool, Any]:
        """(start, initial_epoch, class_recall, model) from what ``out`` holds."""
        nonlocal data, weights
        # The data is read before anything in --out is touched: a mistyped --data must
        # not cost the run that --overwrite would have replaced.
        data = load_training_data(
            cfg.data,
            image_size=size,
            batch_size=global_batch,
            classes=classes,
            validation_split=cfg.validation_split,
            seed=cfg.seed,
            limit_per_class=cfg.limit_per_class,
            teacher=teacher,
            teacher_weight=cfg.distill_weight,
            log=log,
        )
        if teacher is not None:
            teacher.check_classes(data.classes)
        weights = class_weights(data.train_counts, data.classes, cfg.class_weights, cfg.class_boost)
        identity["classes"] = data.classes
        try:
            start = resume.plan_start(out, identity, overwrite=cfg.overwrite, model_loads=_loads, log=log)
        except TrainingError:
            if team.is_chief:
                raise
            # A worker's copy of some other run is no reason to stop: the chief's plan
            # decides, and a resume that this worker cannot follow is refused below.
            start = "fresh"
        if start == "finish":
            return start, None, False, None
        if start == "fresh":
            _clear_run(out)
        # A resumed run keeps the columns its history.csv has: CSVLogger appends rows
        # under the header already written, so new metric columns would misalign them.
        header = _history_header(out / HISTORY_FILE) if start == "resume" else []
        class_recall = not header or any(k.startswith("val_recall_") for k in header)
        model = new_model(class_recall, planning_scope())
        if start != "resume":
            return start, None, class_recall, model
        with planning_scope():
            initial_epoch = resume.restorable_epoch(backup_dir, can_load=lambda p: _weights_load(model, p))
        if initial_epoch is None:
            log(f"the backup in {backup_dir} cannot be loaded: starting the run over")
            _clear_run(out)
            if not class_recall:  # a fresh history gets the recall columns
                return "fresh", None, True, new_model(True, planning_scope())
            return "fresh", None, class_recall, model
        if initial_epoch > cfg.epochs:
            raise TrainingError(
                f"{out} has trained {initial_epoch} epochs, more than --epochs {cfg.epochs}: "
                f"re-run with --epochs {initial_epoch} or more"
            )
        return start, initial_epoch, class_recall, model

    data: Any = None
    weights: Any = None
    teacher = distill.Teacher.load(cfg.distill_from, size, log=log) if cfg.distill_from else None
    (start, initial_epoch, class_recall, model), plans = team.together(
        "reading the data and --out",
        plan,
        lambda p: (_STARTS.index(p[0]), -1 if p[1] is None else p[1], int(p[2])),
        width=3,
    )
    chief_start, chief_epoch, chief_recall = plans[0]
    if _STARTS[chief_start] == "finish":
        if team.is_chief:
            shutil.rmtree(backup_dir, ignore_errors=True)
        _finish_together(team, out, cfg, data, size, model=None, log=log)
        return
    if cluster is not None:
        lost = [i for i, p in enumerate(plans) if p[1:] != (chief_epoch, chief_recall)]
        if chief_epoch >= 0 and lost:
            raise TrainingError(
                f"the chief resumes {cfg.out} at epoch {chief_epoch + 1} but worker(s) "
                f"{', '.join(map(str, lost))} have no backup of that epoch in their own "
                "folder (the temporary folder they wrote it to is gone, or the cluster "
                "changed): restart each worker on the host it ran on, with the same TMPDIR, "
                "or pass --overwrite to start over"
            )
        if chief_epoch < 0 and start != "fresh":
            _clear_run(out)  # The chief starts over: so does this worker's copy.
        initial_epoch, class_recall = (None if chief_epoch < 0 else chief_epoch), bool(chief_recall)
        # Re-seeded so that the initial weights depend on --seed alone, not on the planning
        # model drawn before them (the chief's are sent to the others anyway).
        keras.utils.set_random_seed(cfg.seed)
        model = new_model(class_recall, device.strategy.scope())

    def prepare() -> int:
        params = int(model.count_params())
        check_free_space(out, params)
        if cfg.init_from and initial_epoch is None:
            # Only a fresh start is seeded (and needs its seed run to be there): a resumed
            # run's own weights come from its backup.
            try:
                donor = warm_start.check_source(cfg.init_from, cfg.arch, size)
                seeded = warm_start.copy_weights(model, donor, data.classes)
            except warm_start.WarmStartError as exc:
                raise TrainingError(str(exc)) from exc
            log(f"starting from {seeded.describe()}")
        return params

    params, _ = team.together("preparing to train", prepare)

    rows: list[dict[str, str]] = []
    if initial_epoch is not None:
        rows = resume.truncate_history(out / HISTORY_FILE, initial_epoch)
        if initial_epoch == cfg.epochs:
            log(f"{out}: the backup is already at epoch {initial_epoch} of {cfg.epochs}; finishing the run")
        else:
            log(f"resuming {out} at epoch {initial_epoch + 1} of {cfg.epochs}")

    best_threshold = resume.best_so_far(rows, "val_accuracy") if rows else None
    if best_threshold is not None and not _loads(out / MODEL_FILE):
        best_threshold = None  # The checkpoint was cut by the kill: let the next epoch rewrite it.

    reduce_lr = keras.callbacks.ReduceLROnPlateau(
        monitor="val_loss", factor=cfg.lr_factor, patience=cfg.lr_patience, min_lr=1e-6, verbose=1
    )
    early_stop = keras.callbacks.EarlyStopping(
        monitor="val_accuracy", mode="max", patience=cfg.patience, verbose=1
    )
    callbacks = [
        # First: validation, the checkpoint and the backup all see the averaged weights.
        *([resume.ResumableSwapEMAWeights(restored=initial_epoch is not None)] if cfg.ema else []),
        resume.ReplayMonitors(rows, [reduce_lr, early_stop]),
        # Before CSVLogger, so that the learning_rate it adds to the logs is in history.csv.
        reduce_lr,
        early_stop,
        resume.AtomicModelCheckpoint(
            out / MODEL_FILE,
            monitor="val_accuracy",
            mode="max",
            save_best_only=True,
            initial_value_threshold=best_threshold,
        ),
        keras.callbacks.CSVLogger(out / HISTORY_FILE, append=True),
        *_tensorboard(out / LOGS_DIR, log),
        *cfg.extra_callbacks,
        _mark_fit_ended(out, data.classes, size),
        # Last: an epoch counts as done only once everything above has recorded it.
        keras.callbacks.BackupAndRestore(str(backup_dir), double_checkpoint=True),
    ]

    versions = {"tensorflow": tf.__version__, "keras": keras.__version__}
    meta: dict[str, Any] = {
        **{k: v for k, v in identity.items() if k not in ("classes", "input_size")},
        "validation": "val/ folder" if data.val_source == "folder" else "validation_split",
        "epochs": cfg.epochs,
        "epochs_completed": len(rows),
        "params": params,
        "device": device.label,
        "replicas": device.replicas,
        "workers": device.workers,
        "mixed_precision": device.mixed_precision,
        "class_weights": {c: weights[i] for i, c in enumerate(data.classes)} if weights else None,
        "train_images": len(data.train_files),
        "val_images": len(data.val_files),
        "skipped_images": sum(len(s.bad) for s in data.scans),
        "tta": cfg.tta,
        "class_recall_logged": class_recall,
        **versions,
        "command": " ".join(cfg.command),
        "fit_ended": None,
        "finished": None,
    }
    if initial_epoch is None:
        meta["created"] = _now()
    write_run_info(out, data.classes, size, **meta)

    log(
        f"training {cfg.arch} ({params:,} parameters) on {len(data.train_files)} images, "
        f"validating on {len(data.val_files)}; {device.label}, batch {global_batch}"
        + (f" ({cfg.batch_size} per replica x {device.replicas})" if device.replicas > 1 else "")
        + (", mixed precision" if device.mixed_precision else "")
    )
    model.fit(
        data.train,
        validation_data=data.val,
        epochs=cfg.epochs,
        class_weight=weights,
        callbacks=callbacks,
        shuffle=False,  # The pipeline shuffles (fit cannot shuffle a tf.data.Dataset).
        verbose=cfg.verbose,
    )
    _finish_together(team, out, cfg, data, size, model=model, log=log)


def _finish_together(team: Any, out: Path, cfg: TrainConfig, data: Any, size: tuple[int, int], model: Any, log) -> None:
    """The chief finishes the run while the other workers wait: each then exits with the
    run's outcome, and none is gone (which the chief's health checks would report as a
    failed worker) while the chief still works."""
    from training import multiworker

    team.together("finishing the run", lambda: _finish(out, cfg, data, size, model, log) if team.is_chief else None)
    if not team.is_chief:
        multiworker.remove_worker_dir(out)


def _mark_fit_ended(out: Path, classes: list[str], size: tuple[int, int]) -> Any:
    """A callback recording in run.json that fit ended, before BackupAndRestore (after it
    in the callback list) deletes the backup: from then on a stop before :func:`_finish`
    is done leaves a run that its command finishes, not one it trains again."""
    import keras

    class MarkFitEnded(keras.callbacks.Callback):
        def on_train_end(self, logs: dict | None = None) -> None:
            write_run_info(out, classes, size, fit_ended=_now())

    return MarkFitEnded()


def _finish(out: Path, cfg: TrainConfig, data: Any, size: tuple[int, int], model: Any, log) -> Path:
    """The steps after fit: the kept checkpoint stripped, its TF Lite copy, the figures
    in run.json, the evaluation, and ``finished``. Each step rewrites its file whole, so
    a run stopped among them is finished by running its command again."""
    import tensorflow as tf

    from training import resume

    best = _finalize_model(out, model)
    from training.export_lite import ExportError, export_lite

    try:
        export_lite(out, model=best)
    except ExportError as exc:
        log(f"warning: no model.tflite ({exc}); the app will use TensorFlow for this run")
    _, rows = resume.read_history_rows(out / HISTORY_FILE)
    best_row = max(rows, key=lambda r: float(r["val_accuracy"])) if rows else None
    write_run_info(
        out,
        data.classes,
        size,
        epochs_completed=len(rows),
        stopped_early=len(rows) < cfg.epochs,
        best_epoch=int(float(best_row["epoch"])) if best_row else None,
        best_val_accuracy=float(best_row["val_accuracy"]) if best_row else None,
        model_bytes=(out / MODEL_FILE).stat().st_size,
    )

    from training.evaluate import evaluate_dataset

    val_for_eval = data.val.map(lambda x, y: (x, tf.argmax(y, axis=-1)))
    evaluation = evaluate_dataset(
        out,
        val_for_eval,
        data.val_files,
        data_dir=data.val_dir,
        split="val" if data.val_source == "folder" else "validation_split",
        tta=cfg.tta,
        # Calibrated on the validation data, as Guo et al. do: it picked the epoch too.
        fit_temperature=True,
    )
    write_run_info(out, data.classes, size, finished=_now(), val_accuracy=evaluation["accuracy"])
    cal = evaluation.get("calibration") or {}
    log(
        f"done: {out} (val accuracy {evaluation['accuracy']:.4f}, macro F1 {evaluation['macro_f1']:.4f}"
        + (
            f"; temperature {cal['temperature']:.3f}, ECE {cal['ece_before']:.4f} -> {cal['ece_after']:.4f})"
            if cal.get("temperature")
            else ")"
        )
    )
    return out


def _tensorboard(log_dir: Path, log=print) -> list[Any]:
    # TensorFlow 2.21 no longer depends on tensorboard, and tf.summary fails without it
    # at the first epoch end; a missing optional package must not cost a training run.
    import importlib.util

    import keras

    if importlib.util.find_spec("tensorboard") is None:
        log("tensorboard is not installed: no TensorBoard logs (pip install tensorboard)")
        return []
    return [keras.callbacks.TensorBoard(log_dir=str(log_dir))]


def _weights_load(model: Any, path: Path) -> bool:
    """Whether a backup loads into ``model`` (a file cut by a kill may still open as HDF5)."""
    import warnings

    try:
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        # Keras only *warns* when parts of the file are missing and leaves those layers
        # freshly initialised: for a backup that is a failed load.
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)
            model.load_weights(path)
        return True
    except Exception:  # Truncated or mismatched files raise many types; all mean "no".
        return False


def _loads(path: Path) -> bool:
    from ferdash.runs.predictor import ModelLoadError, load_keras_model

    try:
        load_keras_model(path)
        return True
    except ModelLoadError:
        return False


def _finalize_model(out: Path, model: Any | None) -> Any:
    """Rewrite the best checkpoint without optimizer state (a third of its size); return it.

    Loading with ``compile=False`` drops the optimizer; the write goes to a temporary
    file then is renamed, so that the app never reads a half-written model.
    """
    from ferdash.runs.predictor import ModelLoadError, load_keras_model

    path = out / MODEL_FILE
    try:
        best = load_keras_model(path)
    except ModelLoadError as exc:
        if model is None:
            raise TrainingError(f"{path} cannot be loaded: {exc}; pass --overwrite to retrain") from exc
        # No usable checkpoint (e.g. val_accuracy was NaN): keep the last weights, in an
        # uncompiled clone so that no optimizer state is written either.
        import keras

        best = keras.models.clone_model(model)
        best.set_weights(model.get_weights())
    tmp = out / "model.tmp.keras"
    best.save(tmp)
    tmp.replace(path)
    (out / "model.partial.keras").unlink(missing_ok=True)  # left by a kill mid-checkpoint
    return best
