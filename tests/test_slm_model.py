"""SLM model: slmsuite's gray-level convention, straight-through gradients, macro-pixels, crosstalk."""

import logging
import math

import numpy as np
import pytest
import torch

from hil.physics.slm import SLMModel, SLMSpec

logging.getLogger("slmsuite").setLevel(logging.ERROR)


def _slmsuite_slm(bitdepth: int, phase_range_rad: float, gamma):
    from slmsuite.hardware.slms.simulated import SimulatedSLM

    slm = SimulatedSLM(
        (32, 24), bitdepth=bitdepth, pitch_um=8, wav_um=1.0, wav_design_um=phase_range_rad / (2 * math.pi)
    )
    if gamma:
        slm.set_gamma(np.array(gamma))
    return slm


@pytest.mark.parametrize("bitdepth", [8, 4])
@pytest.mark.parametrize("phase_range_rad", [2 * math.pi, 1.6 * math.pi, 2.4 * math.pi])
@pytest.mark.parametrize("measured_lut", [False, True])
def test_gray_levels_match_slmsuite(bitdepth, phase_range_rad, measured_lut):
    gamma = tuple(np.linspace(0, 0.93, 2**bitdepth) ** 1.3) if measured_lut else ()
    slm = _slmsuite_slm(bitdepth, phase_range_rad, gamma)
    model = SLMModel(SLMSpec(bitdepth=bitdepth, phase_range_rad=phase_range_rad, gamma=gamma))
    phase = np.random.default_rng(0).uniform(-7, 13, slm.shape)  # slmsuite shape is (height, width)
    gray_ref = slm._phase2gray(phase.copy())
    gray = model.phase_to_gray(torch.from_numpy(phase)).numpy()
    np.testing.assert_array_equal(gray, gray_ref)
    np.testing.assert_allclose(
        model.gray_to_phase(torch.from_numpy(gray.astype(np.int64))).numpy(), slm._gray2phase(gray_ref), atol=1e-6
    )


def test_round_trip_error_is_half_a_level():
    model = SLMModel(SLMSpec(bitdepth=6))
    phase = torch.rand(10_000, dtype=torch.float64) * 2 * math.pi
    realised = model.gray_to_phase(model.phase_to_gray(phase))
    err = torch.remainder(realised - phase + math.pi, 2 * math.pi) - math.pi
    assert err.abs().max() <= math.pi / 64 + 1e-12  # half of one 2π/64 step
    assert err.abs().max() > 0.9 * math.pi / 64


def test_straight_through_gradient_and_macro_pixels():
    model = SLMModel(SLMSpec(bitdepth=3, macro_pixel=2))
    theta = (torch.rand((1, 4, 4), dtype=torch.float64) * 2 * math.pi).requires_grad_()
    realised = model(theta)
    assert realised.shape == (1, 8, 8)
    levels = model.level_phase
    wrapped = torch.remainder(realised.detach(), 2 * math.pi)[..., None]  # the retardance, modulo 2π
    assert (torch.isclose(wrapped, levels) | torch.isclose(wrapped, levels + 2 * math.pi)).any(-1).all()  # 8 phases
    torch.testing.assert_close(realised[0, ::2, ::2], realised[0, 1::2, 1::2])
    (realised * torch.arange(64, dtype=torch.float64).view(1, 8, 8)).sum().backward()
    expected = torch.arange(64, dtype=torch.float64).view(4, 2, 4, 2).sum(dim=(1, 3))
    torch.testing.assert_close(theta.grad[0], expected)


def test_crosstalk_blurs_the_retardance_not_the_wrapped_phase():
    """A measured response starting at 0: gray levels 0 and 40 are 0.65 rad apart in retardance but about 2π - 0.65
    apart as wrapped phases. Blurring across them must give a phase between the two, not a half-wave error."""
    gamma = tuple(0.88 * (np.arange(256) / 256) ** 1.15)
    model = SLMModel(SLMSpec(bitdepth=8, gamma=gamma, crosstalk_sigma_px=1.0))
    low, high = float(model.level_phase[0]), float(model.level_phase[40])  # wrapped: 0 and about 5.6 rad
    theta = torch.full((1, 16, 16), low, dtype=torch.float64)
    theta[..., 8:] = high
    edge = torch.remainder(model(theta)[0, 0, 7:9] + math.pi, 2 * math.pi) - math.pi  # in (-π, π]
    assert high > 5 and torch.all(edge < 0.01) and torch.all(edge > high - 2 * math.pi - 0.01)


def test_crosstalk_smooths_edges_and_keeps_flat_regions():
    sharp = SLMModel(SLMSpec(bitdepth=8))
    blurred = SLMModel(SLMSpec(bitdepth=8, crosstalk_sigma_px=1.0))
    theta = torch.zeros((1, 16, 16), dtype=torch.float64)
    theta[..., 8:] = 2.0
    a, b = sharp(theta), blurred(theta)
    same = torch.remainder(a - b + math.pi, 2 * math.pi) - math.pi  # the blurred model is in retardance units
    assert torch.allclose(same[..., :, :4], torch.zeros(1, dtype=torch.float64))
    assert torch.allclose(same[..., :, 12:], torch.zeros(1, dtype=torch.float64))
    a = blurred.level_retardance[blurred.phase_to_gray(theta)]
    jump_sharp = (a[..., 8] - a[..., 7]).abs().max()
    jump_blurred = (b[..., 8] - b[..., 7]).abs().max()
    assert jump_blurred < 0.5 * jump_sharp


def test_spec_validation_names_the_field():
    with pytest.raises(ValueError, match="SLMSpec.gamma must have 256 entries"):
        SLMSpec(gamma=(0.0, 0.5))
    with pytest.raises(ValueError, match="SLMSpec.bitdepth"):
        SLMSpec(bitdepth=0)
