"""Distillation losses: reconstruction (global-phase-insensitive), coded-phase-mask (CPM), features.

CPM comparison of one student mask with L teacher masks (``cpm_mode``):

* ``informative``: pointwise match to the teacher mask that carries most of the teacher's
  information, chosen by a real criterion: the drop of the teacher's validation PSNR when that
  mask's snapshot is left out (:func:`leave_one_out_importance`). The distance
  ``1 - |<μ_s, μ_t>| / N`` ignores the global phase of the masks (which no intensity sees).
* ``gram``: match the masks' second-order statistics: the local autocorrelation of the
  transmittance at lags up to ``GRAM_LAG_PX`` (the Gram matrix of its ``(2R+1)²`` neighbourhood
  vectors, Toeplitz, so these lags hold all of it) against the mean over the teacher masks.
  It transfers how rough/smooth the teacher made its masks (which sets how widely a CDP spreads
  the object's spectrum) without asking the student to copy any one mask.
* ``none``: no CPM term.
* ``auto``: chosen from what the teacher's masks carry (:func:`choose_cpm_mode`): ``gram`` when
  their autocorrelation departs from an i.i.d. random mask's, else ``informative`` when one mask
  matters more than the others, else ``none``.

Feature taps are paired by name (:func:`hil.learning.decoders.feature_pairs`): stage ``k`` of the
student with stage ``k`` of the teacher (both counted from the same classical warm start) and the
output estimates ``est`` with each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from hil.common.metrics import phase_error, phase_psnr
from hil.learning.decoders import feature_pairs

CPMMode = Literal["informative", "gram", "none", "auto"]
GRAM_LAG_PX = 2
STRUCTURE_MIN = 4.0  # autocorrelation power (units of a random mask's) above which masks carry structure
IMPORTANCE_SPREAD_MIN_DB = 0.5  # PSNR-drop lead of the most important mask for a pointwise target
RECON_FLOOR = 1e-10  # 100 dB


@dataclass(frozen=True)
class DistillConfig:
    """Distillation settings of a student run (a student without a teacher leaves ``teacher`` empty).

    Attributes:
        teacher: path of the teacher's bundle ('' = no teacher: plain end-to-end training).
        recon_weight, cpm_weight, feature_weight: loss weights.
        cpm_mode: one-vs-L mask comparison (see module docstring).
    """

    teacher: str = ""
    recon_weight: float = 1.0
    cpm_weight: float = 0.05
    feature_weight: float = 0.05
    cpm_mode: CPMMode = "informative"

    def __post_init__(self) -> None:
        if min(self.recon_weight, self.cpm_weight, self.feature_weight) < 0:
            raise ValueError(f"distillation weights must be >= 0: {self}")


def reconstruction_loss(
    x_hat: torch.Tensor, phase_rad: torch.Tensor, amplitude: torch.Tensor | None = None
) -> torch.Tensor:
    """``mean_i log10(mse_i)``: the per-image mean squared wrapped phase error after removing each image's
    global phase, in units of π² (plus the amplitude MSE for complex objects), on a log scale, i.e.
    minus the mean phase PSNR over 10. The log gives every image the same weight in dB, so the
    low-photon images of a batch do not drown the others; floored at 100 dB."""
    mse = phase_error(torch.angle(x_hat), phase_rad).square().mean(dim=(-2, -1)) / torch.pi**2
    if amplitude is not None:
        mse = mse + (x_hat.abs() - amplitude).square().mean(dim=(-2, -1))
    return torch.log10(mse + RECON_FLOOR).mean()


def mask_overlap_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """``1 - |mean(conj(μ_s) μ_t)|`` for unit-modulus masks (same shape): 0 iff equal up to a global phase."""
    return 1 - (student.conj() * teacher).mean(dim=(-2, -1)).abs().mean()


def mask_autocorrelation(masks: torch.Tensor, lag_px: int = GRAM_LAG_PX) -> torch.Tensor:
    """Normalised autocorrelation ``mean_n μ(n+d) conj(μ(n))`` at lags ``|d| <= lag_px``: ``(L, 2R+1, 2R+1)``."""
    h, w = masks.shape[-2:]
    r = lag_px
    core = masks[..., r : h - r, r : w - r]
    rows = []
    for dy in range(-r, r + 1):
        row = []
        for dx in range(-r, r + 1):
            shifted = masks[..., r + dy : h - r + dy, r + dx : w - r + dx]
            row.append((shifted * core.conj()).mean(dim=(-2, -1)))
        rows.append(torch.stack(row, dim=-1))
    return torch.stack(rows, dim=-2)


def gram_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean squared distance between the student's mask autocorrelation and the teacher masks' mean one,
    in units of an i.i.d. random mask's fluctuation (its autocorrelation at a nonzero lag has variance
    1 / pixels), so the term is O(1) whatever the mask size."""
    target = mask_autocorrelation(teacher).mean(dim=0)
    pixels = (student.shape[-2] - 2 * GRAM_LAG_PX) * (student.shape[-1] - 2 * GRAM_LAG_PX)
    return (mask_autocorrelation(student).mean(dim=0) - target).abs().square().mean() * pixels


