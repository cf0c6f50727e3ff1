"""``hil capture``: record one CDP on the bench with a bundle's (or a file's) mask."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from hil.bench.config import DEFAULT_BENCH


def capture(
    out: Path = typer.Argument(..., help="HDF5 file to write (frames stored as they arrive)."),
    bundle: Path = typer.Option(None, help="Model bundle whose mask to show."),
    mask: Path = typer.Option(None, help="Or a .npy mask in radians, (n, n) (height, width)."),
    bench_config: Path = typer.Option(DEFAULT_BENCH, "--bench", help="Bench config (YAML)."),
    frames: int = typer.Option(4, min=1, help="Light frames averaged."),
    dark_frames: int = typer.Option(4, min=0, help="Dark frames (light off) subtracted."),
    exposure_s: float = typer.Option(None, help="Camera exposure (default: the bench config's)."),
    max_saturated_fraction: float = typer.Option(0.0, help="Largest tolerated saturated-pixel fraction."),
    auto_exposure: float = typer.Option(
        None, help="Set the exposure first so the peak pixel is this fraction of full scale (e.g. 0.5)."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Validate configs and mask; touch no device."),
) -> None:
    """Show the mask, record dark and light frames, check saturation; the bench is left safe on every exit."""
    import numpy as np

    from hil.bench.bench import Bench
    from hil.bench.capture import CaptureSettings, capture_cdp
    from hil.bench.config import load_bench
    from hil.bench.frame_log import ensure_new
    from hil.learning.bundle import load_bundle

    console = Console()
    if (bundle is None) == (mask is None):
        raise ValueError("give exactly one of --bundle or --mask")
    spec = load_bench(bench_config)
    if bundle is not None:
        mask_rad = load_bundle(bundle, expect_system=spec.system).mask_rad[0].numpy().astype(np.float64)
    else:
        if not mask.is_file():
            raise FileNotFoundError(f"{mask}: mask file does not exist")
        mask_rad = np.load(mask, allow_pickle=False)
        n = spec.system.optics.n
        if mask_rad.shape != (n, n):
            raise ValueError(f"{mask}: mask must have shape ({n}, {n}) (height, width), got {mask_rad.shape}")
    settings = CaptureSettings(frames, dark_frames, exposure_s, max_saturated_fraction, auto_exposure)
    ensure_new(out)  # before any device is touched
    console.print(f"plan: {dark_frames} dark + {frames} light frames, mask {mask_rad.shape}, bench {bench_config}")
    if dry_run:
        console.print("dry run: configs and mask are valid; nothing was sent to any device")
        return
    with Bench(spec) as bench:
        result = capture_cdp(bench, mask_rad, settings, out)
    console.print(
        f"wrote {result.path}: exposure {result.exposure_s:g} s, CDP mean {result.cdp_adu.mean():.1f} ADU, "
        f"saturated {result.saturated_fraction:.2%}; bench left safe"
    )
