"""``hil deploy BUNDLE``: check a model bundle against the bench and show its mask on the SLM."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from hil.bench.config import DEFAULT_BENCH


def deploy(
    bundle: Path = typer.Argument(..., help="Model bundle folder (hil train writes <run>/bundle)."),
    bench_config: Path = typer.Option(DEFAULT_BENCH, "--bench", help="Bench config (YAML)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Validate bundle and bench only; touch no device."),
) -> None:
    """Upload the bundle's coded phase mask through the SLM's phase LUT onto its ROI, read the realised
    phase back and compare it with the SLM model the mask was designed for; the SLM is blanked on exit."""
    import numpy as np
    import torch

    from hil.bench.bench import Bench
    from hil.bench.config import load_bench
    from hil.common.metrics import phase_error
    from hil.learning.bundle import load_bundle
    from hil.physics.slm import SLMModel

    console = Console()
    spec = load_bench(bench_config, import_plugins=not dry_run)
    loaded = load_bundle(bundle, expect_system=spec.system)
    mask = loaded.mask_rad[0].double()
    slm = spec.system.slm
    console.print(
        f"bundle {bundle}: mask {tuple(mask.shape)} (height, width), {slm.bitdepth}-bit, "
        f"macro-pixel {slm.macro_pixel}, SLM ROI {slm.macro_pixel * mask.shape[0]} px square, bench {bench_config}"
    )
    if dry_run:
        console.print("dry run: bundle matches the bench; nothing was sent to any device")
        return
    designed = SLMModel(slm)(mask[None])[0]
    with Bench(spec) as bench:
        bench.show_mask(mask.numpy())
        realised = torch.from_numpy(bench.slm.realised_phase())
    err = phase_error(realised[None], designed[None])[0]
    rms = float(err.square().mean().sqrt())
    console.print(f"realised phase vs SLM model: rms {rms:.2e} rad, max {float(err.abs().max()):.2e} rad")
    if not np.isfinite(rms) or rms > 1e-3:
        raise ValueError(
            f"the SLM realises the mask {rms:.3g} rad rms away from the model it was designed with: "
            "check slm.bitdepth, slm.phase_range_rad and slm.gamma (the LUT) in the system config"
        )
    console.print("deployed and verified; the SLM was blanked when the bench closed")
