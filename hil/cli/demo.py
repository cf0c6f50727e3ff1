"""``hil demo``: the main job end to end on the simulated bench."""

from __future__ import annotations

import json
import math
import time
from datetime import datetime
from pathlib import Path

import torch
import typer
from rich.console import Console
from rich.table import Table

from hil.camera_model import CameraModel, expected_snr_db
from hil.config import to_mapping
from hil.datasets import batch
from hil.metrics import summarise
from hil.provenance import record
from hil.simulate import measure
from hil.slm_model import SLMModel
from hil.solvers import solve
from hil.system_config import DEFAULT_SYSTEM, load_system


def demo(
    config: Path = typer.Option(DEFAULT_SYSTEM, help="System config (YAML)."),
    out: Path = typer.Option(Path("runs"), help="Folder for the run's outputs."),
    images: int = typer.Option(4, min=1, help="Test objects to reconstruct."),
    seed: int = typer.Option(0, help="Seed for mask, objects and noise."),
) -> None:
    """Single-snapshot phase retrieval on the simulated bench: an 8-bit random CPM on the SLM model,
    camera noise, classical RAAR with the range prior; writes a figure and a provenance record."""
    console = Console()
    system = load_system(config)
    geometry = system.geometry()
    generator = torch.Generator().manual_seed(seed)
    slm = SLMModel(system.slm)
    mask_rad = torch.rand((1, system.optics.n, system.optics.n), generator=generator) * 2 * math.pi
    op = geometry.operator(slm.transmittance(mask_rad))
    phase, amplitude = batch(system.data, "test", images, seed)
    camera = CameraModel(system.camera)
    y = measure(op, phase, camera, generator=generator)
    clean_photons = camera.photons(op.A(torch.polar(torch.ones_like(phase), phase)))
    snr = expected_snr_db(clean_photons, system.camera.read_noise_e, system.camera.quantum_efficiency)

    table = Table(title=f"RAAR, one snapshot, {system.camera.photons_per_pixel} photons/pixel (SNR {snr:.1f} dB)")
    for col in ("iterations", "phase PSNR (dB)", "SSIM", "MAE (rad)", "ms per frame"):
        table.add_column(col, justify="right")
    results = []
    for iterations in (20, 50, 200):
        start = time.perf_counter()
        x_hat = solve("raar", op, y, iterations=iterations, seed=seed)
        ms = 1e3 * (time.perf_counter() - start) / images
        m = summarise(torch.angle(x_hat), phase, system.data.phi_max_rad)
        results.append({"iterations": iterations, "ms_per_frame": ms, **m})
        table.add_row(
            str(iterations),
            f"{m['psnr_db']:.1f}",
            f"{m['ssim']:.3f}",
            f"{m['mae_rad']:.3f}",
            f"{ms:.1f}",
        )
    console.print(table)

    run_dir = out / f"demo-{datetime.now():%Y%m%d-%H%M%S}"
    run_dir.mkdir(parents=True, exist_ok=True)
    _save_figure(run_dir / "demo.png", phase, torch.angle(x_hat), y)
    provenance = record(to_mapping(system), seed=seed, command="hil demo", snr_db=snr, results=results)
    (run_dir / "provenance.json").write_text(json.dumps(provenance, indent=2))
    console.print(f"wrote {run_dir}/demo.png and provenance.json")


def _save_figure(path: Path, truth: torch.Tensor, estimate: torch.Tensor, y: torch.Tensor) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hil.metrics import phase_error

    aligned = truth + phase_error(estimate, truth)
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.4))
    for ax, img, title in zip(
        axes,
        (truth[0], y[0, 0].clamp_min(0).sqrt(), aligned[0]),
        ("object phase (rad)", "sqrt(CDP)", "RAAR (rad)"),
        strict=False,
    ):
        im = ax.imshow(img.numpy(), cmap="twilight" if "rad" in title else "gray")
        ax.set_title(title)
        ax.axis("off")
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
