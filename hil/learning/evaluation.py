"""Evaluation of coded systems on held-out objects with the real camera noise (Poisson + read).

Noise levels are set per single-snapshot frame: ``photons_per_pixel`` for an SNR is found on the
CDPs of a reference random 8-bit mask (:func:`photons_for_snr`), so every method sees the same
photon number; a multi-mask system gets it per frame (``per_snapshot``) or split over its frames
(``equal_total``).
"""

from __future__ import annotations

import dataclasses
import math
import time
from functools import partial

import torch

from hil.common.metrics import phase_psnr, summarise
from hil.learning.coded_system import (
    Budget,
    CodedSystem,
    decode,
    photons_per_frame,
    point_antisymmetry,
    twin,
    without_handover,
)
from hil.physics.camera import CameraModel, CameraSpec, photons_for_snr_db
from hil.physics.optics import CDPGeometry, CDPOperator, phase_to_field
from hil.physics.simulate import measure
from hil.physics.slm import SLMModel, SLMSpec
from hil.solvers.alternating import raar

HANDOVER_PHOTONS = (5.0, 50.0, 150.0, 500.0, 1500.0, None)  # calibration grid (None: noiseless)


def reference_mask(geometry: CDPGeometry, slm: SLMSpec, seed: int = 0) -> torch.Tensor:
    """A uniform random mask shown through the SLM model: transmittance ``(1, k*n, k*n)``."""
    g = torch.Generator().manual_seed(seed)
    return SLMModel(slm).transmittance(torch.rand((1, geometry.n, geometry.n), generator=g) * 2 * math.pi)


def photons_for_snr(op: CDPOperator, phase_rad: torch.Tensor, snr_db: float | None) -> float | None:
    """Mean photons per pixel at which ``op``'s CDPs of ``phase_rad`` reach ``snr_db`` (None: noiseless)."""
    return None if snr_db is None else photons_for_snr_db(op.intensity(phase_to_field(phase_rad)), snr_db)


