"""The ``hil`` command: one entry point, one module per subcommand."""

from __future__ import annotations

import sys

import typer

from drivers.errors import DeviceError
from hil.cli import benchmark, calibrate, capture, check, demo, deploy, finetune, live, reconstruct, train

app = typer.Typer(
    name="hil",
    help="Hardware-in-the-loop single-snapshot phase retrieval (simulated bench by default).",
    no_args_is_help=True,
    add_completion=False,
)
app.command("demo")(demo.demo)
app.add_typer(benchmark.app, name="benchmark")
app.command("train")(train.train)
app.command("check")(check.check)
app.command("deploy")(deploy.deploy)
app.command("capture")(capture.capture)
app.command("reconstruct")(reconstruct.reconstruct)
app.add_typer(calibrate.app, name="calibrate")
app.command("finetune")(finetune.finetune)
app.command("live")(live.live)


USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, KeyError, TimeoutError, ConnectionError, DeviceError)


def main() -> None:
    """Entry point: user errors (bad config, missing file, device timeout) print one line and exit 2;
    usage errors and Ctrl-C are reported by typer itself."""
    try:
        app()
    except USER_ERRORS as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
