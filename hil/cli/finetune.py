"""``hil finetune BUNDLE CAPTURES... --out NEW_BUNDLE``: adapt a decoder to the bench's measurements, through the
calibrated model the captures record (frames at the camera's own size)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console


def finetune(
    bundle: Path = typer.Argument(..., help="Source model bundle (never modified)."),
    captures: list[Path] = typer.Argument(
        ..., help="HDF5 captures (hil capture) of the bundle's mask, all with one calibrated model."
    ),
    out: Path = typer.Option(..., "--out", help="New bundle folder (must not exist or be empty)."),
    steps: int = typer.Option(40, min=1, help="Adam steps on the training captures."),
    lr: float = typer.Option(1e-3, help="Learning rate."),
    holdout: int = typer.Option(1, min=0, help="Last captures held out to pick the best step (0: none)."),
    seed: int = typer.Option(0, help="Seed."),
) -> None:
    """Fine-tune the decoder by measurement consistency through the captures' calibrated model (mask fixed);
    keeps the best held-out weights."""
    from calibration.finetune import FinetuneSettings, finetune_bundle

    console = Console()
    result = finetune_bundle(bundle, captures, out, FinetuneSettings(steps, lr, holdout, seed))
    change = 100 * (result.heldout_loss_after / result.heldout_loss_before - 1)
    console.print(
        f"held-out consistency loss {result.heldout_loss_before:.4g} -> {result.heldout_loss_after:.4g} "
        f"({change:+.1f} %), training {result.train_loss_before:.4g} -> {result.train_loss_after:.4g}, "
        f"best step {result.best_step}; wrote {out}"
    )
