"""`cnn top`: its click parameters, named as the fields of its options; it parses, calls
``cnncli.api.top.run`` and renders."""

from __future__ import annotations

import sys

import click

from cnncli.choices import ENGINES, MODES, NORMS
from cnncli.cli_options import Output, default as _default, format_option, image_options, warn as _warn
from cnncli.render.progress import progress_bar


def command() -> click.Command:
    from cnncli.api.top import TopOptions

    @click.command(short_help="Top-k activations over your images, with RF patches.")
    @click.argument("model")
    @click.argument("images")
    @click.option("--layer", type=int, required=True, help="The N-th Conv, numbered as `cnn stats` numbers them.")
    @click.option("--channel", "channels", metavar="N[,N…]", help="Channels to show.")
    @click.option("--channels", "n_channels", metavar="K|all", help="K channels chosen at random (--seed), or all [default: 16].")
    @click.option("--seed", type=int, default=_default(TopOptions, "seed"), show_default=True,
                  help="Seed for the random choice of channels.")
    @click.option("-k", "k", type=click.IntRange(min=1), default=_default(TopOptions, "k"), show_default=True,
                  help="Top activations per channel.")
    @click.option("--mode", type=click.Choice(MODES), default=_default(TopOptions, "mode"), show_default=True)
    @click.option("--norm", type=click.Choice(NORMS), default=_default(TopOptions, "norm"), show_default=True,
                  help="How projections become pixels, as `cnn project --norm` (percentile: 0 at mid-grey, scaled by the 99.5th percentile of |x|; grey: by the largest |x|, fainter on deep layers).")
    @click.option("--batch-size", type=click.IntRange(min=1), default=_default(TopOptions, "batch_size"), show_default=True,
                  help="Images per forward run.")
    @click.option("--out", default=_default(TopOptions, "out"), show_default=True, help="Output folder.")
    @click.option("--quiet", is_flag=True, help="No progress bar.")
    @click.option("--engine", type=click.Choice(ENGINES), default=_default(TopOptions, "engine"), show_default=True,
                  help="Scan in this process, or on Ray Data (pip install 'cnncli[ray]').")
    @click.option("--address", metavar="ADDRESS", help="Ray: join this cluster ('auto', 'ray://host:10001') [default: start a local runtime].")
    @click.option("--workers", type=click.IntRange(min=1), metavar="N", help="Ray: model actors, one session each [default: from the cluster].")
    @image_options
    @format_option
    def top(model, images, quiet, fmt, columns, wide, **params):
        """The top-k activations of a layer's feature maps over IMAGES (a folder, a glob, a text file of
        paths, or - for paths on stdin), each projected alone beside its receptive-field patch."""
        from cnncli.api import top as command

        out = Output(fmt, columns, wide, command.ChannelTopRow)
        options = TopOptions.from_cli(params)
        with progress_bar(quiet, "scanning images") as tick:
            result = command.run(model, images, options, stdin=sys.stdin if images == "-" else None, progress=tick,
                                 on_warning=_warn, arrays=False)
        out.write(result)
    return top
