"""The CDP operator: adjoint, Parseval, free-space propagation, the single-snapshot twin."""

import math

import numpy as np
import pytest
import torch

from hil.common.metrics import phase_psnr
from hil.physics.optics import AngularSpectrumPropagator, CDPGeometry, bin_pixels, macro_upsample, phase_to_field


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


@pytest.mark.parametrize(("k", "guard"), [(3, 0), (4, 7), (2, 6)])
def test_slm_grid_dft_as_matrix_products_equals_the_zero_padded_fft(k, guard):
    """``slm_dft @ u @ slm_dft.T`` is the detector field of the zero-padded SLM-grid FFT, guard band included."""
    n = 6
    geometry = CDPGeometry(n, macro_pixel=k, detector_guard=guard)
    u = _rand_complex((2, k * n, k * n), torch.Generator().manual_seed(k))
    dft = geometry.slm_dft
    torch.testing.assert_close(dft @ u @ dft.T, geometry.detector_field(geometry.embed(u)), rtol=1e-12, atol=1e-12)


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
    propagation = first.geometry.propagation
    assert propagation is second.geometry.propagation and len(propagation._cache) == 1


def _brute_force_cdp(x, mask_slm, n, k, pad, binning, guard=0, outside=None):
    """Explicit DFT sum over the SLM grid (no FFT, no shifts): the centred detector window (the band plus
    ``guard`` frequencies on each side), then binned. ``outside``: an SLM-grid field ``(k (n + 2m), k (n + 2m))``
    centred on the ROI, whose part beside the ROI is lit too."""
    side = pad * k * n
    u = np.zeros((side, side), dtype=complex)
    if outside is not None:
        wide = outside.shape[0]
        first = (side - wide) // 2
        u[first : first + wide, first : first + wide] = outside
    start = (side - k * n) // 2
    u[start : start + k * n, start : start + k * n] = np.kron(x, np.ones((k, k))) * mask_slm
    rows = np.arange(side) - side // 2  # centred coordinates of the padded grid
    freqs = np.arange(pad * n + 2 * guard) - (pad * n + 2 * guard) // 2  # the detector window's frequencies
    kernel = np.exp(-2j * np.pi * np.outer(freqs, rows) / side) / np.sqrt(side)  # unitary DFT rows
    far = kernel @ u @ kernel.T
    intensity = np.abs(far) ** 2
    h = intensity.shape[0] // binning
    return intensity.reshape(h, binning, h, binning).sum(axis=(1, 3))


@pytest.mark.parametrize(("k", "binning"), [(1, 1), (2, 1), (2, 2), (3, 2)])
def test_operator_matches_a_brute_force_dft(k, binning):
    """Macro-pixels, the detector window and binning against an explicit DFT sum written without the model."""
    n, pad = 6, 2
    rng = np.random.default_rng(k + 10 * binning)
    x = np.exp(1j * rng.uniform(0, np.pi, (n, n)))
    mask = np.exp(1j * rng.uniform(0, 2 * np.pi, (k * n, k * n)))
    op = CDPGeometry(n, pad_factor=pad, macro_pixel=k, binning=binning).operator(torch.from_numpy(mask)[None])
    y = op.A(torch.from_numpy(x)[None])[0, 0].numpy()
    np.testing.assert_allclose(y, _brute_force_cdp(x, mask, n, k, pad, binning), rtol=1e-10, atol=1e-12)


