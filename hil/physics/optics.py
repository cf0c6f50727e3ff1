"""Forward model of the bench: propagators and the coded-diffraction-pattern (CDP) operator.

Conventions (used by every solver, network and simulator in the project):

* Arrays are ``(..., height, width)``; row index = y, column index = x. slmsuite's
  ``resolution`` arguments are (width, height); its ``shape`` attributes are (height, width).
* A thin element of phase ``phi`` (radians) multiplies the field by ``exp(+1j * phi)``.
* Propagation to a lens's back focal plane is the centred unitary DFT
  ``U[k] = (H*W)**-0.5 * sum_n u[n] exp(-2j*pi*k*n/N)`` with zero frequency at index
  ``(H//2, W//2)`` (numpy/torch ``fft2`` sign, ``norm="ortho"``), so Parseval holds exactly.
* The object (``n x n``) sits centred in a zero-padded grid ``pad_factor`` times larger.
  With macro-pixels, each object/mask pixel covers ``k x k`` SLM pixels and the field is
  computed on the SLM grid; a Fourier-plane detector then sees the central
  ``pad_factor * n`` window of the ``pad_factor * k * n`` spectrum, as slmsuite's
  ``SimulatedCamera`` does with the ideal affine map.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Literal

import torch

PropagatorKind = Literal["fraunhofer", "asm", "fresnel"]


def centred_fft2(u: torch.Tensor) -> torch.Tensor:
    """Unitary 2-D DFT over the last two axes with the zero frequency at the centre."""
    return torch.fft.fftshift(torch.fft.fft2(torch.fft.ifftshift(u, dim=(-2, -1)), norm="ortho"), dim=(-2, -1))


def centred_ifft2(u: torch.Tensor) -> torch.Tensor:
    """Inverse (= adjoint) of :func:`centred_fft2`."""
    return torch.fft.fftshift(torch.fft.ifft2(torch.fft.ifftshift(u, dim=(-2, -1)), norm="ortho"), dim=(-2, -1))


def complex_dtype_for(dtype: torch.dtype) -> torch.dtype:
    """The complex dtype that pairs with a real or complex ``dtype`` (float64 -> complex128)."""
    if dtype in (torch.float64, torch.complex128):
        return torch.complex128
    return torch.complex64


def as_complex(x: torch.Tensor) -> torch.Tensor:
    """Return ``x`` as a complex tensor (real input is taken as an amplitude)."""
    return x if x.is_complex() else x.to(complex_dtype_for(x.dtype))


def phase_to_field(phase_rad: torch.Tensor, amplitude: torch.Tensor | None = None) -> torch.Tensor:
    """Thin-element transmittance ``amplitude * exp(1j * phase_rad)``."""
    field = torch.polar(torch.ones_like(phase_rad), phase_rad)
    return field if amplitude is None else field * amplitude


class Propagator:
    """A linear, unitary-up-to-band-limit propagation over the last two axes."""

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def adjoint(self, u: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class FraunhoferPropagator(Propagator):
    """Lens of focal length f: the back focal plane field is the centred unitary DFT.

    Physical scale of a detector pixel (for reference): ``lambda * f / (grid * pitch)``.
    """

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return centred_fft2(u)

    def adjoint(self, u: torch.Tensor) -> torch.Tensor:
        return centred_ifft2(u)


class AngularSpectrumPropagator(Propagator):
    """Free-space propagation over ``distance_um`` by the angular spectrum method.

    ``paraxial=False``: exact transfer function ``exp(2j*pi*z*sqrt(1/lambda^2 - fx^2 - fy^2))``
    with evanescent waves removed and the band limit of Matsushima & Shimobaba (2009) that
    prevents aliasing of the transfer function on a finite grid.
    ``paraxial=True``: Fresnel transfer function ``exp(2j*pi*z/lambda) exp(-1j*pi*lambda*z*(fx^2+fy^2))``.
    """

    def __init__(
        self,
        wavelength_um: float,
        pitch_um: float,
        distance_um: float,
        paraxial: bool = False,
        band_limit: bool = True,
    ) -> None:
        if wavelength_um <= 0 or pitch_um <= 0:
            raise ValueError(f"wavelength_um and pitch_um must be > 0, got {wavelength_um}, {pitch_um}")
        self.wavelength_um = float(wavelength_um)
        self.pitch_um = float(pitch_um)
        self.distance_um = float(distance_um)
        self.paraxial = paraxial
        self.band_limit = band_limit
        self._cache: dict[tuple, torch.Tensor] = {}

    def transfer_function(self, shape: tuple[int, int], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """Transfer function on the unshifted FFT grid of ``shape`` = (height, width)."""
        key = (shape, device, dtype)
        if key not in self._cache:
            height, width = shape
            fy = torch.fft.fftfreq(height, d=self.pitch_um, dtype=torch.float64)[:, None]
            fx = torch.fft.fftfreq(width, d=self.pitch_um, dtype=torch.float64)[None, :]
            lam, z = self.wavelength_um, self.distance_um
            f2 = fx**2 + fy**2
            if self.paraxial:
                phase = 2 * math.pi * z / lam - math.pi * lam * z * f2
                h = torch.polar(torch.ones_like(phase), phase)
            else:
                arg = 1.0 / lam**2 - f2
                kz = torch.sqrt(torch.clamp(arg, min=0.0))
                h = torch.polar(torch.ones_like(kz), 2 * math.pi * z * kz) * (arg > 0)
            if self.band_limit and z != 0:
                limit_y = 1.0 / (lam * math.sqrt((2 * z / (height * self.pitch_um)) ** 2 + 1))
                limit_x = 1.0 / (lam * math.sqrt((2 * z / (width * self.pitch_um)) ** 2 + 1))
                h = h * ((fx.abs() <= limit_x) & (fy.abs() <= limit_y))
            self._cache[key] = h.to(device=device, dtype=complex_dtype_for(dtype))
        return self._cache[key]

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        h = self.transfer_function(tuple(u.shape[-2:]), u.device, u.dtype)
        return torch.fft.ifft2(torch.fft.fft2(u) * h)

    def adjoint(self, u: torch.Tensor) -> torch.Tensor:
        h = self.transfer_function(tuple(u.shape[-2:]), u.device, u.dtype)
        return torch.fft.ifft2(torch.fft.fft2(u) * h.conj())


@dataclass(frozen=True)
class CDPGeometry:
    """Sizes and propagation of the CDP system; builds operators for given masks.

    Attributes:
        n: object size in pixels (square, ``n x n``).
        pad_factor: zero-padded grid size / object size (2 = Nyquist for the intensity).
        macro_pixel: SLM pixels per object/mask pixel along each axis (k).
        propagator: ``"fraunhofer"`` (lens), ``"asm"`` or ``"fresnel"`` (free space).
        wavelength_um, pitch_um, distance_um: only used by the free-space propagators;
            ``pitch_um`` is the SLM pixel pitch.
    """

    n: int
    pad_factor: int = 2
    macro_pixel: int = 1
    propagator: PropagatorKind = "fraunhofer"
    wavelength_um: float = 0.633
    pitch_um: float = 8.0
    distance_um: float = 0.0

    def __post_init__(self) -> None:
        if self.n < 2:
            raise ValueError(f"CDPGeometry.n must be >= 2, got {self.n}")
        if self.pad_factor < 1:
            raise ValueError(f"CDPGeometry.pad_factor must be >= 1, got {self.pad_factor}")
        if self.macro_pixel < 1:
            raise ValueError(f"CDPGeometry.macro_pixel must be >= 1, got {self.macro_pixel}")
        if self.propagator not in ("fraunhofer", "asm", "fresnel"):
            raise ValueError(f"CDPGeometry.propagator must be fraunhofer, asm or fresnel, got {self.propagator!r}")

    @property
    def slm_shape(self) -> tuple[int, int]:
        """(height, width) of the mask on the SLM grid: ``k*n`` square."""
        side = self.n * self.macro_pixel
        return side, side

    @property
    def field_shape(self) -> tuple[int, int]:
        """(height, width) of the zero-padded propagation grid."""
        side = self.pad_factor * self.n * self.macro_pixel
        return side, side

    @property
    def detector_shape(self) -> tuple[int, int]:
        """(height, width) of one CDP on the model grid."""
        if self.propagator == "fraunhofer":
            side = self.pad_factor * self.n
            return side, side
        return self.field_shape

    def detector_window(self) -> tuple[slice, slice]:
        """(rows, cols) of the detector inside the propagation grid: its centred ``detector_shape`` window."""
        big, small = self.field_shape[0], self.detector_shape[0]
        start = big // 2 - small // 2
        return slice(start, start + small), slice(start, start + small)

    @cached_property
    def propagation(self) -> Propagator:
        """The propagator, built once per geometry (its transfer functions are cached across operators)."""
        if self.propagator == "fraunhofer":
            return FraunhoferPropagator()
        return AngularSpectrumPropagator(
            self.wavelength_um,
            self.pitch_um,
            self.distance_um,
            paraxial=self.propagator == "fresnel",
        )

    def operator(self, masks: torch.Tensor) -> CDPOperator:
        return CDPOperator(self, masks)


class CDPOperator:
    """y_l = |D P(pad(M_l ⊙ U x))|², l = 1..L: the measurement operator of the bench.

    ``U`` repeats each object pixel over ``k x k`` SLM pixels, ``M_l`` are the realised
    mask transmittances on the SLM grid (complex, shape ``(L, k*n, k*n)``, or real phases in
    radians, converted with ``exp(1j*phase)``), ``P`` the propagator and ``D`` the crop to
    the detector window. Inputs are batched: objects ``(B, n, n)`` complex, measurements
    ``(B, L, Hd, Wd)`` real. Differentiable in both the object and the masks; runs on
    whichever device/dtype the masks are on.
    """

    def __init__(self, geometry: CDPGeometry, masks: torch.Tensor) -> None:
        if masks.dim() == 2:
            masks = masks[None]
        if masks.dim() != 3 or tuple(masks.shape[-2:]) != geometry.slm_shape:
            raise ValueError(
                f"masks must have shape (L, {geometry.slm_shape[0]}, {geometry.slm_shape[1]}) "
                f"(L, height, width) on the SLM grid; got {tuple(masks.shape)}"
            )
        self.geometry = geometry
        self.masks = masks if masks.is_complex() else phase_to_field(masks)
        self.propagator = geometry.propagation

    @property
    def n_masks(self) -> int:
        return self.masks.shape[0]

    def _check_object(self, x: torch.Tensor) -> None:
        n = self.geometry.n
        if x.dim() != 3 or tuple(x.shape[-2:]) != (n, n):
            raise ValueError(f"objects must have shape (B, {n}, {n}); got {tuple(x.shape)}")

    def A_linear(self, x: torch.Tensor) -> torch.Tensor:
        """Complex detector fields ``(B, L, Hd, Wd)`` for objects ``x`` of shape ``(B, n, n)``."""
        self._check_object(x)
        k = self.geometry.macro_pixel
        x = as_complex(x).to(self.masks.dtype)
        if k > 1:
            x = x.repeat_interleave(k, dim=-2).repeat_interleave(k, dim=-1)
        u = x[:, None] * self.masks[None]
        side, big = u.shape[-1], self.geometry.field_shape[0]
        start = (big - side) // 2
        padded = u.new_zeros(u.shape[:-2] + (big, big))
        padded[..., start : start + side, start : start + side] = u
        out = self.propagator.forward(padded)
        if self.geometry.detector_shape != self.geometry.field_shape:
            rows, cols = self.geometry.detector_window()
            out = out[..., rows, cols]
        return out

    def A_linear_adjoint(self, z: torch.Tensor) -> torch.Tensor:
        """Adjoint of :meth:`A_linear`: detector fields ``(B, L, Hd, Wd)`` -> objects ``(B, n, n)``."""
        geo = self.geometry
        if z.dim() != 4 or tuple(z.shape[-2:]) != geo.detector_shape or z.shape[1] != self.n_masks:
            raise ValueError(
                f"fields must have shape (B, {self.n_masks}, {geo.detector_shape[0]}, {geo.detector_shape[1]}); "
                f"got {tuple(z.shape)}"
            )
        z = as_complex(z).to(self.masks.dtype)
        if geo.detector_shape != geo.field_shape:
            rows, cols = self.geometry.detector_window()
            full = z.new_zeros(z.shape[:-2] + geo.field_shape)
            full[..., rows, cols] = z
            z = full
        u = self.propagator.adjoint(z)
        side, big = geo.slm_shape[0], geo.field_shape[0]
        start = (big - side) // 2
        u = u[..., start : start + side, start : start + side] * self.masks.conj()[None]
        x = u.sum(dim=1)
        k, n = geo.macro_pixel, geo.n
        if k > 1:
            x = x.reshape(x.shape[0], n, k, n, k).sum(dim=(2, 4))
        return x

    def A(self, x: torch.Tensor) -> torch.Tensor:
        """Noiseless CDPs ``|A_linear(x)|²``, shape ``(B, L, Hd, Wd)``, in units of |field|²."""
        return self.A_linear(x).abs().square()

    def gram_diagonal(self) -> torch.Tensor:
        """Diagonal of ``A_linear^H A_linear`` on the object grid, shape ``(n, n)``.

        Exact for ``macro_pixel == 1`` with the Fraunhofer propagator, where the Gram
        operator is diagonal (``sum_l |M_l|^2``); a preconditioner otherwise.
        """
        k, n = self.geometry.macro_pixel, self.geometry.n
        power = self.masks.abs().square().sum(dim=0)
        if k > 1:
            power = power.reshape(n, k, n, k).sum(dim=(1, 3))
        return power

    def pseudo_inverse(self, z: torch.Tensor) -> torch.Tensor:
        """Least-squares object for detector fields ``z``: ``(A^H A)^-1 A^H z`` (see :meth:`gram_diagonal`)."""
        return self.A_linear_adjoint(z) / self.gram_diagonal().clamp_min(1e-12)

    def normalise_intensities(self, y: torch.Tensor) -> torch.Tensor:
        """Rescale measured CDPs ``(B, L, Hd, Wd)`` (photons, ADU, ...) to the model's units.

        Each image is scaled so its total equals the energy a unit-modulus object sends through
        the system (``sum(gram_diagonal())``), which fixes the unknown illumination power.
        """
        total = y.sum(dim=(1, 2, 3), keepdim=True).clamp_min(torch.finfo(y.dtype).tiny)
        return y * (self.gram_diagonal().sum().to(y.dtype) / total)

    def backproject(self, y: torch.Tensor) -> torch.Tensor:
        """Crude initial object from intensities: the pseudo-inverse of ``sqrt(y)`` with zero phase."""
        return self.pseudo_inverse(torch.sqrt(y.clamp_min(0)))
