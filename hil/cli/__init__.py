"""The ``hil`` command: one entry point, one module per subcommand."""

from __future__ import annotations

import typer

from hil.cli import benchmark, demo

app = typer.Typer(
    name="hil",
    help="Hardware-in-the-loop single-snapshot phase retrieval (simulated bench by default).",
    no_args_is_help=True,
    add_completion=False,
)
app.command("demo")(demo.demo)
app.add_typer(benchmark.app, name="benchmark")
