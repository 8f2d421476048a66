"""The `carbonrun` command: a click group whose subcommands load only when used.

`carbonrun [OPTIONS] COMMAND...` is `carbonrun run [OPTIONS] COMMAND...`: the first word that is not a
subcommand (or any leading option other than the group's own) starts the measured command.
"""
from __future__ import annotations

import sys
from importlib import import_module
from typing import List, Optional

import click

from carbonrun import __version__
from carbonrun.cli import exits
from carbonrun.cli.commands import COMMANDS

GROUP_OPTIONS = {"--help", "-h", "--version", "--debug"}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> List[str]:
        return [n for n in COMMANDS if self._load(n) is not None]

    def get_command(self, ctx: click.Context, name: str) -> Optional[click.Command]:
        return self._load(name)

    @staticmethod
    def _load(name: str) -> Optional[click.Command]:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, attr = target.split(":")
        try:
            return getattr(import_module(module), attr)
        except ModuleNotFoundError as e:
            if e.name == module:  # a command not built yet
                return None
            raise

    def parse_args(self, ctx: click.Context, args: List[str]) -> List[str]:
        """Route `carbonrun [run-options] COMMAND...` to `run`."""
        i = 0
        while i < len(args) and args[i] in GROUP_OPTIONS - {"--help", "-h", "--version"}:
            i += 1
        rest = args[i:]
        if rest and rest[0] not in ("--help", "-h", "--version") and rest[0] not in COMMANDS:
            args = args[:i] + ["run"] + rest
        return super().parse_args(ctx, args)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]},
             epilog="Examples:\n\n  carbonrun python train.py\n\n  carbonrun --region FR -- make test\n\n"
                    "  carbonrun report last --format json")
@click.version_option(__version__, prog_name="carbonrun")
@click.option("--debug", is_flag=True, envvar="CARBONRUN_DEBUG", help="Show tracebacks for errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Measure what a command really cost in energy and carbon.

    carbonrun runs COMMAND exactly as it would run, reads the hardware energy counters (RAPL, NVML)
    or estimates them, attributes the energy to the command's process tree, and converts it to
    kg CO2eq for the place and time. Every run is stored: `carbonrun report last`.
    """
    ctx.obj = {"debug": debug}


def main(argv: Optional[List[str]] = None) -> None:
    """The click application: one-line errors with documented exit codes; tracebacks only with --debug."""
    args = sys.argv[1:] if argv is None else argv
    try:
        rv = cli.main(args=args, prog_name="carbonrun", standalone_mode=False)
    except click.exceptions.Abort:
        exits.fail("aborted", 130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except Exception as e:
        exits.handle(e, exits.debugging(args))
    except KeyboardInterrupt as e:
        exits.handle(e, False)
    sys.exit(rv if isinstance(rv, int) else 0)
