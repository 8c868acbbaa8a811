"""`cnn project`: its click parameters, named as the fields of its options; it parses, calls
``cnncli.api.project.run`` and renders."""

from __future__ import annotations

import click

from cnncli.choices import IG_METHODS, KEEPS, MODES, NORMS
from cnncli.cli_options import Output, default as _default, format_option, image_options, warn as _warn
from cnncli.render.progress import progress_bar


def command() -> click.Command:
    from cnncli.api.project import ProjectOptions

    @click.command(short_help="Project feature maps back to pixels (deconvnet).")
    @click.argument("model")
    @click.argument("image", metavar="INPUT")
    @click.option("--layer", type=int, help="The N-th Conv, numbered as `cnn stats` numbers them (its block output).")
    @click.option("--tensor", help="Any 4-D tensor of the graph, or a 2-D one such as the logits.")
    @click.option("--channel", "channels", metavar="N[,N…]|all", help="Channels to project.")
    @click.option("--top", type=int, metavar="K", help="The K channels with the largest activation on this input (all of them, with a warning, when K is more) [default: 4, or all if fewer].")
    @click.option("--mode", type=click.Choice(MODES), default=_default(ProjectOptions, "mode"), show_default=True)
    @click.option("--keep", type=click.Choice(KEEPS), default=_default(ProjectOptions, "keep"), show_default=True,
                  help="Seed the channel's whole map, or only its strongest activation.")
    @click.option("--norm", type=click.Choice(NORMS), default=_default(ProjectOptions, "norm"), show_default=True,
                  help="How projections become pixels (percentile: 0 at mid-grey, symmetric, scaled by the 99.5th percentile of |x|; grey: the same scaled by the largest |x|, as in the paper, fainter on deep layers).")
    @click.option("--out", default=_default(ProjectOptions, "out"), show_default=True, help="Output folder.")
    @click.option("--save-npy", is_flag=True, default=_default(ProjectOptions, "save_npy"), help="Also save the raw float32 projection, shaped like the model input.")
    @click.option("--export-reverse", type=click.Path(dir_okay=False), metavar="FILE.onnx", help="Write the generated reverse graph.")
    @click.option("--batch-size", type=click.IntRange(min=1), default=_default(ProjectOptions, "batch_size"),
                  help="Channels per batched reverse run [default: as many as fit 128 MiB by the memory estimate, 1 to 64].")
    @click.option("--figure/--no-figure", default=_default(ProjectOptions, "figure"), show_default=True,
                  help="Write the input | projection | overlay figure beside each projection PNG.")
    @click.option("--smooth", type=click.IntRange(min=1), metavar="N",
                  help="SmoothGrad: the gradient averaged over N noisy copies of the input (with --mode backprop).")
    @click.option("--noise", type=float, metavar="F", help="--smooth's σ as a share of the input's range (max − min) [default: 0.15].")
    @click.option("--integrated", type=click.IntRange(min=1), metavar="N",
                  help="Integrated gradients with N steps from --baseline (with --mode backprop); the completeness error is reported.")
    @click.option("--baseline", metavar="black|blur|FILE", help="--integrated's baseline: a black picture, the input blurred, or an image or .npy [default: black].")
    @click.option("--ig-method", type=click.Choice(IG_METHODS), help="--integrated's quadrature, as Captum's [default: gausslegendre].")
    @click.option("--seed", type=click.IntRange(min=0), default=_default(ProjectOptions, "seed"), show_default=True,
                  help="Seed of --smooth's noise.")
    @click.option("--quiet", is_flag=True, help="No progress bar.")
    @image_options
    @format_option
    def project(model, image, quiet, fmt, columns, wide, **params):
        """Project feature maps of MODEL on INPUT (an image or a .npy) back to pixels (Zeiler & Fergus deconvnet)."""
        from cnncli.api import project as command

        attribution = params["smooth"] is not None or params["integrated"] is not None
        out = Output(fmt, columns, wide, command.AttributionRow if attribution else command.ProjectionRow)
        options = ProjectOptions.from_cli(params)
        with progress_bar(quiet, "projecting channels", min_total=8) as tick:
            result = command.run(model, image, options, progress=tick, on_warning=_warn, arrays=False)
        out.write(result)
    return project
