"""Training runs started from the dashboard: one ``python -m training train`` process per server.

The run is a separate process (never in a request's path, never in the app's own
interpreter: TensorFlow training would stall every session), started in its own
process group so that cancelling it also ends whatever it spawned. Its output goes
to ``train.log`` in the run folder; its progress is read from the ``history.csv`` that
the training command writes after every epoch. Resuming is running the same command
again: ``training`` continues from its ``BackupAndRestore`` backup.

No TensorFlow import here: this module only validates, spawns, watches and kills.
"""

from __future__ import annotations

import atexit
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from . import config, data_layout
from .runs.architectures import ARCHITECTURES
from .train_settings import CLASS_WEIGHT_MODES, DEFAULTS, TRAIN_MODULE, TRAIN_SUBCOMMAND
from .data_layout import TRAINABLE_EXTENSIONS
from .runs.rundir import (
    BACKUP_DIR,
    HISTORY_FILE,
    RUN_FILE,
    RunDirError,
    file_stamp,
    read_history,
    read_run_info,
)

#: The command a job runs, before its arguments. Tests point it at a paced wrapper.
TRAIN_COMMAND: list[str] = [sys.executable, "-m", TRAIN_MODULE]

LOG_FILE = "train.log"
#: Seconds between SIGTERM and SIGKILL when cancelling.
KILL_GRACE_SECS = 5.0

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


class JobError(ValueError):
    """A run cannot be started: the message says why, in words for the dashboard."""


class JobBusy(JobError):
    """Another run is already training in this server."""


# --- validation ----------------------------------------------------------------------


def validate_run_name(name: str) -> str:
    """The run's folder name: letters, digits, ``-`` and ``_`` only (never a path)."""
    name = (name or "").strip()
    if not name:
        raise JobError("Give the run a name (letters, digits, - and _).")
    if not _NAME_RE.match(name):
        raise JobError(
            f"“{name}” is not a usable run name: use letters, digits, - and _ only "
            "(at most 64, starting with a letter or digit)."
        )
    return name


@dataclass(frozen=True)
class DataFolder:
    """A data folder that the training command will accept, and the classes it offers."""

    path: Path
    train_root: Path  # path/train when the folder is a prepared one, else path
    classes: tuple[str, ...]
    has_val: bool
    #: Class sub-folders without a trainable image: the training command refuses them
    #: unless the classes are named, so a request leaving them out names its classes.
    empty: tuple[str, ...] = ()


#: Directory entries looked at per class folder before giving up. The check runs while a
#: person types a path: "/" must answer at once, not walk the whole disk (or loop
#: through /proc/*/root), so the walk is bounded and never follows links.
_SCAN_BUDGET = 2000
#: More sub-folders than this is not a data folder of classes.
MAX_CLASSES = 200


def _has_image(folder: Path, budget: int = _SCAN_BUDGET) -> bool:
    # Breadth-first, so a class folder's own images (the usual layout) are seen first.
    pending = [folder]
    while pending and budget > 0:
        current = pending.pop(0)
        try:
            with os.scandir(current) as entries:
                for entry in entries:
                    budget -= 1
                    if budget <= 0:
                        return False
                    if entry.is_file(follow_symlinks=False):
                        if entry.name.lower().endswith(TRAINABLE_EXTENSIONS):
                            return True
                    elif entry.is_dir(follow_symlinks=False):
                        pending.append(Path(entry.path))
        except OSError:
            continue
    return False


def _plain(exc: OSError) -> str:
    """An OS error in words, without its errno number ("File name too long")."""
    return exc.strerror or type(exc).__name__


def allowed_data_path(raw: str) -> Path:
    """``raw`` as a path inside one of :func:`config.data_roots`; :class:`JobError` otherwise.

    Checked before the path is looked at, so the answer tells nothing about files
    outside the roots (not even whether they exist). Links are resolved first: one
    planted inside a root cannot lead out of it.
    """
    roots = config.data_roots()
    where = " or ".join(str(r) for r in roots) or "(none configured)"
    refusal = JobError(
        f"Data folders must be inside {where} on the server (set {config.DATA_ROOTS_ENV} "
        "to allow other folders)."
    )
    try:
        path = Path(raw).expanduser().resolve()
    except (OSError, RuntimeError, ValueError):  # names too long, link loops, NUL bytes
        raise refusal from None
    if not any(path == root or path.is_relative_to(root) for root in roots):
        raise refusal
    return path


