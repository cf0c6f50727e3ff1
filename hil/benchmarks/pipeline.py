"""Does live imaging keep up with the camera? Decode rates and the live pipeline on the simulated bench.

Per object size n: the student decoder's frames per second at batch 1 and batch 64 (one warm-up,
median of repeats, one CPU thread), then ``hil live``'s pipeline on the simulated live bench at its
camera rate (``configs/bench_ideal_live.yaml``): sustained decoded frames per second, device time per
frame (time inside the decoder), the pipeline's overhead over it (frame conversion and HDF5 storage
in the decoder thread), latency and dropped frames. n = 64 uses the shipped student; other sizes an
untrained student of the same architecture (timing does not depend on the weights).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
import yaml

from hil.bench.bench import Bench
from hil.bench.config import load_bench
from hil.bench.live import LiveSettings, run_live, system_decoder, trigger_rate_fps
from hil.common.provenance import REPO_ROOT
from hil.common.timing import median_time_s
from hil.learning.bundle import load_bundle
from hil.learning.coded_system import CodedSystem
from hil.physics.system import SystemConfig

LIVE_BENCH = REPO_ROOT / "configs" / "bench_ideal_live.yaml"
SHIPPED = REPO_ROOT / "models" / "student"


def _bench_for(n: int, folder: Path) -> Path:
    """The live bench with the system at object size ``n``."""
    system = yaml.safe_load((REPO_ROOT / "configs" / "system.yaml").read_text())
    system["optics"]["n"] = system["data"]["n"] = n
    (folder / "system.yaml").write_text(yaml.safe_dump(system))
    bench = yaml.safe_load(LIVE_BENCH.read_text())
    bench["system"] = str(folder / "system.yaml")
    path = folder / "bench.yaml"
    path.write_text(yaml.safe_dump(bench))
    return path


def _student(system_cfg: SystemConfig) -> tuple[CodedSystem, str]:
    shipped = load_bundle(SHIPPED)
    if shipped.system_config.optics == system_cfg.optics:
        return shipped.system, "shipped"
    cfg = shipped.train_config
    system = CodedSystem(system_cfg.geometry(), cfg.masks, cfg.decoder, slm=system_cfg.slm, seed=cfg.seed)
    return system, "untrained, same architecture"


def decode_fps(decode: Callable, detector_shape: tuple[int, int], batch: int, repeats: int) -> float:
    """Frames per second of ``decode`` on ``batch`` CDPs (one warm-up, median of ``repeats``)."""
    y = torch.rand(batch, 1, *detector_shape, generator=torch.Generator().manual_seed(0))
    photons = torch.full((batch,), 50.0)
    _, seconds = median_time_s(lambda: decode(y, photons), repeats=repeats)
    return batch / seconds


def measure(n: int, frames: int, repeats: int = 3, progress: Callable[[str], None] = print) -> dict:
    """One row of the benchmark at object size ``n``."""
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="hil-pipeline-") as tmp:
        folder = Path(tmp)
        spec = load_bench(_bench_for(n, folder))
        system, weights = _student(spec.system)
        mask_rad = system.mask_rad[0].detach().double().numpy()
        op = spec.model().operator(mask_rad)
        decode = system_decoder(system, op)
        batch1 = decode_fps(decode, op.camera_shape, 1, repeats)
        batch64 = decode_fps(decode, op.camera_shape, 64, repeats)
        progress(f"n={n}: decode {batch1:.1f} fps at batch 1, {batch64:.1f} fps at batch 64")
        camera_fps = trigger_rate_fps(spec)
        settings = LiveSettings(fps=camera_fps, frames=frames, dark_frames=2)
        with Bench(spec) as bench:
            stats = run_live(bench, mask_rad, op, decode, settings, folder / "live.h5", decoder=f"student ({weights})")
    s = stats.summary()
    progress(f"n={n}: live {s['fps']:.1f} fps at a {camera_fps:.0f} fps camera, {s['dropped']} dropped")
    return {
        "size": n, "decode_fps_batch1": batch1, "decode_fps_batch64": batch64, "stream_fps": s["fps"],
        "device_ms_per_frame": s["device_ms_per_frame"], "overhead_pct": s["overhead_pct"],
        "dropped_frames": s["dropped"], "camera_fps": camera_fps, "frames": s["frames"], "triggers": s["triggers"],
        "latency_ms_median": s["latency_ms_median"], "latency_ms_p95": s["latency_ms_p95"], "weights": weights,
        "threads": torch.get_num_threads(), "load_avg_1min_before": load_before,
    }  # fmt: skip


def markdown_table(rows: list[dict]) -> str:
    lines = [
        "| n | decode fps, batch 1 | decode fps, batch 64 | camera fps | live fps | device ms/frame | "
        "pipeline overhead | dropped / frames | latency median / p95 (ms) | weights |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['size']} | {r['decode_fps_batch1']:.1f} | {r['decode_fps_batch64']:.1f} | {r['camera_fps']:.0f} | "
            f"{r['stream_fps']:.1f} | {r['device_ms_per_frame']:.1f} | {r['overhead_pct']:.1f} % | "
            f"{r['dropped_frames']} / {r['frames']} | {r['latency_ms_median']:.0f} / {r['latency_ms_p95']:.0f} | "
            f"{r['weights']} |"
        )
    return "\n".join(lines) + "\n"