def noisy_cdps(
    op: CDPOperator, phase_rad: torch.Tensor, camera: CameraSpec, photons: float | None, seed: int
) -> torch.Tensor:
    """Real camera frames (Poisson + read noise) of ``phase_rad`` in model units; fixed noise seed."""
    spec = dataclasses.replace(camera, photons_per_pixel=photons)
    return measure(op, phase_rad, CameraModel(spec), generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def ms_per_frame(system: CodedSystem, op: CDPOperator, y: torch.Tensor, photons: float | None, batch: int) -> float:
    """Decoder wall time per frame (ms) at ``batch`` frames per call (``y`` repeated as needed; best of 3)."""
    reps = math.ceil(batch / y.shape[0])
    yb = y.repeat(reps, 1, 1, 1)[:batch]
    decode(system, op, yb, photons)
    best = math.inf
    for _ in range(3):
        start = time.perf_counter()
        decode(system, op, yb, photons)
        best = min(best, time.perf_counter() - start)
    return 1e3 * best / batch


@torch.no_grad()
def evaluate_system(
    system: CodedSystem,
    phase_rad: torch.Tensor,
    camera: CameraSpec,
    photons: float | None,
    budget: Budget,
    seed: int,
) -> dict[str, float]:
    """Metrics of ``system`` at ``photons`` per pixel of the single-snapshot budget (see module docstring)."""
    system.eval()
    op = system.operator()
    per_frame = None if photons is None else float(photons_per_frame(torch.tensor(photons), system.n_masks, budget))
    y = noisy_cdps(op, phase_rad, camera, per_frame, seed)
    return summarise(decode(system, op, y, per_frame), phase_rad)


@torch.no_grad()
def twin_check(system: CodedSystem, phase_rad: torch.Tensor, camera: CameraSpec, photons: float, seed: int) -> dict:
    """Single-mask systems (macro-pixel 1): the mask's point-antisymmetry and the fraction of test
    objects the decoder returns closer to the exact twin than to the truth."""
    op = system.operator()
    y = noisy_cdps(op, phase_rad, camera, photons, seed)
    phase_hat = decode(system, op, y, photons)
    twin_phase = torch.angle(twin(phase_to_field(phase_rad), op.masks[0]))
    to_truth, to_twin = phase_psnr(phase_hat, phase_rad), phase_psnr(phase_hat, twin_phase)
    realised = torch.angle(op.masks[0])
    return {
        "mask_point_antisymmetry": float(point_antisymmetry(realised[None])[0]),
        "twin_error_rate": float((to_twin > to_truth).double().mean()),
        "psnr_to_twin_db": float(to_twin.mean()),
        "psnr_to_truth_db": float(to_truth.mean()),
    }


def _record(
    marks: dict[int, float], keep: tuple[int, ...], truth: torch.Tensor, it: int, estimate: torch.Tensor
) -> None:
    if it in keep:
        marks[it] = float(phase_psnr(torch.angle(estimate), truth).mean())


@torch.no_grad()
def calibrate_handover(
    system: CodedSystem,
    phase_rad: torch.Tensor,
    camera: CameraSpec,
    budget: Budget,
    iterations: tuple[int, ...],
    seed: int,
    photon_levels: tuple[float | None, ...] = HANDOVER_PHOTONS,
) -> tuple[float, int, list[dict]]:
    """Measure where handing over to classical RAAR pays: ``(photons per frame, iterations, table)``.

    For each photon level (single-snapshot budget; ascending, noiseless last) and each iteration
    count, the mean PSNR of ``phase_rad`` decoded by ``system`` (handover off) and after that many
    RAAR iterations started from its output. The threshold lies between the lowest level from which
    the handover never loses at any higher level and the level below it (their geometric mean: the
    crossover is somewhere between, and a frame a hair below a grid level, as 30 dB SNR is below
    500 photons, should not lose the handover measured there); the count is the one with the best
    summed PSNR (the smaller on ties). ``(0.0, 0, table)`` when the handover never pays.
    """
    system.eval()
    op = system.operator()
    table = []
    with without_handover(system):
        for photons in photon_levels:
            per_frame = (
                None if photons is None else float(photons_per_frame(torch.tensor(photons), system.n_masks, budget))
            )
            y = noisy_cdps(op, phase_rad, camera, per_frame, seed)
            level = None if per_frame is None else torch.full((y.shape[0],), per_frame)
            x = system(op, y, level).x
            row = {
                "photons_per_pixel": photons,
                "photons_per_frame": per_frame,
                "decoder_psnr_db": float(phase_psnr(torch.angle(x), phase_rad).mean()),
            }
            marks: dict[int, float] = {}
            raar(
                op,
                y,
                x,
                system.decoder.constraint,
                iterations=max(iterations),
                callback=partial(_record, marks, iterations, phase_rad),
            )
            row["handover_psnr_db"] = {str(k): marks[k] for k in iterations}
            table.append(row)
    photons, k = choose_handover(table, iterations)
    return photons, k, table


def choose_handover(table: list[dict], iterations: tuple[int, ...]) -> tuple[float, int]:
    """``(photons per frame, iterations)`` of the handover from :func:`calibrate_handover`'s table
    (rules in its docstring); ``(0.0, 0)`` when the handover never pays."""
    best = (sum(r["decoder_psnr_db"] for r in table), 0.0, 0)
    for k in sorted(iterations):
        gains = [r["handover_psnr_db"][str(k)] - r["decoder_psnr_db"] for r in table]
        start = len(gains)
        while start > 0 and gains[start - 1] >= 0:
            start -= 1
        if start == len(gains):
            continue
        total = sum(r["decoder_psnr_db"] for r in table[:start]) + sum(
            r["handover_psnr_db"][str(k)] for r in table[start:]
        )
        threshold = table[start]["photons_per_frame"]
        below = table[start - 1]["photons_per_frame"] if start else None
        if threshold is not None and below is not None:  # the crossover lies between two grid levels
            threshold = math.sqrt(threshold * below)
        if total > best[0]:
            best = (total, math.inf if threshold is None else threshold, k)
    _, photons, k = best
    if math.isinf(photons):  # only noiseless frames: any finite level above the grid
        photons = 10 * max(r["photons_per_frame"] for r in table if r["photons_per_frame"] is not None)
    return float(photons), int(k)
