"""The one error the training command reports as a message (exit status 2), not a traceback."""


class TrainingError(RuntimeError):
    """Training cannot start (or go on); the message says why and what to do."""