def test_binned_modulus_projection_is_the_nearest_consistent_field():
    """P_M with binning meets the binned data exactly and is closer to z than other consistent fields."""
    g = torch.Generator().manual_seed(5)
    op = CDPGeometry(8, binning=2).operator(torch.zeros((1, 8, 8), dtype=torch.float64))
    z = _rand_complex((1, 1, 16, 16), g)
    y = torch.rand((1, 1, 8, 8), generator=g, dtype=torch.float64) + 0.1
    projected = op.modulus_projection(z, y.sqrt())
    torch.testing.assert_close(bin_pixels(projected.abs().square(), 2), y, rtol=1e-12, atol=1e-12)
    best = (projected - z).abs().square().sum()
    for _ in range(20):  # other consistent fields: perturb, then rescale each camera pixel onto the data
        other = op.modulus_projection(z + 0.3 * _rand_complex(z.shape, g), y.sqrt())
        assert (other - z).abs().square().sum() >= best
    dark = op.modulus_projection(torch.zeros_like(z), y.sqrt())  # no field: an even share, phase 0
    torch.testing.assert_close(bin_pixels(dark.abs().square(), 2), y, rtol=1e-12, atol=1e-12)


def test_binning_must_divide_the_detector():
    with pytest.raises(ValueError, match="binning 3"):
        CDPGeometry(8, binning=3)
    assert CDPGeometry(8, binning=4).camera_shape == (4, 4)


