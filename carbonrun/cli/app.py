"""The `carbonrun` command: a click group whose subcommands load only when used.

`carbonrun [OPTIONS] COMMAND...` is `carbonrun run [OPTIONS] COMMAND...`: the first word that is not a
subcommand (or any leading option other than the group's own) starts the measured command.
"""
from __future__ import annotations

import sys
from importlib import import_module
from typing import List, Optional, Sequence

import click

from carbonrun import __version__
from carbonrun.cli import exits
from carbonrun.cli.commands import COMMANDS
from carbonrun.cli.options import BY_FLAG
from carbonrun.cli.fast import findable

GROUP_OPTIONS = {"--help", "-h", "--version", "--debug"}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> List[str]:
        return [n for n in COMMANDS if self._load(n) is not None]

    def get_command(self, ctx: click.Context, name: str) -> Optional[click.Command]:
        return self._load(name)

    def shell_complete(self, ctx: click.Context, incomplete: str) -> list:
        """Subcommands and the group's options, plus the run options `carbonrun --region FR cmd` takes."""
        out = super().shell_complete(ctx, incomplete)
        run = self._load("run")
        if incomplete.startswith("-") and run is not None:
            seen = {c.value for c in out}
            from click.shell_completion import CompletionItem  # shell completion only

            for p in run.get_params(ctx):
                if isinstance(p, click.Option) and not p.hidden:
                    out += [CompletionItem(o, help=p.help) for o in p.opts + p.secondary_opts
                            if o.startswith(incomplete) and o not in seen and o.startswith("--")]
        return out

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
        """Route `carbonrun [run-options] COMMAND...` to `run`.

        Options given before a subcommand (`carbonrun --store X report last`, `carbonrun --quiet run
        ...`) move after it; a first word that is close to a subcommand and is no program on PATH
        (`carbonrun reprot`) is a usage error that suggests the subcommand, not a run of a missing
        program."""
        i = 0
        while i < len(args) and args[i] in GROUP_OPTIONS - {"--help", "-h", "--version"}:
            i += 1
        head, rest = args[:i], args[i:]
        options, word = _leading_options(rest)
        if word is not None and rest[word] in COMMANDS and options:
            given = [a for a in rest[:word] if a != "--debug"]  # the group's own, wherever it was
            head += ["--debug"] * (word - len(given))
            self._check_takes(ctx, rest[word], given)
            rest = [rest[word]] + given + rest[word + 1:]
        elif rest and not options:
            _check_typo(rest[0])
        if rest and rest[0] not in ("--help", "-h", "--version") and rest[0] not in COMMANDS:
            rest = ["run"] + rest
        return super().parse_args(ctx, head + rest)


    def _check_takes(self, ctx: click.Context, name: str, given: List[str]) -> None:
        """`carbonrun --region FR report` is an error naming the option, not a confusing extra argument."""
        command = self._load(name)
        if command is None:
            return
        takes = {o for p in command.get_params(ctx) for o in getattr(p, "opts", []) + getattr(p, "secondary_opts", [])}
        for arg in given:
            flag = arg.partition("=")[0]
            if flag.startswith("-") and flag not in takes:
                raise click.UsageError(f"'carbonrun {name}' does not take {flag} (see 'carbonrun {name} --help')")


def _leading_options(args: List[str]) -> "tuple[bool, Optional[int]]":
    """(any run options lead, index of the first word after them) using the run options' table."""
    i = 0
    while i < len(args) and args[i].startswith("-") and args[i] not in ("-", "--"):
        flag, eq, _ = args[i].partition("=")
        o = BY_FLAG.get(flag)
        if o is None:
            return i > 0, None
        i += 1 if o.metavar is None or eq else 2
    return i > 0, (i if i < len(args) else None)


def _check_typo(word: str) -> None:
    """A usage error for `carbonrun reprot` (close to a subcommand, no such program)."""
    import difflib  # only for a first word that is neither a command nor a program

    if word.startswith("-") or word in COMMANDS or findable(word):
        return
    close = difflib.get_close_matches(word, list(COMMANDS), n=1, cutoff=0.6)
    if close:
        raise click.UsageError(f"no command {word!r}; did you mean 'carbonrun {close[0]}'? (to measure a program"
                               f" named {word}, use: carbonrun run -- {word})")


def usage_line(e: click.ClickException, args: Sequence[str] = ()) -> str:
    """click's message as one line, with where to look for the fix."""
    message = " ".join(e.format_message().split()).rstrip(".")
    for kind, plain in (("integer range", "integer"), ("float range", "number")):  # click's type names
        message = message.replace(f"is not a valid {kind}", f"is not a valid {plain}")
    ctx = getattr(e, "ctx", None)
    if isinstance(e, click.UsageError) and "--help" not in message and "carbonrun run --" not in message:
        where = ctx.command_path if ctx is not None else "carbonrun"
        if where == "carbonrun":  # click left the context out: the subcommand is the first one named
            where += next((f" {a}" for a in args if a in COMMANDS), "")
        message += f" (see '{where} --help')"
    return message


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
        if isinstance(e, getattr(click.exceptions, "NoArgsIsHelpError", ())):  # bare `carbonrun` (click 8.2+)
            exits.fail("nothing to run: give a COMMAND (carbonrun python train.py) or a subcommand"
                       " (see 'carbonrun --help')", 2)
        exits.fail(usage_line(e, args), e.exit_code)
    except Exception as e:
        exits.handle(e, exits.debugging(args))
    except KeyboardInterrupt as e:
        exits.handle(e, False)
    sys.exit(rv if isinstance(rv, int) else 0)
