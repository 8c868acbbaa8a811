"""`cnn report`: its click parameters, named as the fields of its options; it parses, calls
``cnncli.api.report.run`` and renders."""

from __future__ import annotations

import sys

import click

from cnncli.choices import MODES
from cnncli.cli_options import Output, default as _default, format_option, image_options, warn as _warn
from cnncli.render.progress import progress_bar


def command() -> click.Command:
    from cnncli.api.report import ReportOptions

    @click.command(short_help="One HTML page: costs, filters, top-k and projections of every layer.")
    @click.argument("model")
    @click.argument("images")
    @click.option("--out", default=_default(ReportOptions, "out"), show_default=True,
                  help="Folder for the page (index.html) and its pictures (img/).")
    @click.option("--layers", metavar="N[,N…]|all", help="Conv layers to show, numbered as `cnn stats` numbers them "
                  "[default: all].")
    @click.option("-k", "k", type=click.IntRange(min=1), default=_default(ReportOptions, "k"), show_default=True,
                  help="Top activations (images) per channel.")
    @click.option("--channels", metavar="N|all", type=str, default=_default(ReportOptions, "channels"), show_default=True,
                  help="The N strongest channels of each layer.")
    @click.option("--top", type=click.IntRange(min=0), default=_default(ReportOptions, "top"), show_default=True,
                  help="In each image's section, its N strongest maps of each layer, projected (0: none).")
    @click.option("--per-image", type=click.IntRange(min=0), default=_default(ReportOptions, "per_image"),
                  show_default=True, help="The first N images get a section: the image, its class maps, its --top maps.")
    @click.option("--mode", type=click.Choice(MODES), default=_default(ReportOptions, "mode"), show_default=True)
    @click.option("--batch-size", type=click.IntRange(min=1), default=_default(ReportOptions, "batch_size"),
                  show_default=True, help="Images per forward run.")
    @click.option("--quiet", is_flag=True, help="No progress messages on stderr.")
    @image_options
    @format_option
    def report(model, images, quiet, fmt, columns, wide, **params):
        """One self-contained HTML page (DIR/index.html, open it from disk) for MODEL over IMAGES (a folder,
        a glob, a text file of paths, or - for paths on stdin): the stats table and cost plot, connectivity,
        and per conv layer its filters, its strongest channels' top-k images with their receptive-field
        patches and each channel's deconvnet projection; per image its class maps."""
        from cnncli.api import report as command
        from cnncli.render.console import info

        out = Output(fmt, columns, wide, command.ReportRow)
        options = ReportOptions.from_cli(params)
        with progress_bar(quiet, "scanning images", min_total=options.batch_size) as tick:
            result = command.run(model, images, options, stdin=sys.stdin if images == "-" else None,
                                 progress=None if quiet else info, on_warning=_warn, tick=tick)
        out.write(result)
    return report
