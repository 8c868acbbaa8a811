"""The click parameters several `cnn` commands share (output format and columns, input shapes,
image preprocessing and runtime), named as the fields of the options dataclasses they fill, and
where a command's result goes (``Output``)."""

from __future__ import annotations

import sys

import click

from cnncli.choices import FORMATS, PRESETS, PROVIDERS


def format_option(f):
    """--format, --columns and --wide, handed to the command as ``fmt``, ``columns`` and ``wide``."""
    options = [
        click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True,
                     help="Output format for stdout."),
        click.option("--columns", metavar="COL,COL…",
                     help="Only these columns, in this order (table, markdown, csv; names as in JSON, or headers)."),
        click.option("--wide", is_flag=True,
                     help="Every column in a terminal's table [default: those that fit; a pipe gets every column]."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


class Output:
    """Where a command's result goes: stdout, in ``fmt``, with the picked ``columns`` (checked
    against the command's row type before any work) or every one with ``wide``."""

    def __init__(self, fmt: str, columns: str | None, wide: bool, row_type: type):
        from cnncli.render import pick_columns

        self.fmt, self.wide, self.columns = fmt, wide, None
        if columns is not None:
            if wide:
                raise click.UsageError("give --columns or --wide, not both")
            self.columns = tuple(c.strip() for c in columns.split(",") if c.strip())
            pick_columns(row_type, self.columns)

    def write(self, result) -> None:
        from cnncli.render import render

        render(result.document(), self.fmt, sys.stdout, columns=self.columns, wide=self.wide)


def warn(text: str) -> None:
    """A run's warning, printed on stderr as it comes (each command's ``on_warning``)."""
    from cnncli.render.console import warn as say_warning

    say_warning(text)


def default(cls, name: str):
    return cls.default(name)


def shape_options(f):
    from cnncli.api.options import ShapeOptions

    f = click.option(
        "--input-shape", "input_shapes", multiple=True, metavar="NAME=1x3x224x224",
        help="Set an input's shape (repeatable).",
    )(f)
    f = click.option("--batch", type=int, default=default(ShapeOptions, "batch"), show_default=True,
                     help="Value for a symbolic leading (batch) dim.")(f)
    return f


def image_options(f):
    """Preprocessing, input choice and runtime options shared by project, top and features."""
    from cnncli.api.options import ImageOptions

    options = [
        click.option("--preset", type=click.Choice(PRESETS),
                     help="Image preprocessing [default: the model's own if it names one, else imagenet for 3 channels, unit otherwise]."),
        click.option("--mean", metavar="M[,M,M]", help="Override the preset's mean."),
        click.option("--std", metavar="S[,S,S]", help="Override the preset's std."),
        click.option("--bgr/--rgb", default=None, help="Override the preset's channel order."),
        click.option("--size", metavar="HxW", help="Input size where the model's height/width are symbolic."),
        click.option("--input-name", help="Which model input, for models with several."),
        click.option("--provider", type=click.Choice(PROVIDERS), default=default(ImageOptions, "provider"),
                     show_default=True, help="onnxruntime execution provider."),
        click.option("--verbose", is_flag=True, default=default(ImageOptions, "verbose"), help="Let onnxruntime's log lines through to stderr."),
        click.option("--max-memory", metavar="SIZE",
                     help="Refuse a run whose estimated memory exceeds SIZE (e.g. 64G) [default: the memory available]."),
    ]
    for option in reversed(options):
        f = option(f)
    return f
