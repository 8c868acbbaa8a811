"""`cnn stats`: its click parameters, named as the fields of its options; it parses, calls
``cnncli.api.stats.run`` and renders."""

from __future__ import annotations

import click

from cnncli.choices import GROUPINGS
from cnncli.cli_options import Output, default as _default, format_option, shape_options, warn as _warn


def command() -> click.Command:
    from cnncli.api.stats import StatsOptions

    @click.command(short_help="Per-layer MACs, params, CPR, memory and receptive field.")
    @click.argument("model")
    @shape_options
    @format_option
    @click.option("--by", type=click.Choice(GROUPINGS), default=_default(StatsOptions, "by"), show_default=True,
                  help="One row per layer, or per op type.")
    @click.option("--sort", metavar="COLUMN", help="Sort rows by a column (numbers largest first).")
    @click.option("--top", type=click.IntRange(min=1), metavar="N", help="Keep only the first N rows (after --sort).")
    @click.option("--plot", type=click.Path(dir_okay=False), metavar="FILE.png", help="Save a per-layer cost plot.")
    def stats(model, fmt, columns, wide, **params):
        """Per-layer MACs, params, CPR, activation memory and receptive field of MODEL (a path, or - for stdin)."""
        from cnncli.api import stats as command

        options = StatsOptions.from_cli(params)
        out = Output(fmt, columns, wide, command.row_type(options.by))
        out.write(command.run(model, options, on_warning=_warn))
    return stats
