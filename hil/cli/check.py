"""``hil check``: connect to every device of a bench config and report identity and status."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from hil.bench.bench import Bench
from hil.bench.config import DEFAULT_BENCH, load_bench


def check(
    config: Path = typer.Option(DEFAULT_BENCH, "--bench", "--config", help="Bench config (YAML)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Validate the config and print the plan; touch no device."),
) -> None:
    """Connect to each device (SLM, camera, serial accessories), report identity and status, leave
    the bench in its safe state. Exit status 2 if the config is invalid or a device fails (including a
    serial device that identifies as another model than its configured driver, e.g. swapped ports)."""
    console = Console()
    spec = load_bench(config, import_plugins=not dry_run)  # errors reach the user through hil's error path
    if dry_run:
        table = Table(title=f"plan for {config} (dry run: no device touched)")
        for col in ("device", "driver", "class", "port / kwargs"):
            table.add_column(col, overflow="fold")
        sections = {"slm": spec.slm, "camera": spec.camera, **{f"serial.{k}": v for k, v in spec.serial.items()}}
        for name, device in sections.items():
            port = spec.config.serial[device.name].port + " " if name.startswith("serial.") else ""
            cls = (
                "plugin, not imported (dry run)"
                if device.cls is None
                else f"{device.cls.__module__}.{device.cls.__name__}"
            )
            table.add_row(name, device.driver, cls, port + str(device.kwargs))
        console.print(table)
        console.print(f"system: {spec.config.system}, seed: {spec.config.seed}")
        return
    with Bench(spec) as bench:  # a device that fails, or is not safe on exit, is a DeviceError
        rows = bench.describe()
    table = Table(title=f"bench {config}")
    for col in ("device", "driver", "identity", "status"):
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(row["device"], row["driver"], row["identity"], row["status"])
    console.print(table)
    console.print("all devices answered; bench left in its safe state (shutter closed, laser off, SLM blank)")
