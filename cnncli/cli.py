"""The `cnn` command line: parse, call the library, render. Exit codes are mapped here only.

Every command has one shape, one module under ``cnncli/commands/``: its click parameters are named as the fields of the command's
options dataclass (``cnncli.api.<command>``), whose defaults they show; the command builds the
options (``Options.from_cli``), calls the command's ``run`` with ``on_warning`` printing each
warning as it comes, and renders the result's document with the one renderer.

0 ok; 2 bad usage (click usage errors and ``BadArgument``); 1 anything else the user can fix
(``CnnError``). Heavy libraries are imported inside the commands so `cnn --help` stays fast.
"""

from __future__ import annotations

import os

import click

from cnncli import __version__
from cnncli.errors import BadArgument, CnnError


def _one_line(message: object) -> str:
    """An error message on one line (an onnx or OS message may span several), escaped as every
    message is (``cnncli.render.console.one_line``: the names and paths it quotes can send the
    terminal no control or bidi character)."""
    from cnncli.render.console import one_line

    return one_line(message)


_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())  # click >= 8.2: `cnn` alone


def _escaped(exc: click.ClickException) -> click.ClickException:
    """A click error with its whole message escaped like every other message: click's own ones
    quote what was typed (``No such command '…'``, ``Invalid value for '--format': '…'``) and
    strip only CSI sequences, not OSC ones, and only off a terminal."""
    text = _one_line(exc.format_message())
    if isinstance(exc, _HELP) or text == exc.format_message():  # `cnn` alone shows the help; nothing to escape
        return exc
    new = click.UsageError(text, ctx=exc.ctx) if isinstance(exc, click.UsageError) else click.ClickException(text)
    new.exit_code = exc.exit_code
    return new


# command name -> the module whose ``command()`` defines it (cnncli/commands/): a command's
# modules (its click parameters, its options dataclasses) are imported only when it runs or help lists it
_COMMANDS = {
    "stats": "cnncli.commands.stats",
    "connectivity": "cnncli.commands.connectivity",
    "project": "cnncli.commands.project",
    "demo": "cnncli.commands.demo",
    "top": "cnncli.commands.top",
    "features": "cnncli.commands.features",
    "filters": "cnncli.commands.filters",
    "profile": "cnncli.commands.profile",
    "diff": "cnncli.commands.diff",
    "cam": "cnncli.commands.cam",
    "report": "cnncli.commands.report",
    "dream": "cnncli.commands.dream",
}


class CnnGroup(click.Group):
    def list_commands(self, ctx) -> list[str]:
        return sorted(set(self.commands) | set(_COMMANDS))

    def get_command(self, ctx, name: str):
        if name not in self.commands and name in _COMMANDS:
            import importlib

            self.add_command(importlib.import_module(_COMMANDS[name]).command(), name)
        return self.commands.get(name)

    def make_context(self, info_name, args, parent=None, **extra):
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.ClickException as exc:  # `cnn --no-such-option`: escaped as well
            raise _escaped(exc) from None

    def invoke(self, ctx: click.Context):
        from cnncli.render.routed_warnings import routed_warnings

        try:
            # warnings outside a run (a run collects its own and the CLI hears them as they come)
            # one line each; a run turns a crash on a damaged model file into its one-line error
            with routed_warnings():
                return super().invoke(ctx)
        except KeyboardInterrupt:  # Ctrl-C: one line, exit 130 (128 + SIGINT); atomic writes left nothing half-written
            _interrupted()
        except ImportError as exc:  # a signal while a C extension initialises (onnxruntime) comes back as its ImportError
            from cnncli.render.process import Terminated

            signalled = exc.__cause__ or exc.__context__
            if isinstance(signalled, KeyboardInterrupt):
                _interrupted()
            if not isinstance(signalled, Terminated):
                raise
            raise signalled from None  # main() ends the run: one line, 128 + the signal
        except MemoryError:
            raise click.ClickException("not enough memory for this run") from None
        except BadArgument as exc:
            if exc.param is None:  # a rule between options: a plain usage error
                raise click.UsageError(_one_line(exc)) from None
            raise click.BadParameter(_one_line(exc), param_hint=f"'{exc.param}'") from None
        except CnnError as exc:
            raise click.ClickException(_one_line(exc)) from None
        except click.ClickException as exc:
            if isinstance(exc, click.UsageError):
                exc.ctx = None  # one line: "Error: ..." without the usage block
            raise _escaped(exc) from None
        except BrokenPipeError:  # the reader of stdout left (cnn … | head): a normal end, exit 0
            raise click.exceptions.Exit(0) from None


def _interrupted() -> None:
    from cnncli.render.process import say, wind_down

    wind_down()
    say("Interrupted.")
    raise click.exceptions.Exit(130)


@click.group(cls=CnnGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="cnn")
def cli() -> None:
    """What each layer of an ONNX CNN costs, and what each feature map has learned."""


def main() -> None:
    """Run the CLI, then leave without the interpreter's teardown (freeing every module and
    object one by one costs 40–60 ms, a quarter of a small `cnn stats`). The process is set up
    first and wound down here (cnncli/render/process.py): closed standard streams, a stderr whose
    failures lose messages only, SIGTERM and SIGHUP ending the run as Ctrl-C does, the standard
    streams flushed and the run's own folders removed (``os._exit`` runs no atexit handler)."""
    from cnncli.atomic import remove_run_folders
    from cnncli.render import process

    process.prepare()
    try:
        code = process.flushed(_run())
    except process.Terminated as exc:  # exit 128 + the signal; atomic writes left nothing half-written
        process.wind_down()
        process.say(exc.line)
        code = exc.exit_code
    remove_run_folders()
    os._exit(code)


def _run() -> int:
    try:
        cli.main(prog_name="cnn")
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        from cnncli.render.process import say

        say(f"Error: {_one_line(exc.code)}")
        return 1
    return 0


if __name__ == "__main__":
    main()
