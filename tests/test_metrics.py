"""Phase metrics ignore the global phase and give known values."""

import math

import pytest
import torch

from hil.common.metrics import phase_mae, phase_psnr, phase_ssim, summarise


def test_global_offset_and_wrap_are_ignored():
    phase = torch.rand((2, 32, 32), dtype=torch.float64) * math.pi
    shifted = torch.remainder(phase + 2.5, 2 * math.pi) - 2 * math.pi
    assert (phase_psnr(shifted, phase) > 150).all()
    assert torch.allclose(phase_mae(shifted, phase), torch.zeros(2, dtype=torch.float64), atol=1e-9)
    assert phase_ssim(shifted, phase) == pytest.approx([1.0, 1.0])


def test_known_psnr_value():
    phase = torch.zeros((1, 16, 16), dtype=torch.float64)
    estimate = phase.clone()
    estimate[..., ::2, :] = 0.1
    estimate[..., 1::2, :] = -0.1  # zero circular mean: the offset stays 0, error ±0.1 rad
    expected = 10 * math.log10(math.pi**2 / 0.01)
    assert phase_psnr(estimate, phase).item() == pytest.approx(expected, abs=1e-6)
    summary = summarise(estimate.expand(4, 16, 16), phase.expand(4, 16, 16))
    assert summary["mae_rad"] == pytest.approx(0.1)
    assert summary["psnr_ci95_db"] == 0.0
