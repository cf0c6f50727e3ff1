"""``hil capture --out OUT.h5``: record one CDP on the bench with a bundle's (or a file's) mask."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from hil.cli.options import BENCH, DRY_RUN, OVERWRITE, dark_frames_option, frames_option


def capture(
    out: Path = typer.Option(..., "--out", help="HDF5 file to write (frames stored as they arrive)."),
    bundle: Path = typer.Option(None, help="Model bundle whose mask to show."),
    mask: Path = typer.Option(None, help="Or a .npy mask in radians, (n, n) (height, width)."),
    bench_config: Path = BENCH,
    frames: int = frames_option(),
    dark_frames: int = dark_frames_option(),
    exposure_s: float = typer.Option(None, help="Camera exposure (default: the bench config's)."),
    max_saturated_fraction: float = typer.Option(0.0, help="Largest tolerated saturated-pixel fraction."),
    auto_exposure: float = typer.Option(
        None, help="Set the exposure first so the peak pixel is this fraction of full scale (e.g. 0.5)."
    ),
    overwrite: bool = OVERWRITE,
    dry_run: bool = DRY_RUN,
) -> None:
    """Show the mask, record dark and light frames, check saturation; the bench is left safe on every exit."""
    import numpy as np

    from hil.bench.bench import Bench
    from hil.bench.capture import CaptureSettings, capture_cdp
    from hil.bench.config import load_bench
    from hil.bench.frame_log import ensure_new
    from hil.cli.inputs import load_mask
    from hil.cli.outputs import check_output
    from hil.learning.bundle import load_bundle

    console = Console()
    if (bundle is None) == (mask is None):
        raise ValueError("give exactly one of --bundle or --mask")
    spec = load_bench(bench_config, import_plugins=not dry_run)
    if bundle is not None:
        mask_rad = load_bundle(bundle, expect_system=spec.system).mask_rad[0].numpy().astype(np.float64)
    else:
        mask_rad = load_mask(mask, spec.system.optics.n)
    spec.model()  # the calibration files the bench config names are read and checked before any device
    settings = CaptureSettings(frames, dark_frames, exposure_s, max_saturated_fraction, auto_exposure)
    check_output(ensure_new(out, overwrite), overwrite)  # a writable place, before any device is touched
    console.print(
        f"plan: {dark_frames} dark + {frames} light frames, mask {mask_rad.shape}, bench {bench_config}; "
        f"the file records the calibrated model ({spec.calibration_summary()})"
    )
    if dry_run:
        console.print("dry run: configs and mask are valid; nothing was sent to any device")
        return
    out.unlink(missing_ok=True)  # only reached with --overwrite
    with Bench(spec) as bench:
        result = capture_cdp(bench, mask_rad, settings, out)
    console.print(
        f"wrote {result.path}: exposure {result.exposure_s:g} s, CDP mean {result.cdp_adu.mean():.1f} ADU, "
        f"saturated {result.saturated_fraction:.2%}; bench left safe"
    )
