"""The run selector shared by the Inspect panels, and the "extra runs folder" input.

It lists the same run catalog as the Predict panel (``ferdash.panels.catalog.run_catalog``),
broken runs included: those are listed so the panels can say what is wrong with them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from shiny import module, reactive, render, ui

from ..inspect_data import (
    Loaded,
    has_model,
    inspect_problems,
    no_runs_message,
    run_label,
    load_evaluation,
    selector_choices,
)
from ..runs.rundir import (
    DEFAULT_RUN_NAME,
    RUN_FILE,
    Evaluation,
    RunListing,
    discover_runs,
    preferred_run,
)


@dataclass(frozen=True)
class RunSelection:
    """What the selector hands to the panels (all callables are reactive)."""

    #: Every run of the catalog.
    runs: Callable[[], list[RunListing]]
    #: The run the panels show, or None when there is none.
    run: Callable[[], RunListing | None]
    #: The run followed by the other runs chosen for overlay on the training history.
    history_runs: Callable[[], list[RunListing]]
    #: Selects a run by its folder (e.g. from a click in the runs table).
    select: Callable[[str], None]
    #: The folders searched for runs (for the "no runs" message).
    run_dirs: Callable[[], list[Path]]
    #: The chosen run's evaluation.json (cached per file version), None without a run.
    evaluation: Callable[[], Loaded[Evaluation] | None]

    def missing_message(self) -> str:
        """Why no run is shown: none exists (and how to train one), or none is chosen."""
        if not self.runs():
            return no_runs_message(self.run_dirs())
        return "Choose a run in the sidebar."

    def evaluation_problem(self) -> ui.TagChild:
        """The alert a panel drawn from the evaluation shows instead of it, or None."""
        listing = self.run()
        if listing is None:
            return ui.div(self.missing_message(), class_="alert alert-info")
        loaded = self.evaluation()
        if loaded is not None and not loaded.ok:
            return ui.div(
                ui.strong(f"No evaluation for {listing.name}: "), loaded.error,
                class_="alert alert-warning",
            )
        return None


def _choices(listings: list[RunListing]) -> dict[str, str]:
    return selector_choices((listing.path, listing.name, run_label(listing)) for listing in listings)


@module.ui
def selector_ui() -> ui.TagChild:
    return ui.TagList(
        ui.input_select("run", "Run", choices=[]),
        ui.input_selectize(
            "overlay",
            "Overlay on the training history",
            choices=[],
            multiple=True,
            options={"placeholder": "other runs…", "plugins": ["remove_button"]},
        ),
        ui.output_ui("notes"),
        ui.hr(),
        ui.input_text("folder", "Also list runs in folder", placeholder="/path/to/runs"),
        ui.input_action_button("add_folder", "List runs", class_="btn-sm btn-outline-primary"),
        ui.output_ui("folder_note"),
    )


@module.server
def selector_server(
    input,
    output,
    session,
    runs: Callable[[], list[RunListing]],
    run_dirs: Callable[[], list[Path]],
    extra_dirs: reactive.Value[list[Path]] | None = None,
) -> RunSelection:
    # The catalog re-polls every couple of seconds while a run trains; re-sending the
    # same choices would close an open drop-down, so only send them when they change.
    last_choices: dict[str, str] | None = None

    @reactive.effect
    def _update_choices() -> None:
        nonlocal last_choices
        choices = _choices(runs())
        if choices == last_choices:
            return
        last_choices = choices
        with reactive.isolate():
            current = input.run()
            overlay = input.overlay() or ()
        if current in choices:
            selected = current
        else:
            # The run Predict opens on too (the shipped seven-class run), else the first.
            listings = runs()
            first = preferred_run([r.info for r in listings if r.info is not None], DEFAULT_RUN_NAME)
            selected = str(first.path) if first is not None else next(iter(choices), None)
        ui.update_select("run", choices=choices, selected=selected)
        ui.update_selectize(
            "overlay", choices=choices, selected=[p for p in overlay if p in choices]
        )

    @reactive.calc
    def run() -> RunListing | None:
        wanted = input.run()
        return next((r for r in runs() if str(r.path) == wanted), None)

    @reactive.calc
    def history_runs() -> list[RunListing]:
        main = run()
        chosen = [main] if main is not None else []
        by_path = {str(r.path): r for r in runs()}
        for path in input.overlay() or ():
            listing = by_path.get(path)
            if listing is not None and listing not in chosen:
                chosen.append(listing)
        return chosen

    def select(path: str) -> None:
        # The module's own session: the id "run" is namespaced to this selector.
        ui.update_select("run", selected=path, session=session)

    @reactive.calc
    def evaluation() -> Loaded[Evaluation] | None:
        listing = run()
        return None if listing is None else load_evaluation(listing.path)

    selection = RunSelection(
        runs=runs, run=run, history_runs=history_runs, select=select, run_dirs=run_dirs,
        evaluation=evaluation,
    )

    @render.ui
    def notes() -> ui.TagChild:
        listing = run()
        if listing is None:
            return ui.div(selection.missing_message(), class_="alert alert-info small")
        items: list[ui.TagChild] = [
            ui.div(problem, class_="alert alert-warning small py-1 px-2 mb-1")
            for problem in inspect_problems(listing)
        ]
        if not has_model(listing):
            items.append(
                ui.div(
                    "No model.keras: this run can be inspected here but not used to predict.",
                    class_="text-muted small",
                )
            )
        items.append(ui.div(str(listing.path), class_="text-muted small text-break"))
        return ui.TagList(*items)

    folder_message: reactive.Value[tuple[str, str] | None] = reactive.value(None)

    @reactive.effect
    @reactive.event(input.add_folder)
    def _add_folder() -> None:
        if extra_dirs is None:
            return
        raw = input.folder().strip()
        if not raw:
            extra_dirs.set([])
            folder_message.set(None)
            return
        path = Path(raw).expanduser()
        try:
            is_folder = path.is_dir()
            is_run = is_folder and (path / RUN_FILE).is_file()
        except (OSError, ValueError) as exc:  # a name too long, a NUL byte: words, not a crash
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not a valid path"
            folder_message.set(("danger", f"That folder cannot be read: {reason}."))
            return
        if not is_folder:
            folder_message.set(("danger", f"{path} is not a folder on this machine."))
            return
        found = len(discover_runs(path))
        if not found:
            hint = (
                f" It is a run itself: give the folder that holds it, {path.parent}."
                if is_run
                else " A runs folder holds one sub-folder per run, each with its run.json."
            )
            folder_message.set(("warning", f"No runs in {path}.{hint}"))
            return
        extra_dirs.set([path])
        folder_message.set(
            ("success", f"Also listing {found} run{'s' if found != 1 else ''} in {path}.")
        )

    @render.ui
    def folder_note() -> ui.TagChild:
        message = folder_message()
        if message is None:
            return None
        kind, text = message
        return ui.div(text, class_=f"text-{kind} small mt-1")

    return selection
