"""The teacher of ``python -m training train --distill-from RUN`` (knowledge distillation).

A finished run whose answers a new run learns from: each training target becomes a mix
of the teacher's probabilities and the label (``training.data.load_training_data``). The
teacher answers through the app's own engine (:func:`ferdash.runs.model_store.get_loaded_run`:
the run's TF Lite copy, its flip TTA and its temperature), so a student learns the
probabilities that people using the app read, once per training image.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from ferdash.runs.rundir import RunDirError, RunInfo, read_run_info
from training.errors import TrainingError


class Teacher:
    """``teacher(batch (N, H, W, 1) float 0-255) -> (N, classes)`` probabilities."""

    def __init__(self, info: RunInfo, loaded: Any) -> None:
        self.info = info
        self._loaded = loaded

    @classmethod
    def load(
        cls, run_dir: str | Path, input_size: tuple[int, int], log: Callable[[str], Any] = print
    ) -> "Teacher":
        """The run in ``run_dir``, checked to take ``input_size``; raises
        :class:`TrainingError` saying why it cannot teach."""
        from ferdash.runs.model_store import get_loaded_run
        from ferdash.runs.predictor import ModelLoadError

        try:
            info = read_run_info(run_dir)
        except RunDirError as exc:
            raise TrainingError(f"--distill-from {run_dir}: not a run directory ({exc})") from exc
        if tuple(info.input_size) != tuple(input_size):
            raise TrainingError(
                f"--distill-from {run_dir}: its input is {info.input_size[0]}x{info.input_size[1]}, "
                f"this run's is {input_size[0]}x{input_size[1]}"
            )
        try:
            loaded = get_loaded_run(info)
        except ModelLoadError as exc:
            raise TrainingError(f"--distill-from {run_dir}: {exc}") from exc
        temperature = "none" if loaded.temperature is None else f"{loaded.temperature:g}"
        log(
            f"learning from {info.path} ({info.name}: {loaded.engine_name}, "
            f"tta={loaded.tta or 'none'}, temperature {temperature})"
        )
        return cls(info, loaded)

    def check_classes(self, classes: list[str]) -> None:
        """Refuse a teacher whose classes (in order) are not the new run's."""
        if list(self.info.classes) != list(classes):
            raise TrainingError(
                f"--distill-from {self.info.path}: it answers {', '.join(self.info.classes)}; "
                f"this run learns {', '.join(classes)}"
            )

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return self._loaded.predict(images)
