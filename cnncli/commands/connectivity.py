"""`cnn connectivity`: its click parameters, named as the fields of its options; it parses, calls
``cnncli.api.connectivity.run`` and renders."""

from __future__ import annotations

import click

from cnncli.cli_options import Output, format_option, shape_options, warn as _warn


def command() -> click.Command:
    from cnncli.api.connectivity import ConnectivityOptions

    @click.command(short_help="Weights fully connected vs locally connected vs shared.")
    @click.argument("model", required=False)
    @shape_options
    @format_option
    @click.option("--input", metavar="HxW", help="Calculator: image size (or CxHxW).")
    @click.option("--units", type=click.IntRange(min=1), help="Calculator: number of hidden units.")
    @click.option("--kernel", metavar="KxK", help="Calculator: window size of a locally connected unit.")
    def connectivity(model, fmt, columns, wide, **params):
        """Weights of each conv layer fully connected vs locally connected vs shared.

        Give MODEL, or the calculator form: --input 100x100 --units 100000 --kernel 3x3.
        """
        from cnncli.api import connectivity as command

        out = Output(fmt, columns, wide, command.row_type())
        out.write(command.run(model, ConnectivityOptions.from_cli(params), on_warning=_warn))
    return connectivity
