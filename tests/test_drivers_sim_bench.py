"""The simulated bench: ideal twin = shared forward model; each imperfection changes frames as expected."""

import time

import numpy as np
import pytest
import torch
from conftest_devices import random_mask, small_system, twin

from hil.physics.slm import SLMModel

NOISELESS = {"sensor": {"photons_per_pixel": None}}


def _model_frame(system, realised_rad, sample_rad):
    """CDPOperator.A for the realised SLM phase and the sample (float64)."""
    masks = torch.polar(torch.ones(realised_rad.shape, dtype=torch.float64), torch.from_numpy(realised_rad))
    x = torch.polar(torch.ones(sample_rad.shape, dtype=torch.float64), torch.from_numpy(sample_rad))
    return system.geometry().operator(masks[None]).A(x[None])[0, 0].numpy()


FREE_SPACE = {"wavelength_um": 0.633, "pitch_um": 8.0, "distance_um": 2e4}


@pytest.mark.parametrize(
    ("macro_pixel", "optics", "binning"),
    [
        (1, {}, 1),
        (2, {}, 1),
        (2, {}, 2),
        (1, {"propagator": "asm", **FREE_SPACE}, 1),
        (2, {"propagator": "fresnel", **FREE_SPACE}, 1),
        (1, {"propagator": "asm", **FREE_SPACE}, 2),
    ],
    ids=["fraunhofer", "fraunhofer-k2", "fraunhofer-k2-bin2", "asm", "fresnel-k2", "asm-bin2"],
)
def test_ideal_bench_reproduces_the_shared_forward_model(macro_pixel, optics, binning):
    """With imperfections off the bench's frames are CDPOperator.A, for every propagator and binning."""
    n = 16
    system = small_system(n, macro_pixel, optics, binning=binning)
    slm, cam, controller = twin(n, macro_pixel, sample="phase_screen", camera=NOISELESS, system=system)
    mask = random_mask(n)
    controller.show(mask)
    frame = cam.get_image()
    expected = _model_frame(system, controller.realised_phase(), slm.sample_rad)
    assert frame.shape == expected.shape == system.geometry().camera_shape
    np.testing.assert_allclose(frame, expected, rtol=0, atol=2e-6 * expected.max())
    np.testing.assert_allclose(cam.render(), frame, rtol=1e-12)
    # the read-back phase is the shared SLM model's quantisation of the mask
    modelled = SLMModel(system.slm)(torch.from_numpy(mask)).numpy()
    wrapped = np.angle(np.exp(1j * (modelled - controller.realised_phase())))
    assert np.abs(wrapped).max() < 1e-5
    # and through the SLM model's masks end to end
    np.testing.assert_allclose(_model_frame(system, modelled, slm.sample_rad), frame, atol=2e-5 * frame.max())


def test_photon_scale_and_exposure():
    slm, cam, controller = twin(camera={"shot_noise": False, "reference_exposure_s": 0.01})
    controller.show(random_mask(16))
    assert cam.get_image().mean() == pytest.approx(50.0, rel=1e-12)  # system.yaml: 50 photons/pixel, k = 1
    cam.set_exposure(0.02)
    assert cam.get_image().mean() == pytest.approx(100.0, rel=1e-12)


def test_deterministic_for_a_seed():
    camera = {"sensor": {"read_noise_e": 2.0}}
    frames = []
    for seed in (3, 3, 4):
        slm, cam, controller = twin(seed=seed, sample="cells", camera=camera)
        controller.show(random_mask(16))
        frames.append(np.stack([cam.get_image() for _ in range(2)]))
    np.testing.assert_array_equal(frames[0], frames[1])
    assert not np.array_equal(frames[0], frames[2])
    assert not np.array_equal(frames[0][0], frames[0][1])  # fresh noise per frame


def test_shot_noise_variance_is_proportional_to_the_mean():
    slm, cam, controller = twin(camera={"sensor": {"photons_per_pixel": 200.0}})
    controller.show(random_mask(16))
    stack = np.stack([cam.get_image() for _ in range(200)])
    mean, var = stack.mean(axis=0).ravel(), stack.var(axis=0, ddof=1).ravel()
    slope = float(np.sum(mean * var) / np.sum(mean * mean))  # var = slope * mean through the origin
    assert 0.9 < slope < 1.1
    assert np.corrcoef(mean, var)[0, 1] > 0.9
    slm, quiet, controller = twin(camera={"shot_noise": False, "sensor": {"photons_per_pixel": 200.0}})
    controller.show(random_mask(16))
    assert np.array_equal(quiet.get_image(), quiet.get_image())


