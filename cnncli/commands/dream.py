"""`cnn dream`: its click parameters, named as the fields of its options; it parses, calls
``cnncli.api.dream.run`` and renders."""

from __future__ import annotations

import click

from cnncli.choices import DREAM_OBJECTIVES
from cnncli.cli_options import Output, default as _default, format_option, image_options, warn as _warn
from cnncli.render.progress import progress_bar


def command() -> click.Command:
    from cnncli.api.dream import DreamOptions

    @click.command(short_help="What a unit wants to see: an image optimised to excite it (Lucent's method).")
    @click.argument("model")
    @click.option("--layer", type=int, help="The N-th Conv, numbered as `cnn stats` numbers them (its block output).")
    @click.option("--tensor", help="Any 4-D tensor of the graph, or a 2-D one such as the logits.")
    @click.option("--channel", "channels", metavar="N[,N…]|all", help="Channels to visualise, one image each, optimised together.")
    @click.option("--objective", type=click.Choice(DREAM_OBJECTIVES), default=_default(DreamOptions, "objective"), show_default=True,
                  help="channel: the channel's mean; neuron: its centre unit; layer: the mean of the squared layer (no --channel).")
    @click.option("--steps", type=int, default=_default(DreamOptions, "steps"), show_default=True, help="Adam steps.")
    @click.option("--seed", type=int, default=_default(DreamOptions, "seed"), show_default=True,
                  help="Seeds the starting images and the random transforms.")
    @click.option("--lr", type=float, default=_default(DreamOptions, "lr"), show_default=True, help="Adam's learning rate.")
    @click.option("--batch-size", type=int, default=_default(DreamOptions, "batch_size"), show_default=True,
                  help="Channels optimised in one batched run.")
    @click.option("--out", default=_default(DreamOptions, "out"), show_default=True, help="Output folder.")
    @click.option("--quiet", is_flag=True, help="No progress bar.")
    @image_options
    @format_option
    def dream(model, quiet, fmt, columns, wide, **params):
        """An image optimised to excite channels of a layer of MODEL (feature visualisation as
        Lucent does it: FFT-parametrised, colour-decorrelated image; pad, jitter, scale and rotate
        at every step; Adam). One PNG per channel and a montage under --out."""
        from cnncli.api import dream as command

        out = Output(fmt, columns, wide, command.DreamRow)
        options = DreamOptions.from_cli(params)
        with progress_bar(quiet, "dreaming", min_total=0) as tick:
            result = command.run(model, options, progress=tick, on_warning=_warn)
        out.write(result)

    for p in dream.params:  # the shared --size is the model input's; here it is the image optimised
        if p.name == "size":
            p.help = "Size of the optimised image, N or HxW [default: the model input's]; resized to the input each step."
            p.metavar = "N|HxW"
    return dream
