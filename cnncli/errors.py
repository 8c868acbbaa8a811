"""Exceptions the library raises; the CLI maps them to exit codes in one place (cli.py)."""


class CnnError(Exception):
    """A problem the user can fix: unreadable model, unsupported op, unwritable output (exit 1)."""


class ModelError(CnnError):
    """The model file cannot be read or is not a usable ONNX model."""


class UnsupportedError(CnnError):
    """The model uses something cnncli cannot handle (an op on the reverse path, say)."""


class BadArgument(CnnError):
    """An argument names something that does not exist or is out of range (exit 2).

    ``param`` is the option or argument it concerns, e.g. ``--layer``.
    """

    def __init__(self, param: str, message: str):
        super().__init__(message)
        self.param = param
