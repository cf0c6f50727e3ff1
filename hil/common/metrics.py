"""Phase metrics, insensitive to the global phase (which no intensity measurement fixes).

For each image the global offset ``c = angle(sum exp(1j*(phi_hat - phi)))`` (circular mean of
the difference) is removed and the residual wrapped to (-π, π]. Then

* phase PSNR (dB) = ``10 log10(phi_max^2 / mean(err^2))`` (peak = ``phi_max``, radians);
* SSIM of ``phi + err`` against ``phi`` with data range ``phi_max`` (scikit-image's SSIM);
* mean absolute phase error in radians.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from skimage.metrics import structural_similarity


def wrap(phase_rad: torch.Tensor) -> torch.Tensor:
    """Wrap to (-π, π]."""
    return phase_rad - 2 * math.pi * torch.ceil((phase_rad - math.pi) / (2 * math.pi))


def phase_error(phase_hat_rad: torch.Tensor, phase_rad: torch.Tensor) -> torch.Tensor:
    """Wrapped per-pixel error ``(..., H, W)`` after removing each image's global phase offset."""
    diff = phase_hat_rad - phase_rad
    offset = torch.atan2(
        torch.sin(diff).sum(dim=(-2, -1), keepdim=True),
        torch.cos(diff).sum(dim=(-2, -1), keepdim=True),
    )
    return wrap(diff - offset)


def phase_psnr(phase_hat_rad: torch.Tensor, phase_rad: torch.Tensor, phi_max_rad: float = math.pi) -> torch.Tensor:
    """Per-image phase PSNR in dB, shape ``(...)``; capped at 200 dB for exact recoveries."""
    mse = phase_error(phase_hat_rad, phase_rad).square().mean(dim=(-2, -1))
    return 10 * torch.log10(phi_max_rad**2 / mse.clamp_min(phi_max_rad**2 * 1e-20))


def phase_mae(phase_hat_rad: torch.Tensor, phase_rad: torch.Tensor) -> torch.Tensor:
    """Per-image mean absolute phase error in radians."""
    return phase_error(phase_hat_rad, phase_rad).abs().mean(dim=(-2, -1))


def phase_ssim(phase_hat_rad: torch.Tensor, phase_rad: torch.Tensor, phi_max_rad: float = math.pi) -> np.ndarray:
    """Per-image SSIM (scikit-image) of the offset-corrected estimate, shape ``(B,)``."""
    err = phase_error(phase_hat_rad, phase_rad).detach().cpu().double().reshape(-1, *phase_rad.shape[-2:])
    ref = phase_rad.detach().cpu().double().reshape(-1, *phase_rad.shape[-2:])
    est = ref + err
    return np.array(
        [structural_similarity(e.numpy(), r.numpy(), data_range=phi_max_rad) for e, r in zip(est, ref, strict=True)]
    )


def summarise(phase_hat_rad: torch.Tensor, phase_rad: torch.Tensor, phi_max_rad: float = math.pi) -> dict[str, float]:
    """Mean PSNR (dB), its 95 % half-width, SSIM and MAE (rad) over a batch."""
    psnr = phase_psnr(phase_hat_rad, phase_rad, phi_max_rad).detach().cpu().double()
    half = 1.96 * float(psnr.std(unbiased=True)) / math.sqrt(psnr.numel()) if psnr.numel() > 1 else 0.0
    return {
        "psnr_db": float(psnr.mean()),
        "psnr_ci95_db": half,
        "ssim": float(phase_ssim(phase_hat_rad, phase_rad, phi_max_rad).mean()),
        "mae_rad": float(phase_mae(phase_hat_rad, phase_rad).mean()),
    }
