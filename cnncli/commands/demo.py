"""`cnn demo`: its click parameters, named as the fields of its options; it parses, calls
``cnncli.api.demo.run`` and renders."""

from __future__ import annotations

import click

from cnncli.choices import PROVIDERS
from cnncli.cli_options import Output, default as _default, format_option, warn as _warn


def command() -> click.Command:
    from cnncli.api.demo import DemoOptions

    @click.command(short_help="The whole tool on the bundled trained network and photos.")
    @click.option("--out", default=_default(DemoOptions, "out"), show_default=True, help="Folder for the gallery.")
    @click.option("--top", type=click.IntRange(min=1), default=_default(DemoOptions, "top"), show_default=True,
                  help="Channels per layer and image.")
    @click.option("--provider", type=click.Choice(PROVIDERS), default=_default(DemoOptions, "provider"), show_default=True)
    @click.option("--quiet", is_flag=True, help="No progress messages on stderr.")
    @format_option
    def demo(quiet, fmt, columns, wide, **params):
        """Stats, connectivity and projections of the bundled trained network on the bundled photos, as a gallery."""
        from cnncli.api import demo as command
        from cnncli.render.console import info

        out = Output(fmt, columns, wide, command.DemoRow)
        out.write(command.run(DemoOptions.from_cli(params), progress=None if quiet else info, on_warning=_warn))
    return demo