@pytest.mark.parametrize(("k", "binning", "guard"), [(2, 1, 0), (4, 1, 0), (3, 2, 0), (3, 1, 5), (3, 2, 12), (4, 1, 7)])
def test_factorised_macro_pixels_match_a_brute_force_dft(k, binning, guard):
    """Block-constant masks take the envelope path (cost of k = 1) and still equal the explicit DFT sum, also
    with a guard band beyond the pad*n band (the neighbouring orders a larger camera sees)."""
    n, pad = 6, 2
    rng = np.random.default_rng(k)
    x = np.exp(1j * rng.uniform(0, np.pi, (n, n)))
    mask = np.kron(np.exp(1j * rng.uniform(0, 2 * np.pi, (n, n))), np.ones((k, k)))
    geometry = CDPGeometry(n, pad_factor=pad, macro_pixel=k, binning=binning, detector_guard=guard)
    op = geometry.operator(torch.from_numpy(mask)[None])
    assert op.factorised
    y = op.A(torch.from_numpy(x)[None])[0, 0].numpy()
    np.testing.assert_allclose(y, _brute_force_cdp(x, mask, n, k, pad, binning, guard), rtol=1e-10, atol=1e-12)
    g = torch.Generator().manual_seed(k)
    xs, z = _rand_complex((2, n, n), g), _rand_complex((2, 1, *geometry.detector_shape), g)
    lhs = torch.vdot(op.A_linear(xs).flatten(), z.flatten())
    rhs = torch.vdot(xs.flatten(), op.A_linear_adjoint(z).flatten())
    assert abs(lhs - rhs) / abs(lhs) < 1e-12
    torch.testing.assert_close(op.pseudo_inverse(op.A_linear(xs)), xs, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(("k", "guard", "margin"), [(4, 0, 1), (4, 5, 2), (3, 4, 1), (1, 0, 2)])
def test_light_outside_the_roi_is_an_offset_that_matches_a_brute_force_dft(k, guard, margin):
    """A field lit ``margin`` mask pixels beyond the ROI: the operator with ``outside_field`` as its offset equals
    the explicit DFT sum over the whole lit SLM region; the pseudo-inverse removes the offset exactly."""
    n, pad = 6, 2
    rng = np.random.default_rng(k + margin)
    x = np.exp(1j * rng.uniform(0, np.pi, (n, n)))
    side = n + 2 * margin
    field = rng.uniform(0.2, 1, (side, side)) * np.exp(1j * rng.uniform(0, 2 * np.pi, (side, side)))
    mask = np.kron(
        np.exp(1j * rng.uniform(0, 2 * np.pi, (n, n))) * field[margin:-margin, margin:-margin], np.ones((k, k))
    )
    geometry = CDPGeometry(n, pad_factor=pad, macro_pixel=k, detector_guard=guard)
    offset = geometry.outside_field(macro_upsample(torch.from_numpy(field), k))
    op = geometry.operator(torch.from_numpy(mask)[None], offset=offset)
    y = op.A(torch.from_numpy(x)[None])[0, 0].numpy()
    truth = _brute_force_cdp(x, mask, n, k, pad, 1, guard, outside=np.kron(field, np.ones((k, k))))
    np.testing.assert_allclose(y, truth, rtol=1e-10, atol=1e-12)
    assert np.abs(y - _brute_force_cdp(x, mask, n, k, pad, 1, guard)).max() > 0.1 * truth.max()  # the ring matters
    xs = _rand_complex((2, n, n), torch.Generator().manual_seed(k))
    torch.testing.assert_close(op.pseudo_inverse(op.A_linear(xs)), xs, rtol=1e-10, atol=1e-10)
    with pytest.raises(ValueError, match="outside field must be"):
        geometry.outside_field(torch.ones(k * n + 1, k * n + 1, dtype=torch.complex128))


@pytest.mark.parametrize("guard", [0, 5])
def test_crosstalk_ripple_inside_macro_pixels_matches_a_brute_force_dft(guard):
    """Masks that vary inside their k x k blocks (crosstalk) go through the SLM grid's DFT: A within -60 dB of
    the explicit DFT sum, the adjoint exact, the pseudo-inverse exact on the range to 1e-3."""
    from hil.physics.slm import SLMModel, SLMSpec

    n, k, pad = 6, 4, 2
    rng = np.random.default_rng(7)
    x = np.exp(1j * rng.uniform(0, np.pi, (n, n)))
    phases = torch.from_numpy(rng.uniform(0, 2 * np.pi, (1, n, n)))
    mask = SLMModel(SLMSpec(macro_pixel=k, crosstalk_sigma_px=0.6)).transmittance(phases)
    geometry = CDPGeometry(n, pad_factor=pad, macro_pixel=k, detector_guard=guard)
    op = geometry.operator(mask)
    assert op.factorised and op._ripple
    y = op.A(torch.from_numpy(x)[None])[0, 0].numpy()
    truth = _brute_force_cdp(x, mask[0].numpy(), n, k, pad, 1, guard)
    assert np.abs(y - truth).max() < 1e-3 * truth.max()
    g = torch.Generator().manual_seed(1)
    xs, z = _rand_complex((2, n, n), g), _rand_complex((2, 1, *geometry.detector_shape), g)
    lhs = torch.vdot(op.A_linear(xs).flatten(), z.flatten())
    rhs = torch.vdot(xs.flatten(), op.A_linear_adjoint(z).flatten())
    assert abs(lhs - rhs) / abs(lhs) < 1e-12
    assert float((op.pseudo_inverse(op.A_linear(xs)) - xs).abs().max()) < 1e-3


def test_raar_with_crosstalk_inside_macro_pixels():
    """0.6 px crosstalk at k = 4: the polyphase operator keeps noiseless single-snapshot RAAR above 60 dB."""
    from hil.physics.slm import SLMModel, SLMSpec
    from hil.solvers import solve

    n = 32
    g = torch.Generator().manual_seed(4)
    mask = torch.rand((1, n, n), generator=g, dtype=torch.float64) * 2 * math.pi
    phase = torch.rand((2, n, n), generator=g, dtype=torch.float64).mul(4).round().div(4) * math.pi
    op = CDPGeometry(n, macro_pixel=4).operator(
        SLMModel(SLMSpec(macro_pixel=4, crosstalk_sigma_px=0.6)).transmittance(mask)
    )
    y = op.normalise_intensities(50.0 * op.A(phase_to_field(phase)))
    assert phase_psnr(torch.angle(solve("raar", op, y, iterations=150)), phase).min() > 60


def test_guard_band_limits_and_normalisation():
    """The guard is Fraunhofer-only and at most (k-1)/2 bands a side; with it the window holds more light and
    normalisation still maps any photon scale back to the model's units."""
    with pytest.raises(ValueError, match="detector_guard"):
        CDPGeometry(8, macro_pixel=1, detector_guard=1)
    with pytest.raises(ValueError, match="detector_guard"):
        CDPGeometry(8, macro_pixel=2, detector_guard=9)
    n, k = 8, 4
    g = torch.Generator().manual_seed(2)
    mask = (torch.rand((1, n, n), generator=g, dtype=torch.float64) * 2 * math.pi).repeat_interleave(k, 1)
    mask = mask.repeat_interleave(k, 2)
    phase = torch.rand((1, n, n), generator=g, dtype=torch.float64) * math.pi
    held = {}
    for guard in (0, 8, 24):
        op = CDPGeometry(n, macro_pixel=k, detector_guard=guard).operator(mask)
        y = op.A(phase_to_field(phase))
        held[guard] = float(y.sum()) / (k * k * n * n)
        torch.testing.assert_close(op.normalise_intensities(7.5 * y), y, rtol=1e-10, atol=1e-12)
    assert held[0] < held[8] < held[24] <= 1 + 1e-9


def test_normalisation_counts_the_light_outside_the_detector_window():
    """Any photon scale maps back to the model's units, although only ~62 % of the light reaches the window (k = 4)."""
    n, k = 16, 4
    g = torch.Generator().manual_seed(3)
    mask = torch.rand((1, n, n), generator=g, dtype=torch.float64) * 2 * math.pi
    op = CDPGeometry(n, macro_pixel=k).operator(mask.repeat_interleave(k, 1).repeat_interleave(k, 2))
    for kind in ("random", "smooth"):
        phase = torch.rand((1, n, n), generator=g, dtype=torch.float64) * math.pi
        if kind == "smooth":
            phase = torch.linspace(0, 1, n, dtype=torch.float64)[None, None, :].expand(1, n, n) * math.pi
        y = op.A(phase_to_field(phase))
        assert 0.5 < float(y.sum()) / (k * k * n * n) < 0.95  # light lost outside the window
        torch.testing.assert_close(op.normalise_intensities(123.4 * y), y, rtol=1e-10, atol=1e-12)


def test_raar_with_macro_pixels_is_as_good_as_without():
    """k = 4 macro-pixels on the Fraunhofer detector: the same single-snapshot recovery as k = 1."""
    from hil.physics.slm import SLMModel, SLMSpec
    from hil.solvers import solve

    n = 32
    g = torch.Generator().manual_seed(4)
    mask = torch.rand((1, n, n), generator=g) * 2 * math.pi
    phase = torch.rand((2, n, n), generator=g).mul(4).round().div(4) * math.pi  # piecewise objects in [0, π]
    psnr = {}
    for k in (1, 4):
        op = CDPGeometry(n, macro_pixel=k).operator(SLMModel(SLMSpec(macro_pixel=k)).transmittance(mask))
        assert op.factorised == (k > 1)
        y = op.normalise_intensities(50.0 * op.A(phase_to_field(phase)))
        psnr[k] = phase_psnr(torch.angle(solve("raar", op, y, iterations=150)), phase)
    assert psnr[1].min() > 40
    clip = 100.0  # above it both are at float32 rounding
    torch.testing.assert_close(psnr[4].clamp(max=clip), psnr[1].clamp(max=clip), atol=0.5, rtol=0)


def test_soft_modulus_projection_has_finite_gradients_at_dark_pixels():
    """Decoders train through P_M: zero measured pixels must not turn the gradient into NaN."""
    g = torch.Generator().manual_seed(6)
    op = CDPGeometry(8).operator(torch.zeros((1, 8, 8), dtype=torch.float64))
    z = _rand_complex((1, 1, 16, 16), g).requires_grad_(True)
    sqrt_y = torch.rand((1, 1, 16, 16), generator=g, dtype=torch.float64)
    sqrt_y[..., :4, :] = 0
    op.modulus_projection(z, sqrt_y, eps_rel=0.1).abs().sum().backward()
    assert torch.isfinite(z.grad).all()
