"""`carbonrun sweep`: run a command across GPU power limits and parameters, find the Pareto set.

Everything that can be refused (bad options, no GPU, a limit out of range, no permission, a killed sweep's
limits still in force) is refused before anything runs. The core is carbonrun/sweep.py.
"""
from __future__ import annotations

import json
import shlex
import signal
import sys
from typing import Any, List, Optional, Sequence, Tuple

import click

from carbonrun import files, settings
from carbonrun.sweep import core
from carbonrun.cli.run import flag_values, run_options
from carbonrun.errors import CarbonrunError
from carbonrun.measure.session import block_signals, LaunchError
from carbonrun.cli.render import color_enabled, terminal_width

EXIT_FAILED = 3  # some point's command failed (as `gate` does for a failed command)


@click.command(context_settings={"allow_interspersed_args": False},
               epilog="Examples:\n\n  sudo carbonrun sweep --power-limit 150,200,250,300 -- python train.py\n\n"
                      "  carbonrun sweep --param BATCH=32,64,128 -- python train.py --batch-size {BATCH}\n\n"
                      "  carbonrun sweep --power-limit 200,300 --param OMP_NUM_THREADS=4,8 --repeat 3 "
                      "--objective eta=0.5 --json sweep.json --html sweep.html -- ./bench\n\n"
                      "  sudo carbonrun sweep --restore")
@run_options
@click.option("--power-limit", "power_limit", metavar="W,W,...",
              help="GPU power limits to run at, in watts (changing them needs root); "
                   "restored afterwards. {power_limit} in COMMAND becomes the limit.")
@click.option("--param", "knobs", multiple=True, metavar="NAME=V1,V2,...",
              help="Sweep a knob (repeatable): {NAME} in COMMAND is replaced by each value, or, when COMMAND "
                   "has no {NAME}, the environment variable NAME is set. Crossed with everything else.")
@click.option("--repeat", type=click.IntRange(min=1), default=1, show_default=True,
              help="Runs per point; the table shows medians.")
@click.option("--objective", default="edp", show_default=True, metavar="energy|time|edp|eta=X",
              shell_complete=lambda ctx, param, inc: [o for o in ("energy", "time", "edp", "eta=0.5")
                                                      if o.startswith(inc)],
              help="What the recommendation minimises; eta=X is Zeus's X*energy + (1-X)*max_power*time.")
@click.option("--energy", "basis", type=click.Choice(["job", "gpu"]), default="job", show_default=True,
              help="The energy the Pareto set and the objective use: the job's (as `carbonrun run` reports "
                   "it) or the metered GPUs' alone.")
@click.option("--stop-on-failure", is_flag=True,
              help="Stop at the first run whose command fails (default: record the point as failed, go on).")
@click.option("--json", "json_path", metavar="FILE", help="Write every point and run to FILE (JSON).")
@click.option("--html", "html_path", metavar="FILE", help="Write a self-contained HTML page: table and plot.")
@click.option("--restore", is_flag=True,
              help="Put back the power limits a killed sweep left changed, then exit (no COMMAND).")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def sweep(ctx: click.Context, /, command: Tuple[str, ...], power_limit: Optional[str], knobs: Tuple[str, ...],
          repeat: int, objective: str, basis: str, stop_on_failure: bool, json_path: Optional[str],
          html_path: Optional[str], restore: bool, **params: Any) -> int:
    """Run COMMAND once per setting (GPU power limit x --param values), each run measured and stored.

    Shows time, energy, power and energy-delay product per setting, marks the Pareto-optimal ones (no
    other setting is both faster and uses less energy) and recommends one for --objective. Exits 0 when
    every run completed, 3 when some command failed, 128+N when signal N stopped the sweep, 2 on usage
    errors (nothing is run then).
    """
    block_signals()  # before anything: a Ctrl-C between runs must not kill the sweep with limits changed
    if restore:
        if command:
            raise click.UsageError("--restore takes no COMMAND")
        return _restore()
    sw, obj = _plan(command, power_limit, knobs, repeat, objective, stop_on_failure)

    st = settings.resolve(flag_values(ctx, params))
    guard = _guard(sw, st.gpus) if sw.limits_w else None
    if basis == "gpu" and guard is None:  # refused now, not after the whole sweep has run
        core.sweep_gpus(st.gpus, "--energy gpu", "--energy job (the default) needs none")
    _announce(sw, guard)
    code = _run(sw, st, guard)
    max_power = _max_power(sw, st, obj, basis)
    core.analyse(sw.points, obj, basis, max_power[0])
    data = core.to_json(sw, obj, basis, max_power)
    header, rows = table(sw.points, basis, obj)
    lines = conclusions(sw, obj, basis, max_power)
    _show(header, rows, lines)
    _write(json_path, json.dumps(data, indent=2) + "\n")
    _write(html_path, core.render_html(data, rows, header, lines))
    return code


