"""`cnn diff`: its click parameters, named as the fields of its options; it parses, calls
``cnncli.api.diff.run`` and renders."""

from __future__ import annotations

import click

from cnncli.cli_options import Output, default as _default, format_option, shape_options, warn as _warn
from cnncli.commands.profile import run_options
from cnncli.render.progress import progress_bar


def command() -> click.Command:
    from cnncli.api.diff import DiffOptions

    @click.command(short_help="Two models (or one at two shapes) layer by layer: MACs, params, memory, time.")
    @click.argument("a")
    @click.argument("b", required=False)
    @shape_options
    @click.option("--b-batch", type=int, metavar="N", help="B's batch [default: --batch].")
    @click.option("--b-input-shape", "b_input_shapes", multiple=True, metavar="NAME=1x3x160x160",
                  help="Set an input's shape in B (repeatable) [default: as --input-shape].")
    @click.option("--measure", is_flag=True, default=_default(DiffOptions, "measure"), help="Run both on onnxruntime and compare each layer's measured ms.")
    @run_options(DiffOptions, "With --measure: ")
    @click.option("--quiet", is_flag=True, help="No progress bar.")
    @format_option
    def diff(a, b, fmt, columns, wide, quiet, **params):
        """Compare model A with model B (or with A itself at --b-batch / --b-input-shape) layer by
        layer; layers are matched by name, then by position among the layers of the same op."""
        from cnncli.api import diff as command

        options = DiffOptions.from_cli(params)
        out = Output(fmt, columns, wide, command.row_type())
        with progress_bar(quiet, "profiling", min_total=20) as tick:
            result = command.run(a, b, options, on_warning=_warn,
                                 progress=(lambda done, total: tick(1, total)) if tick else None)
        out.write(result)
    return diff
