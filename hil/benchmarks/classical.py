"""Classical single- and multi-snapshot baselines: quality versus iterations and time.

Same data, masks and noise draws for every solver; SNR in dB as defined in
:mod:`hil.physics.camera` (photons per pixel reported beside it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from hil.common.metrics import summarise
from hil.data.datasets import DataSpec, batch
from hil.physics.camera import CameraModel, CameraSpec, photons_for_snr_db
from hil.physics.optics import CDPGeometry, phase_to_field
from hil.physics.simulate import measure
from hil.solvers import NO_PRIOR, ObjectConstraint, solve_at_checkpoints


@dataclass(frozen=True)
class ClassicalBenchmark:
    n: int = 64
    images: int = 8
    snrs_db: tuple[float | None, ...] = (10.0, 20.0, 30.0, None)
    checkpoints: tuple[int, ...] = (20, 50, 200, 2000)
    seed: int = 0
    sources: tuple[str, ...] = ("skimage", "cells", "phase_screen")
    repeats: int = 3  # timed runs per curve (after one warm-up); ms per frame is their median


def _rows_for(name, label, op, y, phase, constraint, checkpoints, masks, snr, photons, init, repeats):
    rows = []
    curve = solve_at_checkpoints(name, op, y, checkpoints, constraint, init, repeats=repeats)
    for it, (seconds, x) in curve.items():
        rows.append(
            {
                "method": label,
                "masks": masks,
                "iterations": it,
                "snr_db": snr,
                "photons_per_pixel": photons,
                "ms_per_frame": 1e3 * seconds / phase.shape[0],
                **summarise(torch.angle(x), phase),
            }
        )
    return rows


def run(cfg: ClassicalBenchmark, progress=print) -> list[dict]:
    """Rows of metrics for RAAR/HIO/ER/WF at one snapshot (with and without the range prior) and
    four snapshots, at each SNR and checkpoint iteration count."""
    torch.manual_seed(cfg.seed)
    geometry = CDPGeometry(cfg.n)
    phase, _ = batch(DataSpec(sources=cfg.sources, n=cfg.n), "test", cfg.images, cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    masks4 = torch.rand((4, cfg.n, cfg.n), generator=generator) * 2 * math.pi
    prior = ObjectConstraint()
    phase_only = ObjectConstraint(unit_modulus=True, phase_range_rad=None)
    rows = []
    for snr in cfg.snrs_db:
        for masks in (1, 4):
            op = geometry.operator(masks4[:masks])
            clean = op.intensity(phase_to_field(phase))
            photons = None if snr is None else photons_for_snr_db(clean, snr)
            camera = CameraModel(CameraSpec(photons_per_pixel=photons))
            y = measure(op, phase, camera, generator=torch.Generator().manual_seed(cfg.seed + 1))
            if masks == 1:
                plan = [
                    ("raar", "raar_range_prior", prior, None),
                    ("hio", "hio_range_prior", prior, None),
                    ("er", "er_range_prior", prior, None),
                    ("raar", "raar_no_range_prior", phase_only, None),
                    ("wf", "wf_spectral_range_prior", prior, "spectral"),
                ]
            else:
                plan = [
                    ("raar", "raar_unit_modulus", phase_only, None),
                    ("er", "er_spectral_unit_modulus", phase_only, "spectral"),
                    ("wf", "wf_spectral", NO_PRIOR, "spectral"),
                ]
            for name, label, constraint, init in plan:
                progress(f"snr={snr} L={masks} {label}")
                rows += _rows_for(
                    name,
                    label,
                    op,
                    y,
                    phase,
                    constraint,
                    cfg.checkpoints,
                    masks,
                    snr,
                    photons,
                    init,
                    cfg.repeats,
                )
    return rows


def markdown_table(rows: list[dict]) -> str:
    """Pivot: one line per (method, masks, iterations), phase PSNR (dB) per SNR, time per frame at 20 dB."""
    snrs = sorted({r["snr_db"] for r in rows}, key=lambda s: math.inf if s is None else s)
    keys = list(dict.fromkeys((r["method"], r["masks"], r["iterations"]) for r in rows))
    cell = {(r["method"], r["masks"], r["iterations"], r["snr_db"]): r for r in rows}
    head = ["method", "L", "iterations"] + [("noiseless" if s is None else f"{s:g} dB") for s in snrs] + ["ms/frame"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key in keys:
        values = [f"{cell[(*key, s)]['psnr_db']:.1f}" if (*key, s) in cell else "" for s in snrs]
        timing = cell.get((*key, 20.0)) or cell[(*key, snrs[0])]
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | " + " | ".join(values) + f" | {timing['ms_per_frame']:.1f} |")
    return "\n".join(lines) + "\n"
