"""`cnn filters`: its click parameters, named as the fields of its options; it parses, calls
``cnncli.api.filters.run`` and renders."""

from __future__ import annotations

import click

from cnncli.cli_options import Output, default as _default, format_option, warn as _warn


def command() -> click.Command:
    from cnncli.api.filters import FiltersOptions

    @click.command(short_help="A conv layer's kernels as a montage.")
    @click.argument("model")
    @click.option("--layer", type=int, required=True, help="The N-th Conv, numbered as `cnn stats` numbers them.")
    @click.option("--out", default=_default(FiltersOptions, "out"), show_default=True, help="Output folder.")
    @format_option
    def filters(model, fmt, columns, wide, **params):
        """A conv layer's kernels as a montage: RGB for the first layer, strongest input slice in grey deeper."""
        from cnncli.api import filters as command

        out = Output(fmt, columns, wide, command.FilterRow)
        out.write(command.run(model, FiltersOptions.from_cli(params), on_warning=_warn))
    return filters
