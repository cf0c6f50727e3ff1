"""``hil check``: connect to every device of a bench config and report identity and status."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from drivers.errors import DeviceError
from hil.bench.bench import Bench
from hil.bench.config import DEFAULT_BENCH, load_bench
from hil.common.config import ConfigError


def check(
    config: Path = typer.Option(DEFAULT_BENCH, "--bench", "--config", help="Bench config (YAML)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Validate the config and print the plan; touch no device."),
) -> None:
    """Connect to each device (SLM, camera, serial accessories), report identity and status, leave
    the bench in its safe state. Exit status 2 if the config is invalid or a device fails (including a
    serial device that identifies as another model than its configured driver, e.g. swapped ports)."""
    console = Console()
    try:
        spec = load_bench(config)
    except ConfigError as exc:
        console.print(f"[red]invalid bench config[/red]: {exc}")
        raise typer.Exit(2) from None
    if dry_run:
        table = Table(title=f"plan for {config} (dry run: no device touched)")
        for col in ("device", "driver", "class", "port / kwargs"):
            table.add_column(col, overflow="fold")
        sections = {"slm": spec.slm, "camera": spec.camera, **{f"serial.{k}": v for k, v in spec.serial.items()}}
        for name, device in sections.items():
            port = spec.config.serial[device.name].port + " " if name.startswith("serial.") else ""
            cls = f"{device.cls.__module__}.{device.cls.__name__}"
            table.add_row(name, device.driver, cls, port + str(device.kwargs))
        console.print(table)
        console.print(f"system: {spec.config.system}, seed: {spec.config.seed}")
        return
    try:
        with Bench(spec) as bench:
            rows = bench.describe()
            problems = bench.safe_state()
    except (DeviceError, OSError, ValueError) as exc:
        console.print(f"[red]device check failed[/red]: {exc}")
        raise typer.Exit(2) from None
    table = Table(title=f"bench {config}")
    for col in ("device", "driver", "identity", "status"):
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(row["device"], row["driver"], row["identity"], row["status"])
    console.print(table)
    if problems:
        console.print("[red]safe state not confirmed[/red]: " + "; ".join(problems))
        raise typer.Exit(2)
    console.print("all devices answered; bench left in its safe state (shutter closed, laser off, SLM blank)")