def inspect_data_folder(raw: str) -> DataFolder:
    """Check a typed data folder before anything starts; raise :class:`JobError` saying why.

    Accepted: ``DIR/<class>/*`` or a prepared ``DIR/train/<class>/*`` (with an optional
    ``DIR/val/``), as ``python -m training train --data`` reads them.
    """
    raw = (raw or "").strip()
    if not raw:
        raise JobError("Type the path of a data folder.")
    path = allowed_data_path(raw)
    try:
        if not path.exists():
            raise JobError(f"The data folder {path} does not exist on the server.")
        if not path.is_dir():
            raise JobError(f"{path} is a file, not a folder.")
        train_root = data_layout.train_root(path)
        subdirs = sorted(
            p for p in train_root.iterdir() if p.is_dir() and not p.name.startswith(".")
        )
    except OSError as exc:
        raise JobError(f"The data folder {path} cannot be read: {_plain(exc)}.") from exc
    if len(subdirs) > MAX_CLASSES:
        raise JobError(
            f"{train_root} has {len(subdirs)} sub-folders: that is not a folder of classes "
            "(one folder of images per class)."
        )
    classes = tuple(p.name for p in subdirs if _has_image(p))
    if not subdirs:
        raise JobError(
            f"{path} has no class sub-folders: it needs one folder of images per class "
            "(DIR/happy/*.png, DIR/sad/*.png, …) or DIR/train/<class>/."
        )
    if len(classes) < 2:
        raise JobError(
            f"{train_root} needs at least two class sub-folders with images "
            f"(PNG or JPEG); found {len(classes)}."
        )
    has_val = data_layout.val_folder(path) is not None
    empty = tuple(p.name for p in subdirs if p.name not in classes)
    return DataFolder(
        path=path, train_root=train_root, classes=classes, has_val=has_val, empty=empty
    )


# --- the request and its command line ----------------------------------------------------


@dataclass(frozen=True)
class TrainRequest:
    """What the Train panel asks for; :meth:`argv` is the ``training`` command line."""

    data: Path
    arch: str
    out: Path
    epochs: int
    classes: tuple[str, ...] | None = None  # None: every class folder
    batch_size: int = DEFAULTS.batch_size
    image_size: int | None = None  # None: the architecture's default
    augment: bool | None = None  # None: the architecture's default
    class_weights: str = DEFAULTS.class_weights
    limit_per_class: int | None = None
    overwrite: bool = False

    def __post_init__(self) -> None:
        if self.arch not in ARCHITECTURES:
            raise JobError(f"Unknown architecture {self.arch!r}.")
        if self.epochs < 1 or self.batch_size < 1:
            raise JobError("Epochs and batch size must be at least 1.")
        smallest = ARCHITECTURES[self.arch].min_image_size
        if self.image_size is not None and self.image_size < smallest:
            raise JobError(f"{self.arch} needs images of at least {smallest}x{smallest} pixels.")
        if self.class_weights not in CLASS_WEIGHT_MODES:
            raise JobError(f"Unknown class weighting {self.class_weights!r}.")
        if self.classes is not None and len(self.classes) < 2:
            raise JobError("Choose at least two classes.")

    @property
    def name(self) -> str:
        return self.out.name

    def argv(self, overwrite: bool | None = None) -> list[str]:
        """Arguments after ``python -m training`` (``--overwrite`` only on a fresh start)."""
        args = [
            TRAIN_SUBCOMMAND,
            "--data", str(self.data),
            "--arch", self.arch,
            "--out", str(self.out),
            "--epochs", str(self.epochs),
            "--batch-size", str(self.batch_size),
            # One line per epoch: a progress bar per batch would fill the log.
            "--verbose", "2",
        ]  # fmt: skip
        if self.classes:
            args += ["--classes", ",".join(self.classes)]
        if self.image_size:
            args += ["--image-size", str(self.image_size)]
        if self.augment is not None:
            args.append("--augment" if self.augment else "--no-augment")
        if self.class_weights != DEFAULTS.class_weights:
            args += ["--class-weights", self.class_weights]
        if self.limit_per_class:
            args += ["--limit", str(self.limit_per_class)]
        if self.overwrite if overwrite is None else overwrite:
            args.append("--overwrite")
        return args


