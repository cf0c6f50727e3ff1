"""``hil demo``: the distilled system end to end on the (simulated) bench, with a report.

The shipped student bundle made for the bench's system (:func:`hil.learning.bundle.default_bundle`: on the
default realistic bench ``models/student_fixture``, on ``configs/bench_ideal.yaml`` ``models/student``) by
default, or ``--bundle`` another, or ``--random-mask`` (RAAR only): mask -> SLM through its phase LUT -> for
each sample (cells, a phase screen, a resolution target, a natural image, set on the simulated bench) dark frames and
one CDP (checked, stored in HDF5) -> bench left safe -> each CDP reconstructed by the student and
by RAAR, timed with a warm-up and the median of repeats -> ``index.html`` report, table, provenance.
Captures and reconstructions use the bench config's calibrated model (measured SLM response, camera
registration, SLM-plane field; :meth:`hil.bench.config.BenchSpec.model`), loaded from the files the bench
config names (printed first, and recorded in the report's provenance and in every capture file); frames stay
on the camera's own pixels.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import typer

from hil.bench.config import DEFAULT_BENCH
from hil.cli.options import dark_frames_option, frames_option

DEFAULT_SAMPLES = "cells,phase_screen,resolution_target,natural"


def demo(
    bench_config: Path = typer.Option(
        DEFAULT_BENCH, "--bench", help="Bench config (YAML); default: the realistic simulated bench, calibrated."
    ),
    bundle: Path = typer.Option(
        None, help="Model bundle whose mask and decoder to use (default: the shipped one made for the bench's system)."
    ),
    random_mask: bool = typer.Option(False, "--random-mask", help="A random 8-bit CPM and RAAR only (no bundle)."),
    samples: str = typer.Option(DEFAULT_SAMPLES, help="Sample kinds set on a simulated bench, comma-separated."),
    out: Path = typer.Option(Path("runs"), help="Folder for the run's outputs."),
    frames: int = frames_option(1, "Light frames per CDP (default 1: the single snapshot the demo is about)."),
    dark_frames: int = dark_frames_option(2),
    calibration: list[Path] = typer.Option(None, help="Calibration result files to plot in the report."),
    raar_iterations: str = typer.Option("50,200", help="RAAR iteration counts to compare, comma-separated."),
    repeats: int = typer.Option(3, min=1, help="Timed decodes per method (after one warm-up); the median is shown."),
    threads: int = typer.Option(1, min=1, help="CPU threads for decoding (1: no oversubscription on a shared CPU)."),
    seed: int = typer.Option(0, help="Seed of the samples and of the random mask."),
) -> None:
    """Deploy the distilled mask, capture several samples, reconstruct each by the student and RAAR, report."""
    import math

    import numpy as np
    import torch
    from rich.console import Console
    from rich.table import Table

    from drivers.sim_optics import SAMPLE_KINDS, sample_phase
    from hil.bench.bench import Bench
    from hil.bench.capture import CaptureSettings, capture_cdp
    from hil.bench.config import load_bench
    from hil.bench.reconstruct import load_capture, uniform_mask
    from hil.bench.report import SampleResult, gray_image, write_report
    from hil.common.config import to_mapping
    from hil.common.provenance import record
    from hil.learning.bundle import default_bundle, load_bundle

    console = Console()
    torch.set_num_threads(threads)
    iterations = _counts(raar_iterations)
    kinds = [k.strip() for k in samples.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in SAMPLE_KINDS]
    if not kinds or unknown:
        raise ValueError(f"--samples: unknown kind(s) {unknown or kinds}; choose from {list(SAMPLE_KINDS)}")
    run_dir = out / f"demo-{datetime.now():%Y%m%d-%H%M%S-%f}"
    captures: list[tuple[str, Path, np.ndarray | None]] = []
    spec = load_bench(bench_config)
    system = spec.system
    spec.model()  # the calibration files the bench config names are read and checked before any device
    console.print(f"bench {bench_config}, calibrated model from: {spec.calibration_summary()}")
    if random_mask:
        loaded, mask_rad = None, uniform_mask(system.optics.n, seed)
    else:
        bundle = bundle or default_bundle(system)
        loaded = load_bundle(bundle, expect_system=system)
        mask_rad = loaded.mask_rad[0].numpy().astype(np.float64)
        console.print(f"bundle {bundle}")
    with Bench(spec) as bench:
        device = bench.slm.slm
        if not hasattr(device, "set_sample"):  # a real bench: whatever sample is in the beam
            console.print("this bench cannot switch samples: one capture of the sample in the beam")
            kinds = ["bench sample"]
        rng = np.random.default_rng(seed)
        for index, kind in enumerate(kinds):
            truth = None
            if hasattr(device, "set_sample"):
                truth = sample_phase(kind, system.optics.n, rng, system.data.phi_max_rad)
                bench.place_sample(truth)
            path = run_dir / f"capture{index}_{kind.replace(' ', '_')}.h5"
            capture_cdp(bench, mask_rad, CaptureSettings(frames, dark_frames), path)
            captures.append((kind, path, truth))
    console.print(f"captured {len(captures)} CDPs into {run_dir}; bench left in its safe state")

    results = []
    for kind, path, truth in captures:
        captured = load_capture(path)
        estimates, ms = _decode(captured, loaded, iterations, repeats)
        cdp = captured.y[0, 0].double().numpy()
        results.append(SampleResult(kind, cdp, estimates, ms, truth, captured.photons_per_pixel))

    provenance = record(
        {"bench": to_mapping(spec.config), "system": to_mapping(system)},
        seed=seed, command="hil demo", bench=str(bench_config), system_file=str(spec.system_file),
        calibration_files={k: str(v) for k, v in spec.calibration_files.items()},
        bundle=None if loaded is None else str(bundle), samples=kinds,
        timing={"warmup": 1, "repeats": repeats, "statistic": "median", "threads": threads},
    )  # fmt: skip
    title = "hil demo: " + ("random CPM, RAAR" if loaded is None else f"{bundle.name} bundle vs RAAR")
    page = write_report(
        run_dir, title, results, mask_rad, gray_image(system, mask_rad), system.data.phi_max_rad, system,
        list(calibration or []), provenance,
    )  # fmt: skip
    table = Table(title=f"phase from one CDP per sample ({frames} frame(s) per CDP)")
    for col in ("sample", "method", "photons/pixel", "phase PSNR (dB)", "SSIM", "ms per frame (median)"):
        table.add_column(col, justify="right")
    for result in results:
        for row in result.rows:
            table.add_row(
                result.name, row["method"], f"{result.photons_per_pixel:.0f}",
                f"{row.get('psnr_db', math.nan):.1f}", f"{row.get('ssim', math.nan):.3f}", f"{row['ms_per_frame']:.1f}",
            )  # fmt: skip
    console.print(table)
    console.print(f"report: {page} (open it in a browser); captures and provenance.json beside it")


def _counts(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise ValueError(f"--raar-iterations: expected positive integers separated by commas, got {text!r}")
    return counts


def _decode(captured, bundle, raar_iterations: list[int], repeats: int) -> tuple[dict, dict]:
    """Phase ``(n, n)`` and median ms per frame of each method (student when a bundle is given, RAAR)."""
    from hil.bench.reconstruct import reconstruct_bundle, reconstruct_classical
    from hil.common.timing import median_time_s

    y, op = captured.y, captured.op
    methods = {}
    if bundle is not None:
        methods["student"] = lambda: reconstruct_bundle(bundle, op, y, captured.photons_per_pixel)
    for iterations in raar_iterations:
        methods[f"RAAR {iterations} it"] = lambda it=iterations: reconstruct_classical(op, y, it)
    estimates, ms = {}, {}
    for name, run in methods.items():
        phase, seconds = median_time_s(run, repeats=repeats)
        estimates[name], ms[name] = phase[0].double().numpy(), 1e3 * seconds
    return estimates, ms
