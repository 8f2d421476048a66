"""The subcommands by name, without click: the fast path must know them to tell a command from a subcommand."""

# name -> "module:attribute"; each module is imported only when its command runs or is listed.
COMMANDS = {
    "run": "carbonrun.cli.run:run",
    "report": "carbonrun.cli.history:report",
    "history": "carbonrun.cli.history:history",
    "compare": "carbonrun.cli.history:compare",
    "rm": "carbonrun.cli.history:rm",
    "prune": "carbonrun.cli.history:prune",
    "intensity": "carbonrun.cli.intensity:intensity",
    "doctor": "carbonrun.cli.doctor:doctor",
    "config": "carbonrun.cli.configcmd:config",
    "gate": "carbonrun.cli.gate:gate",
    "plan": "carbonrun.cli.plan:plan",
    "sweep": "carbonrun.cli.sweep:sweep",
    "estimate": "carbonrun.cli.estimate:estimate",
    "sync": "carbonrun.cli.cluster:sync",  # send runs spooled while PostgreSQL was unreachable
}
