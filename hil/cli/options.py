"""Options shared by the subcommands, so that one name has one meaning and one default everywhere."""

from __future__ import annotations

import typer

from hil.bench.config import DEFAULT_BENCH

FRAMES = 4  # light frames averaged into one CDP
DARK_FRAMES = 4  # dark frames (light off) averaged and subtracted

BENCH = typer.Option(DEFAULT_BENCH, "--bench", help="Bench config (YAML).")
DRY_RUN = typer.Option(False, "--dry-run", help="Validate configs and options; touch no device.")
OVERWRITE = typer.Option(False, "--overwrite", help="Replace an existing output (never done otherwise).")
SEED = typer.Option(0, "--seed", help="Seed.")


def check_exposure(spec, exposure_s: float | None) -> None:
    """An ``--exposure-s`` (seconds, None: the bench's own) must lie within the camera's configured limits."""
    limits = spec.config.camera.exposure_limits_s
    if exposure_s is not None and not limits[0] <= exposure_s <= limits[1]:
        raise ValueError(f"--exposure-s {exposure_s}: must lie within camera.exposure_limits_s {list(limits)}")


def frames_option(default: int = FRAMES, help: str = "Light frames averaged.") -> typer.models.OptionInfo:
    return typer.Option(default, "--frames", min=1, help=help)


def dark_frames_option(default: int = DARK_FRAMES, minimum: int = 0) -> typer.models.OptionInfo:
    return typer.Option(default, "--dark-frames", min=minimum, help="Dark frames (light off) subtracted.")
