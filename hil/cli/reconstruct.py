"""``hil reconstruct CAPTURE``: the phase from one captured CDP, through the calibrated model the capture records.

The capture file carries the bench's calibrated model (system with the measured SLM response, camera
registration, SLM-plane field); the CDP stays on the camera's own pixels. ``--registration`` replaces the
recorded registration, for a capture made before the geometry was calibrated.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from hil.cli.options import OVERWRITE


def reconstruct(
    capture_file: Path = typer.Argument(..., help="HDF5 file written by hil capture or hil demo."),
    bundle: Path = typer.Option(None, help="Decode with this bundle's decoder (its mask must be the captured one)."),
    iterations: int = typer.Option(50, min=1, help="RAAR iterations (without --bundle)."),
    out: Path = typer.Option(
        None, "--out", help="Phase map output (.npy, radians, (n, n)); default: CAPTURE with suffix .phase.npy."
    ),
    registration: Path = typer.Option(
        None, help="Replace the capture's recorded camera registration (hil calibrate geometry) with this file."
    ),
    report: Path = typer.Option(None, help="Also write an HTML report (index.html + PNGs) into this folder."),
    overwrite: bool = OVERWRITE,
) -> None:
    """Reconstruct the phase (radians) from one CDP: the bundle's decoder, or RAAR with the range prior."""
    import time

    import numpy as np

    from hil.bench.reconstruct import load_capture, reconstruct_bundle, reconstruct_classical
    from hil.cli.outputs import check_output, save_npy
    from hil.learning.bundle import load_bundle
    from hil.physics.registration import load_registration

    console = Console()
    out = check_output(out or capture_file.with_suffix(".phase.npy"), overwrite)  # before the work
    if report is not None:
        check_output(report / "index.html", overwrite)
    captured = load_capture(capture_file, None if registration is None else load_registration(registration))
    start = time.perf_counter()
    if bundle is not None:
        loaded = load_bundle(bundle, expect_system=captured.system)
        if not np.allclose(loaded.mask_rad[0].double().numpy(), captured.mask_rad.numpy(), atol=1e-6):
            raise ValueError(f"{capture_file} was captured with another mask than the one in {bundle}")
        phase = reconstruct_bundle(loaded, captured.op, captured.y, captured.photons_per_pixel)
        method = f"decoder of {bundle}"
    else:
        phase = reconstruct_classical(captured.op, captured.y, iterations)
        method = f"RAAR, {iterations} iterations"
    ms = 1e3 * (time.perf_counter() - start)
    save_npy(out, phase[0].double().numpy(), overwrite)
    console.print(f"{method}: {ms:.0f} ms, {captured.photons_per_pixel:.0f} photons/pixel; wrote {out}")
    if report is not None:
        from hil.bench.report import SampleResult, gray_image, write_report

        name = "decoder" if bundle is not None else f"RAAR {iterations} it"
        sample = SampleResult(
            capture_file.stem, captured.y[0, 0].double().numpy(), {name: phase[0].double().numpy()}, {name: ms},
            photons_per_pixel=captured.photons_per_pixel,
        )  # fmt: skip
        mask = captured.mask_rad.numpy()
        system = captured.system
        page = write_report(report, f"hil reconstruct {capture_file.name}", [sample], mask, gray_image(system, mask),
                            system.data.phi_max_rad, system)  # fmt: skip
        console.print(f"report: {page}")
