"""The one error type of the evaluation room: its message is a single line naming the problem and the fix."""


class EvaluationError(ValueError):
    """Bad evaluation input (shapes, counts, files, settings); CLIs print it as one line and exit non-zero."""