def _plan(command: Sequence[str], power_limit: Optional[str], knobs: Sequence[str], repeat: int,
          objective: str, stop_on_failure: bool) -> Tuple[core.Sweep, core.Objective]:
    """Parse and check the options: every mistake is a usage error (exit 2) before anything runs."""
    if not command:
        raise click.UsageError("missing COMMAND: carbonrun sweep [OPTIONS] -- COMMAND [ARGS]...")
    if not power_limit and not knobs:
        raise click.UsageError("nothing to sweep: give --power-limit W,W,... and/or --param NAME=V1,V2,...")
    try:
        limits = core.parse_limits(power_limit) if power_limit else []
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--power-limit") from None
    try:
        bound = core.bind_knobs([core.parse_knob(k) for k in knobs], command)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--param") from None
    try:
        obj = core.Objective.parse(objective)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--objective") from None
    return core.Sweep(list(command), bound, limits, repeat, stop_on_failure), obj


def _guard(sw: core.Sweep, gpus_spec: str) -> core.LimitGuard:
    """The GPUs, their limits checked and the permission probed: refusals happen here, before any run."""
    path = core.state_path()
    core.check_no_pending(path)
    sw.gpus = core.read_limits(core.sweep_gpus(gpus_spec))
    core.check_range(sw.limits_w, sw.gpus)
    core.check_permission(sw.gpus)
    return core.LimitGuard(sw.gpus, path, sw.id)


def _run(sw: core.Sweep, st: Any, guard: Optional[core.LimitGuard]) -> int:
    """Run the grid; the limits go back in the finally (and atexit), whatever ends the sweep."""
    try:
        if guard is not None:
            guard.arm()
        core.run_all(sw, st, guard, _progress)
    except LaunchError as e:  # the same for every point: stop at once
        raise CarbonrunError(str(e), e.exit_code) from None
    finally:
        if guard is not None:
            errors = guard.restore()
            if guard.current_mw is not None or errors:  # say so only when a limit was changed
                _say_restored(guard, errors)
    if sw.stopped == "interrupted":
        code = 128 + (sw.signo or signal.SIGINT)
    elif any(p.runs and not p.ok for p in sw.points):
        code = EXIT_FAILED
    else:
        code = 0
    return 1 if code == 0 and guard is not None and guard.errors else code


def _restore() -> int:
    path = core.state_path()
    done, errors = core.restore_from_state(path)
    if not done:
        _err(f"nothing to restore: no sweep left GPU power limits changed ({path} does not exist)")
        return 0
    if errors:
        _err("carbonrun: error: could not restore every power limit: " + "; ".join(errors)
             + f" (the originals stay in {path})")
        return 1
    _err("power limits restored: " + ", ".join(done))
    return 0


def _max_power(sw: core.Sweep, st: Any, obj: core.Objective, basis: str) -> Tuple[Optional[float], str]:
    """max_power for the eta cost: the GPUs' maximum limits summed, else the highest power measured."""
    gpus = sw.gpus
    if not gpus and obj.kind == "eta":
        try:
            gpus = core.read_limits(core.sweep_gpus(st.gpus))
        except CarbonrunError:
            gpus = []
    if gpus:
        return sum(g.max_mw for g in gpus) / 1000, "the sum of the GPUs' maximum power limits"
    return core.observed_max_power(sw.points, basis), "the highest average power measured (no GPU limit known)"


# ---------------------------------------------------------------- rendering


