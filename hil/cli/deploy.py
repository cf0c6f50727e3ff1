"""``hil deploy BUNDLE``: check a model bundle against the bench and show its mask on the SLM.

A bundle's mask is a phase design in radians. The gray image is made now, through the bench's
phase response: the system's measured ``slm.gamma`` (``hil calibrate slm-response``), which the
bench hands to the SLM's ``set_gamma``. A bundle is therefore not tied to the response or the
radiometry it was trained with: only the geometry must match
(:func:`hil.learning.bundle.compatibility_problems`; a mismatch is named key by key).
``--verify`` measures: a capture of the deployed mask with the sample out of the beam, against the
bench's calibrated model (:meth:`hil.bench.config.BenchSpec.model`: measured response, SLM-plane
field, registered camera) on camera pixels (:mod:`calibration.verify`), next to the same comparison
for masks that were not deployed (the chance level); exit status 1 when it is not clearly above chance.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from hil.bench.config import DEFAULT_BENCH
from hil.cli.options import check_exposure

MIN_CORRELATION_OVER_CHANCE = 2.0  # the deployed mask's correlation over the largest control's


def deploy(
    bundle: Path = typer.Argument(..., help="Model bundle folder (hil train writes <run>/bundle)."),
    bench_config: Path = typer.Option(DEFAULT_BENCH, "--bench", help="Bench config (YAML)."),
    verify: bool = typer.Option(
        False, "--verify", help="Capture the deployed mask (sample out of the beam) and compare it with the model."
    ),
    registration: Path = typer.Option(
        None, help="Use this camera registration instead of the bench config's calibration.registration."
    ),
    frames_count: int = typer.Option(4, "--frames", min=1, help="Lit (and dark) frames averaged for --verify."),
    exposure_s: float = typer.Option(None, help="Camera exposure (s) for --verify (default: the bench's)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Validate bundle and bench only; touch no device."),
) -> None:
    """Upload the bundle's phase mask through the bench's phase response onto the SLM's ROI; with
    --verify, measure it against the calibrated model. The SLM is blanked on exit."""
    from hil.bench.bench import Bench
    from hil.bench.config import load_bench
    from hil.learning.bundle import load_bundle
    from hil.physics.bench_model import BenchModel
    from hil.physics.registration import load_registration

    console = Console()
    spec = load_bench(bench_config, import_plugins=not dry_run)
    loaded = load_bundle(bundle, expect_system=spec.system)
    model = spec.model()
    if registration is not None:
        model = BenchModel(model.system, load_registration(registration), model.field)
    mask = loaded.mask_rad[0].double().numpy()
    slm = spec.system.slm
    response = f"measured response ({len(slm.gamma)} levels)" if slm.gamma else "nominal linear response"
    console.print(
        f"bundle {bundle}: mask {mask.shape} (height, width) in radians, through the {response}; {slm.bitdepth}-bit, "
        f"macro-pixel {slm.macro_pixel}, SLM ROI {slm.macro_pixel * mask.shape[0]} px square, bench {bench_config}"
    )
    check_exposure(spec, exposure_s)
    if dry_run:
        console.print("dry run: bundle matches the bench; nothing was sent to any device")
        return
    with Bench(spec) as bench:
        bench.show_mask(mask)
        if verify:
            if exposure_s is not None:
                bench.set_exposure(exposure_s)
            frame = _capture(bench, frames_count)
            bench.show_mask(mask)  # what the SLM shows when deploy returns
    if not verify:
        console.print("deployed (not measured: --verify with the sample out of the beam); the SLM was blanked")
        return
    from calibration.verify import verify_mask

    result = verify_mask(model, mask, frame)
    console.print(
        f"measured against the calibrated model on camera pixels: correlation {result['correlation']:.3f} "
        f"(mask-specific part; masks not deployed: up to {result['chance']:.3f}), residual "
        f"{result['residual_rel']:.3f} of the frame's spread"
    )
    if not result["correlation"] > MIN_CORRELATION_OVER_CHANCE * result["chance"]:
        console.print(
            f"[red]deployed, not verified[/red]: the capture matches the deployed mask's prediction no better than "
            f"{MIN_CORRELATION_OVER_CHANCE:g} x masks that were not deployed: check the registration, the SLM "
            "response, the SLM-plane field and that the sample is out of the beam"
        )
        raise typer.Exit(1)
    console.print("deployed and measured; the SLM was blanked when the bench closed")


def _capture(bench, frames: int):
    """Dark-subtracted mean of ``frames`` lit frames (saturated or lit-dark frames refused)."""
    import numpy as np

    from calibration.frame_checks import camera_ceiling_adu, refuse_lit_dark, refuse_no_signal, refuse_saturated

    bench.light_off()
    dark = np.stack([bench.capture().astype(np.float64) for _ in range(max(frames, 2))])
    with bench.lit():
        lit = np.stack([bench.capture().astype(np.float64) for _ in range(frames)])
    refuse_saturated(lit, camera_ceiling_adu(bench.camera), "deploy --verify")
    refuse_lit_dark(dark, lit.mean(axis=0))
    refuse_no_signal(lit.mean(axis=0), dark, "deploy --verify")
    return lit.mean(axis=0) - dark.mean(axis=0)
