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
    simulated: int = typer.Option(
        0, min=0, help="Simulated pairs per step through the captures' calibrated model (supervised; 0: none)."
    ),
    simulated_weight: float = typer.Option(1.0, help="Weight of the simulated pairs' loss."),
) -> None:
    """Fine-tune the decoder through the captures' calibrated model (mask fixed): measurement consistency, plus
    supervised simulated pairs with --simulated; keeps the best weights (held-out consistency, or the simulated
    validation pairs' phase PSNR)."""
    from calibration.finetune import FinetuneSettings, finetune_bundle

    console = Console()
    settings = FinetuneSettings(steps, lr, holdout, seed, simulated, simulated_weight)
    result = finetune_bundle(bundle, captures, out, settings)
    change = 100 * (result.heldout_loss_after / result.heldout_loss_before - 1)
    simulated_psnr = (
        ""
        if result.simulated_psnr_db_after is None
        else f"simulated validation phase PSNR {result.simulated_psnr_db_before:.2f} -> "
        f"{result.simulated_psnr_db_after:.2f} dB, "
    )
    console.print(
        f"{simulated_psnr}held-out consistency loss {result.heldout_loss_before:.4g} -> "
        f"{result.heldout_loss_after:.4g} ({change:+.1f} %), training {result.train_loss_before:.4g} -> "
        f"{result.train_loss_after:.4g}, best step {result.best_step}; wrote {out}"
    )
