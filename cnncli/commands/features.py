"""`cnn features`: its click parameters, named as the fields of its options; it parses, calls
``cnncli.api.features.run`` and renders."""

from __future__ import annotations

import click

from cnncli.cli_options import Output, default as _default, format_option, image_options, warn as _warn


def command() -> click.Command:
    from cnncli.api.features import FeaturesOptions

    @click.command(short_help="All of a layer's activation maps for one image.")
    @click.argument("model")
    @click.argument("image")
    @click.option("--layer", type=int, required=True, help="The N-th Conv, numbered as `cnn stats` numbers them.")
    @click.option("--out", default=_default(FeaturesOptions, "out"), show_default=True, help="Output folder.")
    @image_options
    @format_option
    def features(model, image, fmt, columns, wide, **params):
        """All of a layer's activation maps for IMAGE as a montage, strongest first, with per-channel max, mean and zeros."""
        from cnncli.api import features as command

        out = Output(fmt, columns, wide, command.FeatureRow)
        out.write(command.run(model, image, FeaturesOptions.from_cli(params), on_warning=_warn))
    return features
