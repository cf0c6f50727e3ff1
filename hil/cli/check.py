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
    light: bool = typer.Option(
        True, "--light/--no-light", help="Also take a frame with the light off and one with it on (random mask)."
    ),
) -> None:
    """Connect to each device (SLM, camera, serial accessories), report identity and status, leave
    the bench in its safe state. With ``--light`` (default) a random mask is shown and a frame is
    taken with the light off and one with it on: a warning when light reaches the camera with the
    shutter closed or a frame is saturated. Exit status 2 if the config is invalid or a device fails
    (including a serial device that identifies as another model than its configured driver, e.g. swapped
    ports, and a device not safe on exit)."""
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
        warnings = light_test(bench) if light else []
    table = Table(title=f"bench {config}")
    for col in ("device", "driver", "identity", "status"):
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(row["device"], row["driver"], row["identity"], row["status"])
    console.print(table)
    for warning in warnings:
        console.print(f"[yellow]warning[/yellow]: {warning}")
    console.print("all devices answered; bench left in its safe state (shutter closed, laser off, SLM blank)")


def light_test(bench: Bench, seed: int = 0) -> list[str]:
    """Warnings from a frame with the light off and one with it on, a random mask shown (SLM blanked after)."""
    import numpy as np

    from calibration.frame_checks import LEAK_Z_MAX, camera_ceiling_adu, dark_check

    if not any(hasattr(accessory, "emit") for accessory in bench.serial.values()):
        return ["no light source under the bench's control: frames with the light off cannot be checked"]
    n = bench.spec.system.optics.n
    bench.show_mask(np.random.default_rng(seed).uniform(0, 2 * np.pi, (n, n)))
    try:
        bench.light_off()
        dark = bench.capture().astype(np.float64)
        with bench.lit():
            lit = bench.capture().astype(np.float64)
    finally:
        bench.slm.blank()
    warnings = []
    ceiling = camera_ceiling_adu(bench.camera)
    for name, frame in (("with the light off", dark), ("lit", lit)):
        count = 0 if ceiling is None else int((frame >= ceiling).sum())
        if count:
            warnings.append(f"test frame {name}: {count} saturated pixels at {ceiling:g} ADU")
    check = dark_check(dark[None], lit)
    if check.z > LEAK_Z_MAX:
        warnings.append(
            f"light reaches the camera with the shutter closed: the dark frame holds the lit pattern "
            f"(correlation {check.correlation:.3f}, about {100 * check.leak_fraction:.2g} % of the light)"
        )
    return warnings