def run_folder_state(out: Path) -> str:
    """``new`` (nothing there), ``finished``, or ``unfinished`` (a run that can continue)."""
    if not (out / RUN_FILE).is_file() and not (out / BACKUP_DIR).is_dir():
        return "new"
    try:
        if read_run_info(out).meta.get("finished"):
            return "finished"
    except RunDirError:
        pass
    return "unfinished"


def _created_since(out: Path, since: float) -> bool:
    """Whether the run in ``out`` was begun at or after ``since`` (a time.time())."""
    try:
        created = read_run_info(out).meta.get("created")
        # run.json's timestamp is cut to whole seconds.
        return created is not None and datetime.fromisoformat(created).timestamp() >= since - 1
    except (RunDirError, TypeError, ValueError):
        return False


def check_replaceable(out: Path) -> None:
    """Refuse to let the dashboard replace a run it did not train.

    Only runs started from the dashboard (they hold its train.log) may be replaced from the
    browser: the shipped models and command-line runs are not a browser user's to delete.
    """
    if run_folder_state(out) != "new" and not (out / LOG_FILE).is_file():
        raise JobError(
            f"“{out.name}” in {out.parent} was not trained from this dashboard, so it is not "
            "replaced from here: choose another name."
        )


# --- the job ------------------------------------------------------------------------------


@dataclass
class TrainingJob:
    """One training process and what the dashboard shows about it."""

    request: TrainRequest
    command: list[str]
    process: subprocess.Popen
    log_path: Path
    started: float = field(default_factory=time.time)
    #: When the first job of this request started (a resumed job inherits it): a run.json
    #: created since then is this request's own run.
    origin: float = field(default_factory=time.time)
    ended: float | None = None
    cancelled: bool = False
    resumed: bool = False

    @property
    def returncode(self) -> int | None:
        return self.process.poll()

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    @property
    def state(self) -> str:
        """``running``, ``cancelling``, ``cancelled``, ``finished`` or ``failed``."""
        code = self.process.poll()
        if code is None:
            return "cancelling" if self.cancelled else "running"
        if self.cancelled:
            return "cancelled"
        return "finished" if code == 0 else "failed"

    def cancel(self, grace: float = KILL_GRACE_SECS) -> None:
        """SIGTERM to the process group, SIGKILL after ``grace`` seconds; returns at once."""
        if not self.running:
            return
        self.cancelled = True
        _signal_group(self.process, signal.SIGTERM)

        def _escalate() -> None:
            try:
                self.process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                _signal_group(self.process, signal.SIGKILL)

        threading.Thread(target=_escalate, daemon=True).start()

    def wait(self, timeout: float | None = None) -> int:
        return self.process.wait(timeout=timeout)

    def log_tail(self, lines: int = 30) -> str:
        return log_tail(self.log_path, lines)


