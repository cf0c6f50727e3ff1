"""Camera model: noise statistics, ADC, saturation, binning, SNR definitions."""

import math

import pytest
import torch

from hil.physics.camera import (
    CameraModel,
    CameraSpec,
    bin_pixels,
    expected_snr_db,
    photons_for_snr_db,
    scale_to_photons,
    snr_db,
)
from hil.physics.optics import CDPGeometry, phase_to_field
from hil.physics.simulate import measure


def test_poisson_and_read_noise_statistics():
    y = torch.full((1, 1, 200, 200), 3.0, dtype=torch.float64)
    spec = CameraSpec(photons_per_pixel=40.0, read_noise_e=3.0, gain_adu_per_e=2.0, dark_offset_adu=100.0)
    cam = CameraModel(spec)
    frames = cam.expose(y, torch.Generator().manual_seed(0))
    assert frames.mean().item() == pytest.approx(2 * 40 + 100, rel=0.01)
    assert frames.var().item() == pytest.approx(4 * (40 + 9), rel=0.03)  # gain² (Poisson + read²)
    photons = cam.to_photons(frames)
    assert photons.mean().item() == pytest.approx(40, rel=0.01)


def test_surrogate_matches_variance_and_passes_gradients():
    y = torch.full((1, 1, 200, 200), 1.0, dtype=torch.float64, requires_grad=True)
    cam = CameraModel(CameraSpec(photons_per_pixel=20.0, read_noise_e=2.0))
    noisy = cam.surrogate(y, torch.Generator().manual_seed(1))
    assert noisy.mean().item() == pytest.approx(20, rel=0.01)
    assert noisy.var().item() == pytest.approx(24, rel=0.03)
    noisy.sum().backward()
    assert y.grad is not None and torch.isfinite(y.grad).all()


def test_adc_saturation_full_well_and_binning():
    y = torch.tensor([[[[1.0, 1.0], [1.0, 1000.0]]]], dtype=torch.float64)
    cam = CameraModel(CameraSpec(photons_per_pixel=1000.0, full_well_e=2000.0, adc_bits=10, gain_adu_per_e=1.0))
    frame = cam.expose(y, torch.Generator().manual_seed(0))
    assert frame.max().item() == 1023  # clipped at the ADC ceiling
    assert (frame == 1023).sum().item() == 1  # only the bright pixel saturates
    assert bin_pixels(torch.ones(1, 4, 6), 2).tolist() == [[[4.0, 4.0, 4.0], [4.0, 4.0, 4.0]]]
    with pytest.raises(ValueError, match="not divisible by binning 4"):
        bin_pixels(torch.ones(1, 4, 6), 4)


@pytest.mark.parametrize(("photons", "expected_db"), [(5.0, 10.0), (50.0, 20.0), (500.0, 30.0)])
def test_photons_to_snr_on_cdps(photons, expected_db):
    """5 / 50 / 500 photons per pixel give about 10 / 20 / 30 dB on speckle-like CDPs."""
    g = torch.Generator().manual_seed(2)
    op = CDPGeometry(64).operator(torch.rand((1, 64, 64), generator=g, dtype=torch.float64) * 2 * math.pi)
    clean = op.A(phase_to_field(torch.rand((4, 64, 64), generator=g, dtype=torch.float64) * math.pi))
    cam = CameraModel(CameraSpec(photons_per_pixel=photons))
    mean_photons = scale_to_photons(clean, photons)
    measured = snr_db(mean_photons, cam.expose(clean, g))
    assert measured == pytest.approx(expected_db, abs=1.0)
    assert expected_snr_db(mean_photons) == pytest.approx(measured, abs=0.1)
    assert photons_for_snr_db(clean, measured) == pytest.approx(photons, rel=0.03)


def test_spec_validation_names_the_field():
    with pytest.raises(ValueError, match="CameraSpec.quantum_efficiency"):
        CameraSpec(quantum_efficiency=1.5)


def test_surrogate_uses_given_noise_and_checks_its_shape():
    y = torch.full((2, 1, 4, 4), 1.0, dtype=torch.float64)
    cam = CameraModel(CameraSpec(photons_per_pixel=9.0))
    noise = torch.ones_like(y)
    torch.testing.assert_close(cam.surrogate(y, noise=noise), torch.full_like(y, 12.0))  # 9 + sqrt(9) * 1
    with pytest.raises(ValueError, match=r"noise must have the intensities' shape \(2, 1, 4, 4\)"):
        cam.surrogate(y, noise=noise[:1])


def test_binned_measurements_live_on_the_operators_camera_grid():
    """measure() with camera binning gives CDPs of the operator's camera_shape, equal to op.A when noiseless."""

    op = CDPGeometry(16, binning=2).operator(torch.rand((1, 16, 16), generator=torch.Generator().manual_seed(0)))
    phase = torch.rand((2, 16, 16), generator=torch.Generator().manual_seed(1))
    y = measure(op, phase, CameraModel(CameraSpec(binning=2, photons_per_pixel=None)))
    assert y.shape == (2, 1, *op.geometry.camera_shape) == (2, 1, 16, 16)
    torch.testing.assert_close(y, op.normalise_intensities(op.A(phase_to_field(phase))))
