"""``hil live``: image continuously, one phase map per camera frame, decoded as frames arrive."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import typer

from hil.common.provenance import REPO_ROOT

LIVE_BENCH = REPO_ROOT / "configs" / "bench_ideal_live.yaml"


def live(
    bench_config: Path = typer.Option(LIVE_BENCH, "--bench", help="Bench config (YAML); default: the ideal twin."),
    bundle: Path = typer.Option(
        None, help="Model bundle whose mask and decoder to use (default: the shipped one made for the bench's system)."
    ),
    random_mask: bool = typer.Option(False, "--random-mask", help="A random 8-bit CPM (decoded by RAAR), no bundle."),
    raar: int = typer.Option(
        None, min=1, help="Decode with RAAR of this many iterations (default 50 with --random-mask)."
    ),
    seed: int = typer.Option(0, help="Seed of the random mask."),
    out: Path = typer.Option(None, help="HDF5 file for phase maps and frames (default runs/live-<time>.h5)."),
    fps: float = typer.Option(None, help="Trigger rate, frames per second (default: the trigger box's period_us)."),
    frames: int = typer.Option(200, min=1, help="Triggers to send (the run's length)."),
    queue_frames: int = typer.Option(8, min=1, help="Frames that may wait for the decoder before drops."),
    max_batch: int = typer.Option(16, min=1, help="Most frames decoded together."),
    dark_frames: int = typer.Option(4, min=0, help="Dark frames before streaming; 0: the calibrated offset."),
    auto_exposure: float = typer.Option(None, help="Set the exposure first: peak at this fraction of full scale."),
    keep_frames: bool = typer.Option(True, help="Store every raw frame beside its phase map."),
    threads: int = typer.Option(1, min=1, help="CPU threads of the decoder."),
) -> None:
    """Arm the trigger box, stream frames at --fps, decode each as it arrives (separate thread, bounded
    queue) through the bench's calibrated model on the camera's own pixels, write phase maps to HDF5 as
    they come; shows fps, latency and dropped frames. The bench is left safe on every exit, Ctrl-C included."""
    import numpy as np
    import torch
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from hil.bench.bench import Bench
    from hil.bench.config import load_bench
    from hil.bench.frame_log import ensure_new
    from hil.bench.live import LiveSettings, run_live, system_decoder, trigger_rate_fps
    from hil.bench.reconstruct import reconstruct_classical, uniform_mask
    from hil.learning.bundle import default_bundle, load_bundle

    console = Console()
    torch.set_num_threads(threads)
    spec = load_bench(bench_config)
    fps = fps or trigger_rate_fps(spec)
    settings = LiveSettings(fps, frames, queue_frames, max_batch, dark_frames, auto_exposure, keep_frames)
    model = spec.model()  # the calibration files the bench config names are read and checked before any device
    if random_mask:
        mask_rad = uniform_mask(spec.system.optics.n, seed)
        op = model.operator(mask_rad)
        raar = raar or 50
    else:
        bundle = bundle or default_bundle(spec.system)
        loaded = load_bundle(bundle, expect_system=spec.system)
        mask_rad = loaded.mask_rad[0].numpy().astype(np.float64)
        op = model.operator(mask_rad)  # the bench's calibrated model, not the bundle's own twin
        decode = system_decoder(loaded.system, op)
    if raar is not None:

        def decode(y, _photons):  # noqa: F811 - RAAR instead of the bundle's decoder, same mask
            return reconstruct_classical(op, y.to(op.masks.real.dtype), raar)

    out = ensure_new(out or Path("runs") / f"live-{datetime.now():%Y%m%d-%H%M%S-%f}.h5")
    fields = "{task.fields[fps]:.1f} fps · latency {task.fields[latency]:.0f} ms · dropped {task.fields[dropped]}"
    columns = (TextColumn("live"), BarColumn(), MofNCompleteColumn(), TextColumn(fields))
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("live", total=frames, fps=0.0, latency=0.0, dropped=0)

        def show(stats) -> None:
            latency = stats.latency_ms()
            bar.update(task, completed=stats.frames, fps=stats.fps, dropped=len(stats.dropped),
                       latency=0.0 if latency != latency else latency)  # fmt: skip

        with Bench(spec) as bench:
            name = f"RAAR {raar} iterations" if raar is not None else "decoder"
            source = "random mask" if random_mask else str(bundle)
            stats = run_live(bench, mask_rad, op, decode, settings, out, show, decoder=f"{name} ({source})")
    s = stats.summary()
    console.print(
        f"{s['decoded']} of {s['frames']} frames decoded ({s['triggers']} triggers, {s['dropped']} dropped, "
        f"{s['rejected']} saturated or without signal) at "
        f"{s['fps']:.1f} fps; latency median {s['latency_ms_median']:.0f} ms, p95 {s['latency_ms_p95']:.0f} ms; "
        f"decoder {s['device_ms_per_frame']:.1f} ms/frame + {s['overhead_pct']:.0f} % pipeline overhead; "
        f"wrote {out}; bench left safe"
    )
