"""The Train panel: start a ``python -m training train`` run, watch it, cancel and resume it.

The run is a separate process (see :mod:`ferdash.training_jobs`), one per server: every
session sees the same job. The panel polls the run's ``history.csv`` and ``train.log``
once a second and redraws the curves and the progress bar when they change; when the
run ends it appears in the run selectors through the run catalog, which polls the
same folders.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from shiny import module, reactive, render, req, ui

from .. import plots, training_jobs
from ..runs.architectures import ARCHITECTURES
from ..train_settings import CLASS_WEIGHT_MODES, DEFAULTS
from ..runs.rundir import RunListing
from ..training_jobs import (
    DataFolder,
    JobError,
    TrainingJob,
    TrainRequest,
    check_replaceable,
    inspect_data_folder,
    read_progress,
    run_folder_state,
    validate_run_name,
)

POLL_SECS = 1.0
_CLASS_WEIGHT_LABELS = {"sqrt": "square root"}
#: The smallest image size any network takes: the lower bound of the size field.
SMALLEST_IMAGE_SIZE = min(spec.min_image_size for spec in ARCHITECTURES.values())

_STATE_TEXT = {
    "running": "Training",
    "cancelling": "Cancelling",
    "cancelled": "Cancelled",
    "finished": "Finished",
    "failed": "Failed",
}
_STATE_CLASS = {
    "running": "info",
    "cancelling": "warning",
    "cancelled": "warning",
    "finished": "success",
    "failed": "danger",
}


@module.ui
def panel_ui() -> ui.TagChild:
    arch_choices = {
        name: f"{name} (images of {spec.min_image_size} px and up)"
        for name, spec in ARCHITECTURES.items()
    }
    return ui.layout_sidebar(
        ui.sidebar(
            ui.input_text(
                "data", "Data folder (on the server)", placeholder="/data/fer2013 or /data/faces"
            ),
            ui.output_ui("data_note"),
            ui.output_ui("classes_ui"),
            ui.input_select("arch", "Architecture", choices=arch_choices, selected="fernet"),
            ui.input_text("name", "Run name", value="dashboard_run"),
            ui.output_ui("runs_root_note"),
            ui.layout_columns(
                ui.input_numeric("epochs", "Epochs", value=DEFAULTS.epochs, min=1, max=1000, step=1),
                ui.input_numeric(
                    "batch_size", "Batch size", value=DEFAULTS.batch_size, min=1, max=4096, step=1
                ),
                col_widths=[6, 6],
            ),
            ui.layout_columns(
                ui.input_numeric(
                    "image_size", "Image size (px)", value=48,
                    min=SMALLEST_IMAGE_SIZE, max=512, step=1,
                ),
                ui.input_numeric(
                    "limit", "Images per class (0 = all)", value=0, min=0, step=1
                ),
                col_widths=[6, 6],
            ),
            ui.input_select(
                "augment",
                "Augmentation",
                choices={"default": "architecture's default", "on": "on", "off": "off"},
            ),
            ui.input_select(
                "class_weights",
                "Class weights",
                choices={mode: _CLASS_WEIGHT_LABELS.get(mode, mode) for mode in CLASS_WEIGHT_MODES},
                selected=DEFAULTS.class_weights,
            ),
            ui.input_checkbox("overwrite", "Replace an existing run of that name", value=False),
            ui.div(
                ui.input_action_button("start", "Start training", class_="btn-primary"),
                ui.input_action_button("cancel", "Cancel", class_="btn-outline-danger"),
                ui.input_action_button("resume", "Resume", class_="btn-outline-primary"),
                class_="d-flex flex-wrap gap-2",
            ),
            width=340,
            open="always",
        ),
        ui.output_ui("message"),
        ui.output_ui("job_status"),
        # The plot exists only once there is a history to draw: created earlier, it
        # would be measured at no height and asked for an empty image.
        ui.output_ui("curves_area"),
        ui.output_ui("log"),
        # Not fillable: the plot keeps its height instead of stretching to the window.
        fillable=False,
    )


@module.server
def panel_server(
    input,
    output,
    session,
    runs_root: Callable[[], Path],
    runs: Callable[[], list[RunListing]] = lambda: [],
) -> None:
    """``runs_root()``: the folder new runs are written to (the first runs folder);
    ``runs()``: every listed run, whose names a new run must not take."""
    notice: reactive.Value[tuple[str, str] | None] = reactive.value(None)

    @reactive.calc
    def data_folder() -> DataFolder | JobError | None:
        if not input.data().strip():
            return None
        try:
            return inspect_data_folder(input.data())
        except JobError as exc:
            return exc

    @render.ui
    def data_note() -> ui.TagChild:
        folder = data_folder()
        if folder is None:
            return ui.div(
                "A folder of class sub-folders (DIR/happy/*.png, …) or a prepared one "
                "with train/ and val/.",
                class_="small text-body-secondary mb-2",
            )
        if isinstance(folder, JobError):
            return ui.div(str(folder), class_="small text-danger mb-2", id=session.ns("data_error"))
        where = "train/ and val/" if folder.has_val else (
            "train/ (validation split from it)" if folder.train_root != folder.path
            else "class folders (validation split from them)"
        )
        left_out = (
            f" Left out, no PNG or JPEG images: {', '.join(folder.empty)}." if folder.empty else ""
        )
        return ui.div(
            f"{len(folder.classes)} classes in {where}.{left_out}",
            class_="small text-success mb-2",
            id=session.ns("data_ok"),
        )

    @render.ui
    def classes_ui() -> ui.TagChild:
        folder = data_folder()
        if not isinstance(folder, DataFolder):
            return None
        return ui.input_checkbox_group(
            "classes",
            "Classes",
            choices=list(folder.classes),
            selected=list(folder.classes),
            inline=True,
        )

    @render.ui
    def runs_root_note() -> ui.TagChild:
        return ui.div(f"Written to {runs_root()}/<name>", class_="small text-body-secondary mb-2 text-break")

    def _request(overwrite_ok: bool) -> TrainRequest:
        folder = data_folder()
        if folder is None:
            raise JobError("Type the path of a data folder first.")
        if isinstance(folder, JobError):
            raise folder
        name = validate_run_name(input.name())
        chosen = tuple(c for c in folder.classes if c in (input.classes() or ()))
        if len(chosen) < 2:
            raise JobError("Choose at least two classes.")

        def _int(value: object, what: str, minimum: int) -> int:
            if value is None or not isinstance(value, (int, float)) or int(value) != value or value < minimum:
                raise JobError(f"{what} must be a whole number of at least {minimum}.")
            return int(value)

        epochs = _int(input.epochs(), "Epochs", 1)
        batch = _int(input.batch_size(), "Batch size", 1)
        size = _int(input.image_size(), "Image size", SMALLEST_IMAGE_SIZE)
        limit = _int(input.limit(), "Images per class", 0)
        out = runs_root() / name
        elsewhere = [r.path.parent for r in runs() if r.name == name and r.path.parent != runs_root()]
        if elsewhere:
            # Predict and Inspect list runs by name: a second "fer7" would be confused
            # with (or taken for) the one already there.
            raise JobError(
                f"A run named “{name}” already exists in {elsewhere[0]}: choose another name."
            )
        state = run_folder_state(out)
        if state == "finished" and not overwrite_ok:
            raise JobError(
                f"A finished run “{name}” already exists in {runs_root()}: choose another "
                "name, or tick “Replace an existing run of that name”."
            )
        if overwrite_ok:
            check_replaceable(out)
        return TrainRequest(
            data=folder.path,
            arch=input.arch(),
            out=out,
            epochs=epochs,
            classes=None if chosen == folder.classes and not folder.empty else chosen,
            batch_size=batch,
            image_size=size,
            augment={"default": None, "on": True, "off": False}[input.augment()],
            class_weights=input.class_weights(),
            limit_per_class=limit or None,
            overwrite=bool(input.overwrite()),
        )

    @reactive.effect
    @reactive.event(input.start)
    def _start() -> None:
        try:
            request = _request(overwrite_ok=bool(input.overwrite()))
            continuing = run_folder_state(request.out) == "unfinished" and not request.overwrite
            training_jobs.start_job(request)
        except JobError as exc:
            notice.set(("danger", str(exc)))
            return
        except OSError as exc:
            notice.set(("danger", f"The run could not be started: {exc}"))
            return
        text = (
            f"Started “{request.name}”: {request.arch}, {request.epochs} "
            f"epoch{'s' if request.epochs != 1 else ''}."
        )
        if continuing:
            text += " Its folder holds an unfinished run with these settings: it continues."
        notice.set(("success", text))

    @reactive.effect
    @reactive.event(input.cancel)
    def _cancel() -> None:
        job = training_jobs.current_job()
        if job is None or not job.running:
            notice.set(("warning", "No run is training."))
            return
        job.cancel()
        notice.set(("warning", f"Cancelling “{job.request.name}”… Resume continues it later."))

    @reactive.effect
    @reactive.event(input.resume)
    def _resume() -> None:
        job = training_jobs.current_job()
        if job is None:
            notice.set(("warning", "Nothing to resume: no run was started from this server."))
            return
        if job.running:
            notice.set(("warning", f"“{job.request.name}” is still training."))
            return
        if job.state == "finished":
            notice.set(("warning", f"“{job.request.name}” has finished; nothing to resume."))
            return
        try:
            training_jobs.start_job(job.request, resume=True)
        except JobError as exc:
            notice.set(("danger", str(exc)))
            return
        notice.set(("success", f"Resuming “{job.request.name}” from its last finished epoch."))

    def _signature() -> tuple:
        job = training_jobs.current_job()
        if job is None:
            return (None,)
        return (id(job), job.state, training_jobs.progress_signature(job.request.out))

    @reactive.poll(_signature, POLL_SECS)
    def snapshot() -> tuple[TrainingJob | None, training_jobs.Progress | None]:
        job = training_jobs.current_job()
        if job is None:
            return None, None
        return job, read_progress(job.request.out, job.request.epochs)

    @render.ui
    def message() -> ui.TagChild:
        value = notice()
        if value is None:
            return None
        kind, text = value
        job, _progress = snapshot()
        if kind == "success" and job is not None and not job.running:
            return None  # "Started …" is over: the job's card says how it ended
        return ui.div(text, class_=f"alert alert-{kind}", id=session.ns("notice"), role="alert")

    @render.ui
    def job_status() -> ui.TagChild:
        job, progress = snapshot()
        if job is None:
            return ui.p(
                "No run has been started from this server. Choose a data folder and press "
                "“Start training”; the run trains in a separate process while you use the "
                "other tabs.",
                class_="text-body-secondary",
                id=session.ns("idle"),
            )
        assert progress is not None
        state = job.state
        pct = 100 if state == "finished" else round(progress.fraction * 100)
        epochs_text = f"{progress.done} of {progress.total} epochs"
        if state == "finished" and progress.done < progress.total:
            epochs_text += " (stopped early)"
        bar_class = "progress-bar" + (
            " progress-bar-striped progress-bar-animated" if job.running else ""
        )
        return ui.card(
            ui.card_header(
                ui.span(f"{job.request.name}", class_="fw-semibold"),
                ui.span(
                    _STATE_TEXT[state],
                    class_=f"badge text-bg-{_STATE_CLASS[state]} ms-2",
                    id=session.ns("job_state"),
                    data_state=state,
                ),
            ),
            ui.div(
                ui.div(
                    f"{pct}%",
                    class_=bar_class,
                    style=f"width: {pct}%",
                ),
                class_="progress mb-2",
                role="progressbar",
                aria_valuenow=str(pct),
                aria_valuemin="0",
                aria_valuemax="100",
                aria_label="training progress",
                id=session.ns("progress_bar"),
            ),
            ui.div(epochs_text, id=session.ns("epochs_done"), data_done=str(progress.done)),
            _failure(job, session.ns("failure")),
            ui.div(
                f"{job.request.arch} on {job.request.data} → {job.request.out}",
                class_="small text-body-secondary text-break",
            ),
            id=session.ns("job"),
        )

    # A Value, not a calc: it notifies only when it flips, so each poll's new history
    # redraws the plot inside the area without re-creating the area.
    has_history = reactive.value(False)

    @reactive.effect
    def _track_history() -> None:
        job, progress = snapshot()
        has_history.set(
            job is not None and progress is not None and progress.history is not None
            and len(progress.history) > 0
        )

    @render.ui
    def curves_area() -> ui.TagChild:
        if not has_history():
            return None
        return ui.output_plot("curves", height="360px", fill=False)

    @render.plot(alt="Loss and accuracy per epoch of the run being trained")
    def curves():
        job, progress = snapshot()
        req(job is not None and progress is not None and progress.history is not None)
        return plots.history_figure({job.request.name: progress.history})

    @render.ui
    def log() -> ui.TagChild:
        job, _progress = snapshot()
        if job is None:
            return None
        tail = job.log_tail(40)
        failed = job.state == "failed"
        return ui.tags.details(
            ui.tags.summary("Training log (last lines)" + (" — the run failed" if failed else "")),
            # column-reverse: the box opens scrolled to its end, where the news is.
            ui.div(
                ui.tags.pre(tail or "(empty)", class_="small mb-0", style="white-space: pre-wrap;"),
                class_="bg-body-tertiary p-2",
                style="max-height: 22em; overflow: auto; display: flex; flex-direction: column-reverse;",
            ),
            open=failed,
            id=session.ns("log_tail"),
            class_="mt-2",
        )


def _failure(job: TrainingJob, element_id: str) -> ui.TagChild:
    """Why a failed run failed, in sight (not only at the end of its log)."""
    if job.state != "failed":
        return None
    reason = training_jobs.failure_reason(job.log_tail(200))
    return ui.div(
        ui.strong("The run failed: "),
        reason or "see the training log below.",
        class_="alert alert-danger mt-2 mb-0 py-2 text-break",
        id=element_id,
    )
