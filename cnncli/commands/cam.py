"""`cnn cam`: its click parameters, named as the fields of its options; it parses, calls
``cnncli.api.cam.run`` and renders."""

from __future__ import annotations

import sys

import click

from cnncli.choices import CAM_METHODS as METHODS
from cnncli.cli_options import Output, default as _default, format_option, image_options, warn as _warn
from cnncli.render.progress import progress_bar


def command() -> click.Command:
    from cnncli.api.cam import CamOptions

    @click.command(short_help="Class activation maps (Grad-CAM family, Eigen-CAM, Score-CAM).")
    @click.argument("model")
    @click.argument("images", metavar="IMAGES")
    @click.option("--layer", metavar="N|TENSOR",
                  help="The N-th Conv, numbered as `cnn stats` numbers them (its block output), or a 4-D tensor's name [default: the last Conv whose map is larger than 1x1].")
    @click.option("--method", type=click.Choice(METHODS), default=_default(CamOptions, "method"), show_default=True)
    @click.option("--guided", is_flag=True, default=_default(CamOptions, "guided"), help="Also guided Grad-CAM: the upsampled map times the guided-backprop image.")
    @click.option("--output", metavar="NAME", help="The output whose class is scored [default: the first].")
    @click.option("--class", "classes", metavar="C[,C…]", help="The class(es) to explain [default: the top one].")
    @click.option("--top", type=click.IntRange(min=1), metavar="K", help="The K classes with the largest score, per image.")
    @click.option("--tensor", metavar="T", help="Score channel --channel of tensor T, summed over space (detectors, segmenters).")
    @click.option("--channel", type=click.IntRange(min=0), metavar="C", help="The channel of --tensor.")
    @click.option("--out", default=_default(CamOptions, "out"), show_default=True, help="Output folder.")
    @click.option("--save-npy", is_flag=True, default=_default(CamOptions, "save_npy"), help="Also save the raw map at the layer's resolution (float32 HxW, after the ReLU).")
    @click.option("--figure/--no-figure", default=_default(CamOptions, "figure"), show_default=True,
                  help="Write the input | map | overlay figure beside each map.")
    @click.option("--batch-size", type=click.IntRange(min=1), default=_default(CamOptions, "batch_size"), show_default=True,
                  help="Images per forward run (and masked inputs per Score-CAM run).")
    @click.option("--evaluate", is_flag=True, default=_default(CamOptions, "evaluate"),
                  help="Also score each map: deletion and insertion AUC (20 steps) and ROAD's most/least-relevant-first averages.")
    @click.option("--quiet", is_flag=True, help="No progress bar.")
    @image_options
    @format_option
    def cam(model, images, quiet, fmt, columns, wide, **params):
        """Class activation maps of MODEL on IMAGES (an image or a .npy; or a folder, a glob, a text
        file of paths, or - for paths on stdin): why the network decided."""
        from cnncli.api import cam as command

        out = Output(fmt, columns, wide, command.CamRow)
        options = CamOptions.from_cli(params)
        with progress_bar(quiet, "class activation maps", min_total=4) as tick:
            result = command.run(model, images, options, stdin=sys.stdin if images == "-" else None, progress=tick,
                                 on_warning=_warn, arrays=False)
        out.write(result)
    return cam
