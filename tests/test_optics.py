"""The CDP operator: adjoint, Parseval, free-space propagation, the single-snapshot twin."""

import math

import pytest
import torch

from hil.physics.optics import AngularSpectrumPropagator, CDPGeometry, phase_to_field


def _rand_complex(shape, generator, dtype=torch.float64):
    return torch.complex(
        torch.randn(shape, generator=generator, dtype=dtype), torch.randn(shape, generator=generator, dtype=dtype)
    )


@pytest.mark.parametrize(
    "geometry",
    [
        CDPGeometry(16),
        CDPGeometry(16, pad_factor=3),
        CDPGeometry(8, macro_pixel=3),
        CDPGeometry(16, propagator="asm", wavelength_um=0.633, pitch_um=8.0, distance_um=2e4),
        CDPGeometry(16, propagator="fresnel", wavelength_um=0.633, pitch_um=8.0, distance_um=2e4),
    ],
    ids=["fraunhofer", "pad3", "macro3", "asm", "fresnel"],
)
def test_adjoint_identity(geometry):
    g = torch.Generator().manual_seed(0)
    masks = torch.rand((3, *geometry.slm_shape), generator=g, dtype=torch.float64) * 2 * math.pi
    op = geometry.operator(masks)
    x = _rand_complex((2, geometry.n, geometry.n), g)
    z = _rand_complex((2, 3, *geometry.detector_shape), g)
    lhs = torch.vdot(op.A_linear(x).flatten(), z.flatten())
    rhs = torch.vdot(x.flatten(), op.A_linear_adjoint(z).flatten())
    assert abs(lhs - rhs) / abs(lhs) < 1e-12


def test_parseval_and_gram_diagonal():
    g = torch.Generator().manual_seed(1)
    geometry = CDPGeometry(32)
    op = geometry.operator(torch.rand((4, 32, 32), generator=g, dtype=torch.float64) * 2 * math.pi)
    x = _rand_complex((3, 32, 32), g)
    energy_in = x.abs().square().sum(dim=(-2, -1))
    energy_out = op.A(x).sum(dim=(1, 2, 3))
    torch.testing.assert_close(energy_out, 4 * energy_in, rtol=1e-12, atol=0)
    torch.testing.assert_close(op.gram_diagonal(), torch.full((32, 32), 4.0, dtype=torch.float64))
    torch.testing.assert_close(op.pseudo_inverse(op.A_linear(x)), x, rtol=1e-12, atol=1e-12)


def test_float32_and_shapes_and_bad_input():
    geometry = CDPGeometry(16, macro_pixel=2)
    op = geometry.operator(torch.zeros((2, 32, 32)))
    y = op.A(torch.ones((5, 16, 16)))
    assert y.shape == (5, 2, 32, 32) and y.dtype == torch.float32
    with pytest.raises(ValueError, match=r"masks must have shape \(L, 32, 32\)"):
        geometry.operator(torch.zeros((2, 16, 16)))
    with pytest.raises(ValueError, match=r"objects must have shape \(B, 16, 16\)"):
        op.A(torch.ones((5, 15, 16)))


def test_macro_pixel_envelope_matches_point_samples():
    """k x k macro-pixels multiply the detector window by the per-axis Dirichlet envelope."""
    n, k = 8, 2
    g = torch.Generator().manual_seed(2)
    x = phase_to_field(torch.rand((1, n, n), generator=g, dtype=torch.float64))
    theta = torch.rand((n, n), generator=g, dtype=torch.float64) * 2 * math.pi
    fine = CDPGeometry(n, macro_pixel=k).operator(theta.repeat_interleave(k, 0).repeat_interleave(k, 1)[None])
    coarse = CDPGeometry(n).operator(theta[None])
    side = 2 * n * k
    f = torch.arange(-n, n, dtype=torch.float64)
    env = (torch.exp(-2j * math.pi * f[:, None] * torch.arange(k) / side).sum(1).abs() ** 2) / k
    expected = coarse.A(x) * env[:, None] * env[None, :]
    torch.testing.assert_close(fine.A(x), expected, rtol=1e-10, atol=1e-12)


def test_angular_spectrum_gaussian_beam_matches_closed_form():
    """A Gaussian waist propagated one Rayleigh range: amplitude, curvature and Gouy phase."""
    wavelength_um, pitch_um, size, w0_um = 0.633, 2.0, 512, 40.0
    z_r = math.pi * w0_um**2 / wavelength_um
    coords = (torch.arange(size, dtype=torch.float64) - size // 2) * pitch_um
    r2 = coords[:, None] ** 2 + coords[None, :] ** 2
    u0 = torch.exp(-r2 / w0_um**2).to(torch.complex128)
    k = 2 * math.pi / wavelength_um
    for paraxial in (False, True):
        prop = AngularSpectrumPropagator(wavelength_um, pitch_um, z_r, paraxial=paraxial)
        u = prop.forward(u0)
        w = w0_um * math.sqrt(2)
        curvature_um = 2 * z_r
        gouy = math.atan(1.0)
        expected = (w0_um / w) * torch.exp(-r2 / w**2) * torch.exp(1j * (k * z_r + k * r2 / (2 * curvature_um) - gouy))
        inside = r2 < (2 * w) ** 2
        err = (u - expected).abs()[inside].max() / expected.abs().max()
        assert err < 2e-3, (paraxial, float(err))


def test_single_snapshot_twin_gives_identical_intensities():
    """x'(n) = conj(mu(N-1-n) x(N-1-n)) / mu(n) has the same CDP as x for one mask mu."""
    n = 32
    g = torch.Generator().manual_seed(3)
    mu = phase_to_field(torch.rand((n, n), generator=g, dtype=torch.float64) * 2 * math.pi)
    x = phase_to_field(torch.rand((1, n, n), generator=g, dtype=torch.float64) * math.pi)
    twin = torch.conj(torch.flip(mu * x, dims=(-2, -1))) / mu
    op = CDPGeometry(n).operator(mu[None])
    torch.testing.assert_close(op.A(twin), op.A(x), rtol=1e-10, atol=1e-10)
    assert (twin - x).abs().max() > 0.5  # a genuinely different object


def test_operators_of_one_geometry_share_the_transfer_function():
    """Training builds an operator per step; the free-space transfer function is computed once."""
    geometry = CDPGeometry(16, propagator="asm", wavelength_um=0.633, pitch_um=8.0, distance_um=2e4)
    first, second = geometry.operator(torch.zeros(1, 16, 16)), geometry.operator(torch.ones(1, 16, 16))
    first.A(torch.ones(1, 16, 16))
    second.A(torch.ones(1, 16, 16))
    assert first.propagator is second.propagator and len(first.propagator._cache) == 1
