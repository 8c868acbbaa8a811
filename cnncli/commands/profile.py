"""`cnn profile`: its click parameters, named as the fields of its options; it parses, calls
``cnncli.api.profile.run`` and renders."""

from __future__ import annotations

import click

from cnncli.choices import GROUPINGS, OPT_LEVELS, PROVIDERS
from cnncli.cli_options import Output, default as _default, format_option, shape_options, warn as _warn
from cnncli.render.progress import progress_bar


def run_options(options_type: type, when: str = ""):
    """--provider, --warmup, --runs and --opt-level (cnn profile; cnn diff --measure, ``when``)."""
    def helped(text: str) -> str:
        return when + text if when else text[0].upper() + text[1:]

    def add(f):
        options = [
            click.option("--provider", type=click.Choice(PROVIDERS), default=_default(options_type, "provider"),
                         show_default=True, help=helped("onnxruntime execution provider.")),
            click.option("--warmup", type=int, default=_default(options_type, "warmup"), show_default=True,
                         help=helped("untimed runs first.")),
            click.option("--runs", type=int, default=_default(options_type, "runs"), show_default=True,
                         help=helped("timed runs (each figure is their median).")),
            click.option("--opt-level", type=click.Choice(OPT_LEVELS), default=_default(options_type, "opt_level"),
                         show_default=True, help=helped("what onnxruntime's graph optimiser may fuse.")),
        ]
        for option in reversed(options):
            f = option(f)
        return f
    return add


def command() -> click.Command:
    from cnncli.api.profile import ProfileOptions

    @click.command(short_help="Measured time per layer beside MACs, fusions joined back, roofline.")
    @click.argument("model")
    @shape_options
    @run_options(ProfileOptions)
    @click.option("--input", "input", metavar="FILE", help="Input data: a .npy (one input) or a .npz by input name "
                                                           "[default: random normal floats].")
    @click.option("--compare-providers", metavar="P,P", help="Profile on each (e.g. cpu,cuda); one not installed "
                                                             "is skipped with a warning.")
    @format_option
    @click.option("--by", type=click.Choice(GROUPINGS), default=_default(ProfileOptions, "by"), show_default=True,
                  help="One row per layer, or per op type.")
    @click.option("--sort", metavar="COLUMN", help="Sort rows by a column (numbers largest first).")
    @click.option("--top", type=click.IntRange(min=1), metavar="N", help="Keep only the first N rows (after --sort).")
    @click.option("--plot", type=click.Path(dir_okay=False), metavar="FILE.png",
                  help="Save the roofline and a time-against-MACs bar chart.")
    @click.option("--remeasure-peaks", is_flag=True, default=_default(ProfileOptions, "remeasure_peaks"), help="Measure this machine's peaks again (else read from "
                                                          "the user cache folder, measured once).")
    @click.option("--verbose", is_flag=True, default=_default(ProfileOptions, "verbose"), help="Let onnxruntime's log lines through to stderr.")
    @click.option("--quiet", is_flag=True, help="No progress bar.")
    def profile(model, fmt, columns, wide, quiet, **params):
        """Run MODEL (a path, or - for stdin) on onnxruntime with its profiler on: each layer's median
        kernel time beside its `cnn stats` costs, with the machine's peaks in the header."""
        from cnncli.api import profile as command

        options = ProfileOptions.from_cli(params)
        out = Output(fmt, columns, wide, command.row_type(options.by))
        with progress_bar(quiet, "profiling", min_total=20) as tick:
            result = command.run(model, options, on_warning=_warn,
                                 progress=(lambda done, total: tick(1, total)) if tick else None)
        out.write(result)
    return profile
