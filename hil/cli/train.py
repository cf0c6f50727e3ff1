"""``hil train CONFIG``: train a teacher, a student with a teacher, or a student alone; write a bundle."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console


def train(
    config: Path = typer.Argument(..., help="Training config, e.g. configs/train_teacher.yaml."),
    out: Path = typer.Option(None, help="Run folder (default runs/<config name>)."),
    seed: int = typer.Option(None, help="Override the config's seed."),
    teacher: Path = typer.Option(None, help="Override distillation.teacher (a teacher bundle folder)."),
    steps: int = typer.Option(None, min=1, help="Override the step budget."),
    device: str = typer.Option(None, help="Override the device (cpu, cuda, ...)."),
    test_images: int = typer.Option(16, min=1, help="Test objects for the metrics stored in the bundle."),
    resume: bool = typer.Option(True, help="Resume from the run folder's checkpoint."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Train per CONFIG (log.csv and checkpoint.pt in the run folder), evaluate on the test split at
    10/20/30 dB, and save the model bundle to <out>/bundle. Runs as one process or under
    `torchrun --nproc_per_node=N -m hil train CONFIG` (batch_size is per process; rank 0 writes)."""
    import dataclasses

    from hil.learning.distributed import setup, teardown
    from hil.learning.train_bundle import train_to_bundle
    from hil.learning.train_config import load_train_config

    console = Console()
    cfg = load_train_config(config, seed=seed, steps=steps, device=device)
    if teacher is not None:
        cfg = dataclasses.replace(cfg, distillation=dataclasses.replace(cfg.distillation, teacher=str(teacher)))
    out = out or Path("runs") / config.stem
    ctx = setup(cfg.device)  # joins the torchrun process group when launched by torchrun
    try:
        log = console.log if ctx.is_main else (lambda _msg: None)
        _, path = train_to_bundle(cfg, out, resume=resume, progress=progress, test_images=test_images, log=log, ctx=ctx)
    finally:
        teardown(ctx)
    if path is not None:
        console.print(f"wrote {path}")
