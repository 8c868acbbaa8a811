"""Exceptions and warnings the library raises; the CLI maps them to exit codes in one place (cli.py)."""


class CnnError(Exception):
    """A problem the user can fix: unreadable model, unsupported op, unwritable output (exit 1)."""


class ModelError(CnnError):
    """The model file cannot be read or is not a usable ONNX model."""


class UnsupportedError(CnnError):
    """The model uses something cnncli cannot handle (an op on the reverse path, say)."""


class BadArgument(CnnError):
    """An argument names something that does not exist or is out of range (exit 2).

    ``param`` is the option or argument it concerns, e.g. ``--layer``; None for a rule between
    options (the CLI prints it as a plain usage error).
    """

    def __init__(self, param: str | None, message: str):
        super().__init__(message)
        self.param = param


class CnnWarning(UserWarning):
    """A warning of a run that goes on (the CLI prints it as one `Warning: …` line); the Python
    API issues each of a result's ``warnings`` as one when the caller passed no ``on_warning``."""


def warning_text(message: object, category: type) -> str:
    """The one-line text a Python warning is told with (numpy's floating-point ones say where)."""
    text = str(message).strip() or category.__name__
    if category is RuntimeWarning and "encountered in" in text:  # numpy's floating point errors
        text = f"numerical problem in the activations: {text}"
    return text
