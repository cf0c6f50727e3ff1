"""``hil demo``: the main job end to end on the simulated bench.

Mask (a trained bundle's, or a random 8-bit CPM) -> SLM through its phase LUT -> shutter open ->
camera frames (dark-subtracted, saturation-checked, stored in HDF5) -> bench left safe ->
reconstruction of the bench's hidden phase sample from that one CDP (classical RAAR, and the
bundle's decoder when given) -> figure and provenance in a run folder.
"""

from __future__ import annotations

import json
import math
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
import typer
from rich.console import Console
from rich.table import Table

from hil.bench.config import DEFAULT_BENCH


def demo(
    bench_config: Path = typer.Option(DEFAULT_BENCH, "--bench", help="Bench config (YAML); default: simulated."),
    bundle: Path = typer.Option(None, help="Model bundle whose mask and decoder to use (e.g. runs/.../bundle)."),
    out: Path = typer.Option(Path("runs"), help="Folder for the run's outputs."),
    frames: int = typer.Option(1, min=1, help="Light frames averaged into the CDP."),
    dark_frames: int = typer.Option(2, min=0, help="Dark frames (light off) subtracted."),
    seed: int = typer.Option(0, help="Seed of the random mask (without --bundle)."),
) -> None:
    """Deploy a coded phase mask on the bench, capture one CDP, reconstruct the sample's phase."""
    from hil.bench.bench import Bench
    from hil.bench.capture import CaptureSettings, capture_cdp
    from hil.bench.reconstruct import load_capture, reconstruct_bundle, reconstruct_classical
    from hil.common.config import to_mapping
    from hil.common.metrics import summarise
    from hil.common.provenance import record
    from hil.learning.bundle import load_bundle

    console = Console()
    run_dir = out / f"demo-{datetime.now():%Y%m%d-%H%M%S-%f}"
    with Bench.from_config(bench_config) as bench:
        system = bench.spec.system
        loaded = load_bundle(bundle, expect_system=system) if bundle is not None else None
        if loaded is not None:
            mask_rad = loaded.mask_rad[0].numpy().astype(np.float64)
        else:
            generator = torch.Generator().manual_seed(seed)
            mask_rad = (
                torch.rand((system.optics.n,) * 2, generator=generator, dtype=torch.float64) * 2 * math.pi
            ).numpy()
        captured = capture_cdp(bench, mask_rad, CaptureSettings(frames, dark_frames), run_dir / "capture.h5")
        truth = getattr(bench.slm.slm, "sample_rad", None)  # known only to a simulated bench
    console.print(f"captured {captured.path} (exposure {captured.exposure_s:g} s); bench left in its safe state")

    loaded_capture = load_capture(captured.path)
    op, y, photons_per_pixel = loaded_capture.op, loaded_capture.y, loaded_capture.photons_per_pixel
    truth_rad = None if truth is None else torch.from_numpy(np.asarray(truth, dtype=np.float32))[None]
    estimates: dict[str, torch.Tensor] = {}
    rows = []
    methods = [(f"RAAR {it} it", lambda it=it: reconstruct_classical(op, y.float(), it)) for it in (20, 50, 200)]
    if loaded is not None:
        methods.append(("student decoder", lambda: reconstruct_bundle(loaded, y.float(), photons_per_pixel)))
    for name, run in methods:
        start = time.perf_counter()
        estimates[name] = run().float()
        row = {"method": name, "ms_per_frame": 1e3 * (time.perf_counter() - start)}
        if truth_rad is not None:
            row |= summarise(estimates[name], truth_rad, system.data.phi_max_rad)
        rows.append(row)

    table = Table(title=f"one CDP from the bench, {photons_per_pixel:.0f} photons/pixel")
    for col in ("method", "phase PSNR (dB)", "SSIM", "ms per frame"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(
            r["method"],
            f"{r.get('psnr_db', math.nan):.1f}",
            f"{r.get('ssim', math.nan):.3f}",
            f"{r['ms_per_frame']:.0f}",
        )
    console.print(table)
    _save_figure(run_dir / "demo.png", truth_rad, loaded_capture.y[0, 0], estimates)
    provenance = record(
        {"bench": to_mapping(bench.spec.config), "system": to_mapping(system)},
        seed=seed, command="hil demo", bundle=None if bundle is None else str(bundle),
        photons_per_pixel=photons_per_pixel, results=rows,
    )  # fmt: skip
    (run_dir / "provenance.json").write_text(json.dumps(provenance, indent=2))
    console.print(f"wrote {run_dir}/demo.png, capture.h5 and provenance.json")


def _save_figure(path: Path, truth: torch.Tensor | None, cdp: torch.Tensor, estimates: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hil.common.metrics import phase_error

    panels = [("captured CDP (sqrt, model units)", cdp.clamp_min(0).sqrt(), "gray")]
    if truth is not None:
        panels.insert(0, ("hidden sample (rad)", truth[0], "twilight"))
    for name, est in estimates.items():
        shown = est[0] if truth is None else (truth + phase_error(est, truth))[0]
        panels.append((f"{name} (rad)", shown, "twilight"))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.4))
    for ax, (title, img, cmap) in zip(axes, panels, strict=True):
        im = ax.imshow(img.numpy(), cmap=cmap)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