def test_read_noise_adds_constant_variance():
    slm, cam, controller = twin(camera={"shot_noise": False, "sensor": {"read_noise_e": 3.0}})
    controller.show(random_mask(16))
    stack = np.stack([cam.get_image() for _ in range(200)])
    assert stack.var(axis=0, ddof=1).mean() == pytest.approx(9.0, rel=0.05)


def test_adc_quantises_and_saturates():
    slm, cam, controller = twin(camera={"sensor": {"adc_bits": 8, "photons_per_pixel": 100.0}})
    frame = cam.get_image()  # blank SLM: all light in the zero order, far above 255
    assert frame.dtype == np.uint8 and frame.max() == 255


def _central_fraction(frame: np.ndarray, radius: int = 4) -> float:
    h, w = frame.shape
    yy, xx = np.mgrid[:h, :w]
    near = (yy - h // 2) ** 2 + (xx - w // 2) ** 2 <= radius**2
    return float(frame[near].sum() / frame.sum())


def _frame(mask=None, **settings):
    slm, cam, controller = twin(camera=NOISELESS, **settings)
    controller.show(random_mask(16) if mask is None else mask)
    return cam.render()


def test_crosstalk_smooths_the_mask_and_narrows_the_pattern():
    ideal, blurred = _frame(), _frame(crosstalk_sigma_px=1.0)
    assert blurred.sum() == pytest.approx(ideal.sum(), rel=1e-9)  # k = 1: all light stays in the window
    assert _central_fraction(blurred) > _central_fraction(ideal) + 0.05


def test_reduced_phase_range_leaves_an_unmodulated_zero_order():
    ideal, reduced = _frame(), _frame(phase_range_rad=np.pi)
    centre = (16, 16)
    assert reduced[centre] > 10 * ideal[centre]


def test_non_uniform_illumination_removes_power_by_the_beam_profile():
    ideal, gaussian = _frame(), _frame(illumination_waist_rel=0.5)
    slm, _, _ = twin(illumination_waist_rel=0.5)
    beam_power = float((np.asarray(slm.source["amplitude_sim"]) ** 2).sum())
    assert gaussian.sum() / ideal.sum() == pytest.approx(beam_power / 16**2, rel=1e-9)
    assert gaussian.sum() < 0.5 * ideal.sum()


def test_static_aberration_lowers_the_focal_peak():
    flat = np.zeros((16, 16))
    ideal, aberrated = _frame(flat), _frame(flat, aberration_rad=(1.0, 0.0, 0.5))
    assert ideal[16, 16] == pytest.approx(16**4 / 32**2) == ideal.max()  # |sum of the aperture|^2 / grid size
    assert aberrated.sum() == pytest.approx(ideal.sum(), rel=1e-9)
    assert aberrated[16, 16] < 0.5 * ideal[16, 16]


def test_sample_changes_the_frame_and_can_be_replaced():
    with_sample = _frame(sample="resolution_target")
    slm, cam, controller = twin(camera=NOISELESS, sample="resolution_target")
    assert slm.sample_rad.max() == pytest.approx(np.pi)
    controller.show(random_mask(16))
    slm.set_sample(np.zeros((16, 16)))
    np.testing.assert_allclose(cam.render(), _frame(), rtol=1e-12)
    assert not np.allclose(with_sample, _frame())


def test_settle_time_blends_old_and_new_patterns():
    settle_s = 0.3
    slm, cam, controller = twin(camera=NOISELESS, settle_time_s=settle_s)
    old, new = random_mask(16, seed=1), random_mask(16, seed=2)
    controller.show(old)
    time.sleep(settle_s)
    settled_old = cam.render()
    controller.show(new)
    early = cam.render()
    time.sleep(settle_s)
    settled_new = cam.render()
    assert np.abs(early - settled_old).sum() < np.abs(early - settled_new).sum()
    np.testing.assert_allclose(settled_new, _frame(new), rtol=1e-12)
    assert slm.settle_time_s == settle_s  # what slmsuite's set_phase(settle=True) waits
