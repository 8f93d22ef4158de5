"""Extra ``python -m flows`` subcommands, one module each.

A module here defines ``register(subparsers)`` that adds its subcommand (with ``--help``)
and sets ``func``. Import heavy things inside the command function, not at module level:
``--help`` must stay fast.
"""

#: Modules whose ``register`` is called, in this order (one line per module).
MODULES: tuple[str, ...] = (
    "flows.commands.blocks",
    "flows.commands.bridge",
    "flows.commands.watch",
    "flows.commands.synth",
    "flows.commands.errors",
    "flows.commands.bench",
)