def _err(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def _announce(sw: core.Sweep, guard: Optional[core.LimitGuard]) -> None:
    n = len(sw.points)
    runs = f"{sw.repeat} runs" if sw.repeat > 1 else "1 run"
    _err(f"carbonrun sweep {sw.id}: {n} setting{'s' if n > 1 else ''} x {runs} of: {shlex.join(sw.argv)}")
    if guard is not None:
        gpus = ", ".join(f"gpu{g.index} (now {core.watts(g.original_mw / 1000)})" for g in sw.gpus)
        _err(f"  power limit: {', '.join(core.watts(w) for w in sw.limits_w)} on {gpus}; restored afterwards "
             f"(originals kept in {guard.path} until then)")
    for k in sw.knobs:
        how = (f"replaces {{{k.name}}} in the command" if k.passed_as == "placeholder"
               else f"set as environment variable {k.name} (the command has no {{{k.name}}})")
        _err(f"  param {k.name} = {', '.join(k.values)}: {how}")


def _progress(n: int, total: int, point: core.Point, result: Optional[core.RunResult]) -> None:
    if result is None:
        _err(f"[{n}/{total}] {point.label}")
        return
    what = result.status if result.exit_code in (0, None) else f"{result.status} (exit {result.exit_code})"
    gpu = f" (GPU {core.si(result.gpu_j, 'J', 4)})" if result.gpu_j is not None else ""
    energy = core.si(result.energy_j, "J", result.digits, result.mark)
    _err(f"[{n}/{total}] {what} in {core.si(result.time_s, 's')}: {energy}{gpu}, "
         f"run #{result.id}")


def _say_restored(guard: core.LimitGuard, errors: List[str]) -> None:
    if errors:
        _err("carbonrun: error: could not restore every power limit: " + "; ".join(errors)
             + f"; run `carbonrun sweep --restore` (the originals are in {guard.path})")
    else:
        _err("power limits restored: " + ", ".join(f"gpu{g.index} {core.watts(g.original_mw / 1000)}"
                                                   for g in guard.gpus))


def table(points: Sequence[core.Point], basis: str, obj: core.Objective) -> Tuple[List[str], List[List[str]]]:
    """Header and rows (plain strings): the terminal table and the HTML page show the same cells."""
    name = _basis_name(basis)
    header = ["", "setting", "status", "runs", "time", "energy", "GPU energy", f"power ({name})",
              f"EDP ({name})", "Pareto"]
    if obj.kind == "eta":
        header.append(f"cost ({obj.text})")
    rows = []
    for p in points:  # energies at the precision their range allows, estimates marked `~` (report/units.py)
        d, mark = min(3, p.digits(basis)), p.mark(basis)  # what is derived from the basis energy
        row = ["->" if p.recommended else "", p.label, p.status, str(len(p.runs)), core.si(p.time_s, "s"),
               core.si(p.energy_j, "J", p.digits(), p.mark()), core.si(p.gpu_j, "J", 4),
               core.si(p.power_w(basis), "W", d, mark), core.si(p.edp(basis), "J*s", d, mark),
               "*" if p.pareto else ""]
        if obj.kind == "eta":
            row.append(core.si(p.cost, "J", d, mark))
        rows.append(row)
    return header, rows


def _basis_name(basis: str) -> str:
    return "GPU" if basis == "gpu" else "job"


def conclusions(sw: core.Sweep, obj: core.Objective, basis: str, max_power: Tuple[Optional[float], str]) -> List[str]:
    """The lines under the table: why it stopped, the Pareto set, the recommendation and its basis."""
    lines = []
    done = sum(len(p.runs) for p in sw.points)
    if sw.stopped:
        why = (f"interrupted ({signal.Signals(sw.signo).name})" if sw.stopped == "interrupted" and sw.signo
               else "a command failed (--stop-on-failure)" if sw.stopped == "failure" else sw.stopped)
        lines.append(f"sweep stopped early: {why}, after {done} of {len(sw.points) * sw.repeat} runs")
    front = [p.label for p in sw.points if p.pareto]
    if front:
        lines.append(f"Pareto-optimal (no setting is both faster and uses less {_basis_name(basis)} energy): "
                     + "; ".join(front))
    best = next((p for p in sw.points if p.recommended), None)
    if best is None:
        why = ("no GPU energy was measured (--energy gpu)" if basis == "gpu" and any(p.ok for p in sw.points)
               else "no setting completed")
        lines.append(f"no recommendation: {why}")
    else:
        lines.append(f"recommended for --objective {obj.text}: {best.label}")
    if obj.kind == "eta" and max_power[0] is not None:
        lines.append(f"cost = {obj.eta:g} x energy + {1 - obj.eta:g} x {core.watts(max_power[0])} x time "
                     f"(max power: {max_power[1]}; Zeus, NSDI 2023)")
    if any(p.mark() for p in sw.points):
        lines.append("~ estimated")  # as history's legend
    lines.append(f"runs are stored with tag sweep={sw.id}: carbonrun history --tag sweep={sw.id}")
    return lines


def _show(header: List[str], rows: List[List[str]], lines: List[str]) -> None:
    # rich only to draw the sweep's table
    import io

    from rich import box
    from rich.console import Console
    from rich.table import Table

    color = color_enabled(sys.stderr)
    console = Console(file=io.StringIO(), width=terminal_width(sys.stderr, 120), color_system="standard" if color
                      else None, force_terminal=color, no_color=not color, highlight=False, emoji=False)
    t = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    for i, h in enumerate(header):
        t.add_column(h, justify="left" if i < 3 else "right", no_wrap=i != 1)
    for row in rows:
        t.add_row(*row, style="bold" if row[0] else None)
    console.print(t, markup=False)
    for line in lines:
        console.print(line, markup=False)
    sys.stderr.write(console.file.getvalue())  # type: ignore[attr-defined]


def _write(path: Optional[str], text: str) -> None:
    if not path:
        return
    try:
        files.write_atomic(path, text)
    except OSError as e:
        _err(f"carbonrun: warning: cannot write {path}: {e.strerror} (the runs are in the store)")