def _signal_group(process: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(process.pid, sig)  # the process leads its own group (start_new_session)
    except (ProcessLookupError, PermissionError):
        pass


def log_tail(path: Path, lines: int = 30, max_bytes: int = 64_000) -> str:
    """The last ``lines`` lines of a log (reading at most ``max_bytes`` from its end)."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read()
    except OSError:
        return ""
    text = data.decode("utf-8", errors="replace").replace("\r", "\n")
    text = _ANSI_ESCAPE.sub("", text)  # Keras and absl colour their messages
    return "\n".join([ln for ln in text.splitlines() if ln.strip()][-lines:])


_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
#: The training command's own refusal ("error: ..."), or the last line of a traceback.
_FAILURE_LINE = re.compile(r"^(error: .+|[A-Za-z_][\w.]*(Error|Exception|Interrupt)\b.*)$")


def failure_reason(log: str) -> str | None:
    """Why a run failed, from its log: the last ``error:`` line of the training command,
    else the exception a traceback ended with; None when the log names neither. Only the
    last attempt counts (the log holds every start, each after a ``$ command`` line)."""
    lines = log.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("$ ")]
    for line in reversed(lines[starts[-1] + 1 :] if starts else lines):
        match = _FAILURE_LINE.match(line.strip())
        if match:
            return match.group(1).removeprefix("error: ")
    return None


_lock = threading.Lock()
_current: TrainingJob | None = None


def current_job() -> TrainingJob | None:
    """The last job started by this server (running or not), or None."""
    with _lock:
        return _current


def start_job(request: TrainRequest, resume: bool = False) -> TrainingJob:
    """Spawn the training command for ``request``; :class:`JobBusy` if one is running.

    ``resume`` re-runs the command without ``--overwrite``, so that training continues
    from the run's backup instead of starting over; unless the folder still holds the run
    that an ``--overwrite`` start was to replace (it was cancelled, or failed, before
    clearing it), which the resumed command must then replace as asked.
    """
    global _current
    with _lock:
        if _current is not None and _current.running:
            raise JobBusy(
                f"A run is already training (“{_current.request.name}”); only one run at a "
                "time: wait for it or cancel it."
            )
        request.out.mkdir(parents=True, exist_ok=True)
        log_path = request.out / LOG_FILE
        previous = _current if resume and _current is not None and _current.request == request else None
        origin = previous.origin if previous is not None else time.time()
        overwrite = None  # the request's own
        if resume:
            replace_pending = (
                request.overwrite
                and run_folder_state(request.out) != "new"
                and not _created_since(request.out, origin)
            )
            overwrite = None if replace_pending else False
        command = [*TRAIN_COMMAND, *request.argv(overwrite=overwrite)]
        env = dict(os.environ)
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        env["PYTHONUNBUFFERED"] = "1"  # the log shows each epoch as it ends
        # The package may not be installed (a checkout run in place): make it importable.
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(config.REPO_ROOT), env.get("PYTHONPATH", "")) if p
        )
        with log_path.open("ab") as log:
            log.write(f"\n$ {' '.join(command)}\n".encode())
            log.flush()
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=str(config.REPO_ROOT),
                env=env,
                start_new_session=True,
            )
        job = TrainingJob(
            request=request, command=command, process=process, log_path=log_path,
            resumed=resume, origin=origin,
        )
        _current = job
    # Reap the process as soon as it ends (no zombie while nobody polls), and stamp the end.
    threading.Thread(target=_watch, args=(job,), daemon=True).start()
    return job


def _watch(job: TrainingJob) -> None:
    job.process.wait()
    job.ended = time.time()


@atexit.register
def _cancel_at_exit() -> None:
    # A run outliving its server could be neither watched nor cancelled from the
    # dashboard; it stops with the server and can be resumed from the next one.
    job = _current
    if job is not None and job.running:
        job.cancelled = True
        _signal_group(job.process, signal.SIGTERM)


def reset_for_tests() -> None:
    """Forget the current job (kill it first if running)."""
    global _current
    with _lock:
        job = _current
        _current = None
    if job is not None and job.running:
        job.cancel(grace=1.0)
        job.wait(timeout=30)


# --- progress ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Progress:
    """Epochs finished (rows of history.csv) out of those requested, and the rows."""

    done: int
    total: int
    history: object | None  # pandas DataFrame, or None before the first epoch ends

    @property
    def fraction(self) -> float:
        return min(1.0, self.done / self.total) if self.total else 0.0


def read_progress(out: Path, total: int) -> Progress:
    """Progress of the run in ``out`` from its ``history.csv`` (missing or partial: 0 rows)."""
    if not (out / HISTORY_FILE).is_file():
        return Progress(0, total, None)
    try:
        frame = read_history(out)
    except RunDirError:
        return Progress(0, total, None)
    return Progress(len(frame), total, frame)


def progress_signature(out: Path | None) -> tuple:
    """Changes when the run's history or log grows: what the panel polls."""
    if out is None:
        return ()
    sig = []
    for name in (HISTORY_FILE, LOG_FILE, RUN_FILE):
        stamp = file_stamp(out / name)
        sig.append((name, None) if stamp is None else (name, *stamp))
    return tuple(sig)
