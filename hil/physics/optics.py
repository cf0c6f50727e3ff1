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
from typing import Literal, Protocol, TypeVar

import numpy as np
import torch

PropagatorKind = Literal["fraunhofer", "asm", "fresnel"]
MAX_N = 2048  # largest object side: bounds every allocation made from a config
RIPPLE_TOLERANCE = 1e-6  # share of the masks' energy the polyphase factorisation may leave out
ArrayT = TypeVar("ArrayT", torch.Tensor, np.ndarray)


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


def macro_upsample(x: ArrayT, k: int) -> ArrayT:
    """Repeat each pixel over ``k x k`` pixels along the last two axes (mask/object grid -> SLM grid).

    The one implementation of macro-pixels (``U`` of :class:`CDPOperator`); takes torch tensors or numpy arrays.
    """
    if k == 1:
        return x
    if isinstance(x, np.ndarray):
        return np.repeat(np.repeat(x, k, axis=-2), k, axis=-1)
    return x.repeat_interleave(k, dim=-2).repeat_interleave(k, dim=-1)


def macro_sum(x: torch.Tensor, k: int) -> torch.Tensor:
    """Adjoint of :func:`macro_upsample`: sum each ``k x k`` block over the last two axes."""
    if k == 1:
        return x
    h, w = x.shape[-2:]
    return x.reshape(*x.shape[:-2], h // k, k, w // k, k).sum(dim=(-3, -1))


def bin_pixels(frames: torch.Tensor, binning: int) -> torch.Tensor:
    """Sum ``binning x binning`` detector pixels over the last two axes (which must divide evenly)."""
    if binning == 1:
        return frames
    h, w = frames.shape[-2:]
    if h % binning or w % binning:
        raise ValueError(f"frame (height, width) = ({h}, {w}) is not divisible by binning {binning}")
    return macro_sum(frames, binning)


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
class OpticsSpec:
    """The optics of the system config (``optics:`` in ``configs/system.yaml``).

    Attributes:
        n: object size in pixels (square, ``n x n``).
        pad_factor: zero-padded grid size / object size (2 = Nyquist for the intensity).
        propagator: ``"fraunhofer"`` (lens), ``"asm"`` or ``"fresnel"`` (free space).
        wavelength_um, pitch_um, distance_um: only used by the free-space propagators;
            ``pitch_um`` is the SLM pixel pitch.
    """

    n: int = 64
    pad_factor: int = 2
    propagator: PropagatorKind = "fraunhofer"
    wavelength_um: float = 0.633
    pitch_um: float = 8.0
    distance_um: float = 0.0

    def __post_init__(self) -> None:
        if not 2 <= self.n <= MAX_N:
            raise ValueError(f"optics.n must lie in [2, {MAX_N}], got {self.n}")
        if not 1 <= self.pad_factor <= 8:
            raise ValueError(f"optics.pad_factor must lie in [1, 8], got {self.pad_factor}")
        if self.propagator not in ("fraunhofer", "asm", "fresnel"):
            raise ValueError(f"optics propagator must be fraunhofer, asm or fresnel, got {self.propagator!r}")
        if not (self.wavelength_um > 0 and self.pitch_um > 0 and math.isfinite(self.distance_um)):
            raise ValueError("optics wavelength_um and pitch_um must be > 0 and distance_um finite")


@dataclass(frozen=True)
class CDPGeometry(OpticsSpec):
    """Sizes and propagation of the CDP system; builds operators for given masks.

    Adds to :class:`OpticsSpec` what the SLM and camera set: ``macro_pixel`` (SLM pixels per
    object/mask pixel along each axis, k), ``binning`` (detector pixels summed per camera pixel along
    each axis, b) and ``detector_guard`` (Fraunhofer with k > 1: detector bins added on each side of the
    ``pad*n`` band, which a camera larger than that band sees: the neighbouring diffraction orders of the
    macro-pixel grid; at most ``(k-1) * pad*n / 2``).
    """

    macro_pixel: int = 1
    binning: int = 1
    detector_guard: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 1 <= self.macro_pixel <= 64:
            raise ValueError(f"CDPGeometry.macro_pixel must be in [1, 64], got {self.macro_pixel}")
        band = self.pad_factor * self.n
        if self.detector_guard and (self.propagator != "fraunhofer" or self.detector_guard < 0 or
                                    2 * self.detector_guard > (self.macro_pixel - 1) * band):  # fmt: skip
            raise ValueError(
                f"detector_guard {self.detector_guard} needs the Fraunhofer propagator and at most "
                f"(macro_pixel - 1) * pad_factor * n / 2 = {(self.macro_pixel - 1) * band // 2} bins"
            )
        if self.binning < 1 or self.detector_shape[0] % self.binning:
            raise ValueError(f"binning {self.binning} must be >= 1 and divide the detector {self.detector_shape}")

    @property
    def band(self) -> int:
        """Side of the ``pad*n`` band: the detector without guard, one sample per frequency of the mask grid."""
        return self.pad_factor * self.n

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
        """(height, width) of one CDP on the model grid: the band plus the guard on each side."""
        if self.propagator == "fraunhofer":
            side = self.band + 2 * self.detector_guard
            return side, side
        return self.field_shape

    @property
    def camera_shape(self) -> tuple[int, int]:
        """(height, width) of one measured CDP: the detector after ``binning``."""
        side = self.detector_shape[0] // self.binning
        return side, side

    def embed(self, u: torch.Tensor) -> torch.Tensor:
        """A field on the SLM grid ``(..., k*n, k*n)`` centred in the zero-padded propagation grid."""
        return _embed(u, self.field_shape[0])

    @cached_property
    def macro_envelope(self) -> torch.Tensor | None:
        """Complex factor ``E`` (``detector_shape``, complex128) of the Fraunhofer detector with macro-pixels.

        For masks constant over each ``k x k`` block, the detector field of the ``pad*k*n`` SLM grid is
        ``E`` times the centred unitary DFT of the ``pad*n`` grid holding one sample per block: per axis the
        DFT of a block sum is ``sum_j exp(-2πi f j / (pad k n))`` times the small grid's DFT, divided by
        ``k`` for the unitary norms, times a centring phase. ``E`` is taken as the ratio of the two paths for
        a point object, so it matches :meth:`detector_field` exactly. With a guard band the small grid's DFT
        repeats periodically (:meth:`band_index`). None for free space or ``k == 1``.
        """
        if self.propagator != "fraunhofer" or self.macro_pixel == 1:
            return None
        n, k = self.n, self.macro_pixel
        point = torch.zeros((n, n), dtype=torch.complex128)
        point[0, 0] = 1
        fine = self.detector_field(self.embed(macro_upsample(point, k)))
        return fine / self.periodic(centred_fft2(_embed(point, self.band)))

    @cached_property
    def band_dft(self) -> torch.Tensor:
        """``(detector side, n)`` complex128: one axis of the object's centred unitary DFT on the band grid, at the
        detector's frequencies (repeated over the guard), i.e. ``periodic(centred_fft2(embed(u, band)))`` is
        ``band_dft @ u @ band_dft.T`` for ``u`` ``(n, n)``: two small products instead of a zero-padded FFT."""
        return _centred_dft_rows(self.detector_shape[0], self.band, self.n)

    @cached_property
    def slm_dft(self) -> torch.Tensor:
        """``(detector side, k*n)`` complex128: like :attr:`band_dft` for a field on the SLM grid, i.e.
        ``detector_field(embed(u))`` is ``slm_dft @ u @ slm_dft.T`` for ``u`` ``(k*n, k*n)`` (Fraunhofer)."""
        return _centred_dft_rows(self.detector_shape[0], self.field_shape[0], self.slm_shape[0])

    @cached_property
    def band_index(self) -> torch.Tensor:
        """For each detector row (or column), the band sample at the same frequency modulo the band (int64)."""
        side, band = self.detector_shape[0], self.band
        return torch.remainder(torch.arange(side) - side // 2 + band // 2, band)

    def periodic(self, u: torch.Tensor) -> torch.Tensor:
        """Band samples ``(..., band, band)`` repeated periodically over the detector ``(..., *detector_shape)``."""
        if not self.detector_guard:
            return u
        index = self.band_index.to(u.device)
        return u.index_select(-2, index).index_select(-1, index)

    def fold(self, z: torch.Tensor) -> torch.Tensor:
        """Adjoint of :meth:`periodic`: detector values summed onto the band samples of their frequency."""
        if not self.detector_guard:
            return z
        index, band = self.band_index.to(z.device), self.band
        rows = z.new_zeros(z.shape[:-2] + (band, z.shape[-1])).index_add_(-2, index, z)
        return rows.new_zeros(z.shape[:-2] + (band, band)).index_add_(-1, index, rows)

    def detector_field(self, padded: torch.Tensor) -> torch.Tensor:
        """The detector field ``(..., *detector_shape)`` of a field on the propagation grid (the bench's optics)."""
        out = self.propagation.forward(padded)
        if self.detector_shape != self.field_shape:
            rows, cols = self.detector_window()
            out = out[..., rows, cols]
        return out

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

    def operator(
        self, masks: torch.Tensor, detector: Detector | None = None, offset: torch.Tensor | None = None
    ) -> CDPOperator:
        return CDPOperator(self, masks, detector, offset)

    def outside_field(self, field: torch.Tensor) -> torch.Tensor:
        """The detector field ``detector_shape`` (complex) of light on the SLM *outside* the object's pixels.

        ``field`` ``(k (n + 2m), k (n + 2m))`` (complex, on the SLM grid) covers the mask's ROI and ``m`` mask
        pixels around it; its central ``(k n, k n)`` part is left out (that light is the operator's, through
        the masks) and the ring is propagated like the ROI (centred with it in the same propagation grid).
        """
        n, k, big = self.n, self.macro_pixel, self.field_shape[0]
        side = field.shape[-1]
        if field.dim() != 2 or field.shape[0] != side or side % k or (side // k - n) % 2 or side < k * n or side > big:
            raise ValueError(
                f"an outside field must be (k (n + 2m), k (n + 2m)) SLM pixels with n = {n}, k = {k} and at most "
                f"{big} wide; got {tuple(field.shape)}"
            )
        start = (side - k * n) // 2
        ring = field.to(torch.complex128).clone()
        ring[start : start + k * n, start : start + k * n] = 0
        return self.detector_field(_embed(ring, big))


def _centred_dft_rows(side: int, big: int, count: int) -> torch.Tensor:
    """``(side, count)`` complex128: the centred unitary DFT of a ``big`` grid at its central ``side`` frequencies
    (taken modulo ``big``), for the central ``count`` samples."""
    freq = torch.arange(side, dtype=torch.float64) - side // 2
    position = torch.arange(count, dtype=torch.float64) + (big - count) // 2 - big // 2
    return torch.exp(-2j * math.pi * freq[:, None] * position[None, :] / big) / math.sqrt(big)


def _embed(u: torch.Tensor, big: int) -> torch.Tensor:
    """``u`` (..., side, side) centred in a zero grid (..., big, big)."""
    side = u.shape[-1]
    start = (big - side) // 2
    padded = u.new_zeros(u.shape[:-2] + (big, big))
    padded[..., start : start + side, start : start + side] = u
    return padded


def _crop(u: torch.Tensor, side: int) -> torch.Tensor:
    """The centred (side, side) part of ``u`` (adjoint of :func:`_embed`)."""
    start = (u.shape[-1] - side) // 2
    return u[..., start : start + side, start : start + side]


class Detector(Protocol):
    """Linear, non-negative map from detector-grid intensities to camera pixels (see :mod:`hil.physics.detector`)."""

    detector_shape: tuple[int, int]
    camera_shape: tuple[int, int]

    def forward(self, intensity: torch.Tensor) -> torch.Tensor: ...

    def adjoint(self, values: torch.Tensor) -> torch.Tensor: ...


class Binning:
    """The geometry's own detector: ``b x b`` bins summed per camera pixel (``b = 1``: identity)."""

    def __init__(self, geometry: CDPGeometry) -> None:
        self.binning = geometry.binning
        self.detector_shape = geometry.detector_shape
        self.camera_shape = geometry.camera_shape

    def forward(self, intensity: torch.Tensor) -> torch.Tensor:
        return bin_pixels(intensity, self.binning)

    def adjoint(self, values: torch.Tensor) -> torch.Tensor:
        return macro_upsample(values, self.binning)


class CDPOperator:
    """y_l = B |D P(pad(M_l ⊙ U x))|², l = 1..L: the measurement operator of the bench.

    ``U`` repeats each object pixel over ``k x k`` SLM pixels (:func:`macro_upsample`), ``M_l`` are
    the realised mask transmittances on the SLM grid (complex, shape ``(L, k*n, k*n)``, or real
    phases in radians, converted with ``exp(1j*phase)``), ``P`` the propagator, ``D`` the crop to
    the detector window and ``B`` the camera: by default the geometry's ``b x b`` binning of intensities,
    or any :class:`Detector` (e.g. a registered camera that integrates each pixel's footprint). Inputs are
    batched: objects ``(B, n, n)`` complex, detector fields ``(B, L, *detector_shape)`` complex,
    measurements ``(B, L, *camera_shape)`` real. Differentiable in both the object and the masks; runs on
    whichever device/dtype the masks are on.

    ``offset`` (optional, complex, broadcast to ``(B, L, *detector_shape)``): a fixed detector field added to
    every one, the light that reaches the detector from outside the object's pixels (the SLM-plane field
    beyond the mask's ROI, :meth:`CDPGeometry.outside_field`). The operator is then affine:
    :meth:`A_linear` adds it, :meth:`pseudo_inverse` removes it first, :meth:`A_linear_adjoint` is the
    adjoint of the linear part.
    """

    RIPPLE_REFINE_STEPS = 4  # pseudo-inverse refinement when masks vary inside macro-pixels (crosstalk)

    def __init__(
        self,
        geometry: CDPGeometry,
        masks: torch.Tensor,
        detector: Detector | None = None,
        offset: torch.Tensor | None = None,
    ) -> None:
        if masks.dim() == 2:
            masks = masks[None]
        if masks.dim() != 3 or tuple(masks.shape[-2:]) != geometry.slm_shape:
            raise ValueError(
                f"masks must have shape (L, {geometry.slm_shape[0]}, {geometry.slm_shape[1]}) "
                f"(L, height, width) on the SLM grid; got {tuple(masks.shape)}"
            )
        detector = detector or Binning(geometry)
        if tuple(detector.detector_shape) != geometry.detector_shape:
            raise ValueError(
                f"detector is for a {detector.detector_shape} grid, the geometry's is {geometry.detector_shape}"
            )
        if offset is not None and tuple(offset.shape[-2:]) != geometry.detector_shape:
            raise ValueError(f"offset must end in the detector shape {geometry.detector_shape}: {tuple(offset.shape)}")
        self.geometry = geometry
        self.detector = detector
        self.masks = masks if masks.is_complex() else phase_to_field(masks)
        self.offset = None if offset is None else offset.to(device=self.masks.device, dtype=self.masks.dtype)
        self._coarse, self._envelope, self._ripple = self._macro_pixel_factorisation()
        self._coverage_cache: dict[tuple[torch.dtype, torch.device], tuple[torch.Tensor, torch.Tensor]] = {}

    def _macro_pixel_factorisation(self) -> tuple[torch.Tensor | None, torch.Tensor | None, bool]:
        """Polyphase form of the Fraunhofer detector with macro-pixels: ``(c_0, E_0, ripple)``, else ``(None, None,
        False)``.

        Split each mask into its ``k x k`` sub-pixel samples ``t_ab`` (``(L, n, n)`` each); ``c_0`` is their
        block mean and ``E_0 D[x c_0]`` (``D``: the band's DFT, repeated over the guard; ``E_0``: the macro-pixel
        envelope) the detector field of the block-mean masks. Block-constant masks (what varies inside the
        blocks holds at most ``RIPPLE_TOLERANCE`` of their energy, -60 dB) are exactly that: the cost of
        ``k = 1`` and an exact pseudo-inverse. Masks that vary inside the blocks (crosstalk's ripple,
        ``ripple``) go through the SLM grid's DFT at the detector's frequencies as two matrix products
        (:attr:`CDPGeometry.slm_dft`: exact, about ``k`` times the cost of ``k = 1``, no zero-padded FFT); the
        pseudo-inverse then refines the block mean's exact one. Masks whose in-block variation carries more
        than a quarter of their energy (arbitrary SLM-grid patterns) take the SLM-grid FFT path instead.
        """
        envelope, k = self.geometry.macro_envelope, self.geometry.macro_pixel
        none = (None, None, False)
        if envelope is None:
            return none
        masks = self.masks
        samples = torch.stack([masks[:, a::k, b::k] for a in range(k) for b in range(k)])  # (k², L, n, n)
        coarse = samples.mean(dim=0)
        ripple_energy, energy = (
            float((samples - coarse).detach().abs().square().sum()),
            float(samples.detach().abs().square().sum()),
        )
        if ripple_energy > 0.25 * energy:
            return none
        envelope = envelope.to(device=masks.device, dtype=masks.dtype)
        return coarse, envelope, ripple_energy > RIPPLE_TOLERANCE * energy

    def _band_dft(self) -> torch.Tensor:
        return self.geometry.band_dft.to(device=self.masks.device, dtype=self.masks.dtype)

    def _slm_dft(self) -> torch.Tensor:
        return self.geometry.slm_dft.to(device=self.masks.device, dtype=self.masks.dtype)

    @property
    def factorised(self) -> bool:
        """Whether the polyphase macro-pixel factorisation is in use (band-sized FFTs instead of the SLM grid's)."""
        return self._coarse is not None

    @property
    def n_masks(self) -> int:
        return self.masks.shape[0]

    @property
    def camera_shape(self) -> tuple[int, int]:
        """(height, width) of one measured CDP."""
        return tuple(self.detector.camera_shape)

    def _check_object(self, x: torch.Tensor) -> None:
        n = self.geometry.n
        if x.dim() != 3 or tuple(x.shape[-2:]) != (n, n):
            raise ValueError(f"objects must have shape (B, {n}, {n}); got {tuple(x.shape)}")

    def A_linear(self, x: torch.Tensor) -> torch.Tensor:
        """Complex detector fields ``(B, L, *detector_shape)`` for objects ``x`` of shape ``(B, n, n)`` (plus the
        ``offset``)."""
        z = self._linear(x)
        return z if self.offset is None else z + self.offset

    def _linear(self, x: torch.Tensor) -> torch.Tensor:
        """The linear part of :meth:`A_linear`."""
        self._check_object(x)
        geo = self.geometry
        x = as_complex(x).to(self.masks.dtype)
        if self._ripple:
            dft = self._slm_dft()
            return dft @ (macro_upsample(x, geo.macro_pixel)[:, None] * self.masks[None]) @ dft.T
        if self._coarse is not None:
            dft = self._band_dft()
            return dft @ (x[:, None] * self._coarse[None]) @ dft.T * self._envelope
        x = macro_upsample(x, geo.macro_pixel)
        return geo.detector_field(geo.embed(x[:, None] * self.masks[None]))

    def A_linear_adjoint(self, z: torch.Tensor) -> torch.Tensor:
        """Adjoint of :meth:`A_linear`'s linear part: fields ``(B, L, *detector_shape)`` -> objects ``(B, n, n)``."""
        geo = self.geometry
        if z.dim() != 4 or tuple(z.shape[-2:]) != geo.detector_shape or z.shape[1] != self.n_masks:
            raise ValueError(
                f"fields must have shape (B, {self.n_masks}, {geo.detector_shape[0]}, {geo.detector_shape[1]}); "
                f"got {tuple(z.shape)}"
            )
        z = as_complex(z).to(self.masks.dtype)
        if self._ripple:
            dft = self._slm_dft()
            u = dft.conj().T @ z @ dft.conj() * self.masks.conj()[None]
            return macro_sum(u.sum(dim=1), geo.macro_pixel)
        if self._coarse is not None:
            dft = self._band_dft()
            return (dft.conj().T @ (z * self._envelope.conj()) @ dft.conj() * self._coarse.conj()[None]).sum(dim=1)
        if geo.detector_shape != geo.field_shape:
            rows, cols = geo.detector_window()
            full = z.new_zeros(z.shape[:-2] + geo.field_shape)
            full[..., rows, cols] = z
            z = full
        u = _crop(geo.propagation.adjoint(z), geo.slm_shape[0]) * self.masks.conj()[None]
        return macro_sum(u.sum(dim=1), geo.macro_pixel)

    def intensity(self, x: torch.Tensor) -> torch.Tensor:
        """Noiseless intensity on every detector pixel, before binning: ``|A_linear(x)|²`` ``(B, L, *detector_shape)``.

        This is what a sensor's pixels receive (the camera model bins after read-out).
        """
        return self.A_linear(x).abs().square()

    def A(self, x: torch.Tensor) -> torch.Tensor:
        """Noiseless CDPs on camera pixels ``(B, L, *camera_shape)`` in units of |field|² (binned intensity)."""
        return self.detector.forward(self.intensity(x))

    @property
    def _identity_detector(self) -> bool:
        return isinstance(self.detector, Binning) and self.detector.binning == 1

    def _coverage(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(camera pixels' area in detector bins ``D 1``, bins' coverage by the camera ``D^T 1``), cached."""
        key = (like.dtype, like.device)
        if key not in self._coverage_cache:
            ones = torch.ones(self.geometry.detector_shape, dtype=like.dtype, device=like.device)
            area = self.detector.forward(ones)
            self._coverage_cache[key] = (area, self.detector.adjoint(torch.ones_like(area)))
        return self._coverage_cache[key]

    def expand(self, y: torch.Tensor) -> torch.Tensor:
        """Camera-pixel values ``(..., *camera_shape)`` spread evenly over the detector bins they cover."""
        area, coverage = self._coverage(y)
        return self.detector.adjoint(y / area.clamp_min(1e-30)) / coverage.clamp_min(1e-30)

    @staticmethod
    def _unmeasured_kept(back_ratio: torch.Tensor, coverage: torch.Tensor) -> torch.Tensor:
        """Per-bin field scale ``sqrt(D^T ratio / D^T 1)``; 1 on bins no camera pixel sees (nothing measured there).

        Clamped above 0 so that the gradient at dark pixels is 0, not 0 x inf.
        """
        seen = coverage > 1e-12
        return torch.where(seen, torch.sqrt((back_ratio / torch.where(seen, coverage, 1.0)).clamp_min(1e-30)), 1.0)

    def modulus_projection(self, z: torch.Tensor, sqrt_y: torch.Tensor, eps_rel: float = 0.0) -> torch.Tensor:
        """Detector fields near ``z`` whose camera-pixel intensity is ``sqrt_y²`` (``P_M``).

        Each bin's field is scaled by ``sqrt(D^T(y / D|z|²) / D^T 1)``, which keeps phases: with binning,
        one factor per camera pixel (the exact projection; ``b = 1``: the usual modulus projection); with
        overlapping footprints (a registered camera) a multiplicative update that the exact case reduces
        to. Bins no pixel sees are left as they are; a pixel with no field gets phase 0 and an even share.
        ``eps_rel > 0`` softens the division (``sqrt(power + eps²)``, ``eps`` = ``eps_rel`` x rms per image and
        frame) so the gradient stays finite at dark speckles (used by the learned decoders).
        """
        if self._identity_detector and eps_rel == 0:  # the solvers' case, in its short form (their timings)
            magnitude = z.abs()
            return sqrt_y * torch.where(magnitude > 0, z / magnitude.clamp_min(1e-30), torch.ones_like(z))
        y = (sqrt_y.real if sqrt_y.is_complex() else sqrt_y).square()
        power = self.detector.forward(z.abs().square())
        _, coverage = self._coverage(y)
        if eps_rel > 0:
            eps2 = (eps_rel**2) * power.detach().mean(dim=(-2, -1), keepdim=True).clamp_min(1e-24)
            return z * self._unmeasured_kept(self.detector.adjoint(y / (power + eps2)), coverage)
        lit = power > 0
        ratio = torch.where(lit, y / power.clamp_min(1e-30), torch.zeros_like(y))
        dark = self.expand(torch.where(lit, torch.zeros_like(y), y)).sqrt()
        return z * self._unmeasured_kept(self.detector.adjoint(ratio), coverage) + dark

    def gram_diagonal(self) -> torch.Tensor:
        """Diagonal of ``A_linear^H A_linear`` on the object grid, shape ``(n, n)``.

        Exact for the Fraunhofer propagator with ``macro_pixel == 1``, where the Gram operator is
        diagonal (``sum_l |M_l|^2``), and with factorised macro-pixels (``sum_l |m_l|^2`` times the band's
        mean of the folded ``|E|²``); a preconditioner otherwise.
        """
        if self._coarse is not None:
            folded = self.geometry.fold(self._envelope.abs().square())
            return self._coarse.abs().square().sum(dim=0) * folded.mean()
        power = self.masks.abs().square().sum(dim=0)
        return macro_sum(power, self.geometry.macro_pixel)

    def pseudo_inverse(self, z: torch.Tensor) -> torch.Tensor:
        """Object for detector fields ``z``: ``(A^H A)^-1 A^H z`` (see :meth:`gram_diagonal`).

        With factorised macro-pixels, the exact inverse on the operator's range: the envelope is divided
        out (least squares over the repeats of a frequency in the guard band) and the ``k = 1`` least-squares
        inverse applied (so solvers see the ``k = 1`` problem). An ``offset`` is removed from ``z`` first.
        """
        if self.offset is not None:
            z = z - self.offset
        if self._coarse is not None:
            x = self._block_mean_inverse(z)
            if self._ripple:  # Richardson steps: exact on the range when the ripple is small
                for _ in range(self.RIPPLE_REFINE_STEPS):
                    x = x + self._block_mean_inverse(z - self._linear(x))
            return x
        return self.A_linear_adjoint(z) / self.gram_diagonal().clamp_min(1e-12)

    def _block_mean_inverse(self, z: torch.Tensor) -> torch.Tensor:
        """The exact pseudo-inverse of the block-mean part ``E_0 D[x c_0]`` of the operator."""
        geo, envelope = self.geometry, self._envelope
        u = _crop(centred_ifft2(geo.fold(z * envelope.conj()) / geo.fold(envelope.abs().square())), geo.n)
        power = self._coarse.abs().square().sum(dim=0).clamp_min(1e-12)
        return (u * self._coarse.conj()[None]).sum(dim=1) / power

    def normalise_intensities(self, y: torch.Tensor) -> torch.Tensor:
        """Rescale measured CDPs ``(B, L, *camera_shape)`` (photons, ADU, ...) to the model's units.

        Each image is scaled so that its energy equals what a unit-modulus object sends through the
        system (``sum(gram_diagonal())``), which fixes the unknown illumination power. With factorised
        macro-pixels the energy is counted before the envelope (``sum y / |E|²``, exact by Parseval for
        any object), since the detector window holds only part of the light (about 62 % at k = 4). Each seen
        bin then estimates ``|DFT|²`` at its frequency; repeats of a frequency (guard band) are averaged and
        frequencies no pixel sees get the mean of the others (exact when every frequency is seen; for a
        coded mask's flat spectrum, on average).
        """
        if self._coarse is not None:
            geo = self.geometry
            area, coverage = self._coverage(y)
            envelope2 = self._envelope.abs().square().to(y.dtype)
            weight = self.detector.forward(envelope2) / area.clamp_min(1e-30)
            lit = weight > 1e-9 * weight.max()  # pixels at the envelope's zeros carry no light to count
            density = self.expand(torch.where(lit, y / torch.where(lit, weight, 1.0), 0.0))
            seen = ((coverage > 1e-12) & (envelope2 > 1e-9 * envelope2.max()) & (self.expand(lit.to(y.dtype)) > 0)).to(
                y.dtype
            )
            repeats = geo.fold(seen)
            spectrum = geo.fold(density * seen) / repeats.clamp_min(1)
            measured = repeats > 0
            mean = spectrum.sum(dim=(-2, -1), keepdim=True) / measured.sum().clamp_min(1)
            y_energy = torch.where(measured, spectrum, mean).sum(dim=(1, 2, 3), keepdim=True)
            energy = self._coarse.abs().square().sum()
        else:
            energy = self.gram_diagonal().sum()
            y_energy = y.sum(dim=(1, 2, 3), keepdim=True)
        return y * (energy.to(y.dtype) / y_energy.clamp_min(torch.finfo(y.dtype).tiny))

    def backproject(self, y: torch.Tensor) -> torch.Tensor:
        """Crude initial object from intensities: the pseudo-inverse of ``sqrt(y)`` with zero phase."""
        return self.pseudo_inverse(torch.sqrt(self.expand(y).clamp_min(0)))