def mask_structure(masks: torch.Tensor) -> float:
    """Mean power of the masks' autocorrelation at nonzero lags ``|d| <= GRAM_LAG_PX`` in units of an
    i.i.d. random mask's (about 1 for random masks, >> 1 for smooth or periodic ones)."""
    corr = mask_autocorrelation(masks)
    centre = GRAM_LAG_PX
    off = torch.ones(corr.shape[-2:], dtype=torch.bool)
    off[centre, centre] = False
    pixels = (masks.shape[-2] - 2 * GRAM_LAG_PX) * (masks.shape[-1] - 2 * GRAM_LAG_PX)
    return float(corr[..., off].abs().square().mean() * pixels)


def choose_cpm_mode(teacher_masks: torch.Tensor, importance_db: torch.Tensor) -> tuple[CPMMode, dict[str, float]]:
    """The CPM mode the teacher's realised masks ``(L, H, W)`` support, with the statistics behind it."""
    structure = mask_structure(teacher_masks)
    ranked = torch.sort(importance_db, descending=True).values
    spread = float(ranked[0] - ranked[1]) if ranked.numel() > 1 else 0.0
    stats = {"mask_structure": structure, "importance_spread_db": spread}
    if structure > STRUCTURE_MIN:
        return "gram", stats
    return ("informative" if spread > IMPORTANCE_SPREAD_MIN_DB else "none"), stats


def cpm_loss(student: torch.Tensor, teacher: torch.Tensor, mode: CPMMode, teacher_index: int) -> torch.Tensor:
    """CPM loss between the student's realised mask ``(1, H, W)`` and the teacher's ``(L, H, W)``."""
    if mode == "informative":
        return mask_overlap_loss(student[0], teacher[teacher_index])
    if mode == "gram":
        return gram_loss(student, teacher)
    return student.real.new_zeros(())


class FeatureAdapters(nn.Module):
    """1x1 convolutions mapping student taps to the teacher's widths (identity where widths agree)."""

    def __init__(self, pairs: list[tuple[str, str]], student_width: dict[str, int], teacher_width: dict[str, int]):
        super().__init__()
        self.pairs = pairs
        self.adapters = nn.ModuleDict()
        for s, t in pairs:
            if student_width[s] != teacher_width[t]:
                self.adapters[s] = nn.Conv2d(student_width[s], teacher_width[t], 1)

    def forward(self, student: dict[str, torch.Tensor], teacher: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean over the tap pairs of ``||adapt(f_s) - f_t||² / ||f_t||²`` (teacher features are targets)."""
        losses = []
        for s, t in self.pairs:
            fs = self.adapters[s](student[s]) if s in self.adapters else student[s]
            ft = teacher[t].detach()
            losses.append((fs - ft).square().mean() / ft.square().mean().clamp_min(1e-12))
        return torch.stack(losses).mean()


def build_adapters(student: dict[str, torch.Tensor], teacher: dict[str, torch.Tensor]) -> FeatureAdapters:
    """Adapters for the taps two decoders produced on the same batch (paired by name)."""
    pairs = feature_pairs(list(student), list(teacher))
    return FeatureAdapters(
        pairs, {k: v.shape[1] for k, v in student.items()}, {k: v.shape[1] for k, v in teacher.items()}
    )


@torch.no_grad()
def leave_one_out_importance(
    teacher: nn.Module, y: torch.Tensor, photons_per_frame: torch.Tensor | None, phase_rad: torch.Tensor
) -> torch.Tensor:
    """PSNR drop (dB) of the teacher on CDPs ``y`` (B, L, Hd, Wd) of ``phase_rad`` when each mask's
    snapshot is left out, ``(L,)``: the criterion of the ``informative`` CPM mode."""
    full_op = teacher.operator()
    base = phase_psnr(teacher(full_op, y, photons_per_frame).phase_rad, phase_rad).mean()
    drops = []
    for l in range(teacher.n_masks):
        keep = [i for i in range(teacher.n_masks) if i != l]
        op = teacher.geometry.operator(full_op.masks[keep])
        y_keep = op.normalise_intensities(y[:, keep])
        drops.append(base - phase_psnr(teacher(op, y_keep, photons_per_frame).phase_rad, phase_rad).mean())
    return torch.stack(drops)
