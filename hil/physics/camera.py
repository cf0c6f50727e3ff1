"""Camera model: photon budget, shot and read noise, dark offset, full well, ADC, binning.

Noise is quoted two ways, everywhere in the project:

* ``photons_per_pixel``: mean detected photons per detector pixel of one frame;
* measurement SNR in dB, the power ratio ``10 log10(sum y^2 / E sum (y_noisy - y)^2)`` of the
  clean intensities ``y`` (in photons) to the noise. For Poisson noise ``E sum (ỹ-y)^2 = sum y``,
  so speckle-like CDPs (``mean y^2 ≈ 2 mean(y)^2``) at 5, 50 and 500 photons per pixel give
  about 10, 20 and 30 dB.

Units: photons and electrons (e-) are counts per detector pixel per frame; ``gain_adu_per_e``
converts electrons to ADC units (ADU); the dark offset is in ADU.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hil.physics.optics import bin_pixels


@dataclass(frozen=True)
class CameraSpec:
    """Sensor and photon budget.

    Attributes:
        photons_per_pixel: mean photons per detector pixel of one frame (None: noiseless).
        quantum_efficiency: detected electrons per photon.
        read_noise_e: Gaussian read noise, e- rms.
        dark_offset_adu: constant offset added by the ADC (ADU), removed by dark frames.
        full_well_e: saturation charge per pixel (e-); None = unlimited.
        gain_adu_per_e: ADC conversion gain.
        adc_bits: ADC bit depth (None: no quantisation or clipping).
        binning: b x b pixels summed after readout (CMOS-style digital binning).
    """

    photons_per_pixel: float | None = None
    quantum_efficiency: float = 1.0
    read_noise_e: float = 0.0
    dark_offset_adu: float = 0.0
    full_well_e: float | None = None
    gain_adu_per_e: float = 1.0
    adc_bits: int | None = None
    binning: int = 1

    def __post_init__(self) -> None:
        if self.photons_per_pixel is not None and self.photons_per_pixel <= 0:
            raise ValueError(f"CameraSpec.photons_per_pixel must be > 0 or None, got {self.photons_per_pixel}")
        if not 0 < self.quantum_efficiency <= 1:
            raise ValueError(f"CameraSpec.quantum_efficiency must be in (0, 1], got {self.quantum_efficiency}")
        for name in ("read_noise_e", "dark_offset_adu"):
            if getattr(self, name) < 0:
                raise ValueError(f"CameraSpec.{name} must be >= 0, got {getattr(self, name)}")
        if self.full_well_e is not None and self.full_well_e <= 0:
            raise ValueError(f"CameraSpec.full_well_e must be > 0 or None, got {self.full_well_e}")
        if self.gain_adu_per_e <= 0:
            raise ValueError(f"CameraSpec.gain_adu_per_e must be > 0, got {self.gain_adu_per_e}")
        if self.adc_bits is not None and not 1 <= self.adc_bits <= 32:
            raise ValueError(f"CameraSpec.adc_bits must be in [1, 32] or None, got {self.adc_bits}")
        if self.binning < 1:
            raise ValueError(f"CameraSpec.binning must be >= 1, got {self.binning}")

    @property
    def max_adu(self) -> float | None:
        return None if self.adc_bits is None else float(2**self.adc_bits - 1)


def scale_to_photons(y: torch.Tensor, photons_per_pixel: float) -> torch.Tensor:
    """Scale clean intensities ``(..., H, W)`` so each frame has ``photons_per_pixel`` mean photons."""
    mean = y.mean(dim=(-2, -1), keepdim=True).clamp_min(torch.finfo(y.dtype).tiny)
    return y * (photons_per_pixel / mean)


class CameraModel:
    """Turns clean intensities into camera frames (ADU) and back into photon estimates."""

    def __init__(self, spec: CameraSpec) -> None:
        self.spec = spec

    def expose(
        self,
        y: torch.Tensor,
        generator: torch.Generator | None = None,
        photons_per_pixel: float | None = None,
    ) -> torch.Tensor:
        """One frame per CDP: Poisson photons, read noise, full well, offset, ADC, binning (ADU).

        Not differentiable (use :meth:`surrogate` for training). Noiseless when the budget is None.
        """
        budget = self.spec.photons_per_pixel if photons_per_pixel is None else photons_per_pixel
        if budget is None:
            return bin_pixels(y, self.spec.binning)
        return self.read_out(scale_to_photons(y.detach(), budget), generator)

    def read_out(
        self,
        photons: torch.Tensor,
        generator: torch.Generator | None = None,
        shot_noise: bool = True,
        quantise: bool = True,
    ) -> torch.Tensor:
        """The sensor for a map of mean photons per pixel: QE, Poisson, read noise, full well, offset,
        gain, ADC (unless ``quantise`` is False) and binning; returns ADU."""
        spec = self.spec
        mean_e = photons * spec.quantum_efficiency
        electrons = torch.poisson(mean_e, generator=generator) if shot_noise else mean_e
        if spec.read_noise_e > 0:
            electrons = electrons + spec.read_noise_e * torch.randn(
                electrons.shape, generator=generator, dtype=electrons.dtype, device=electrons.device
            )
        if spec.full_well_e is not None:
            electrons = electrons.clamp(max=spec.full_well_e)
        adu = electrons * spec.gain_adu_per_e + spec.dark_offset_adu
        if spec.adc_bits is not None and quantise:
            adu = torch.round(adu).clamp(0, spec.max_adu)
        return bin_pixels(adu, spec.binning)

    def to_photons(self, frames_adu: torch.Tensor) -> torch.Tensor:
        """Photon estimate per (binned) pixel from frames: remove offset, gain and QE."""
        spec = self.spec
        offset = spec.dark_offset_adu * spec.binning**2
        return (frames_adu - offset) / (spec.gain_adu_per_e * spec.quantum_efficiency)

    def surrogate(
        self,
        y: torch.Tensor,
        generator: torch.Generator | None = None,
        photons_per_pixel: float | torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Differentiable stand-in for :meth:`expose` followed by :meth:`to_photons` (in photons).

        Gaussian noise with the Poisson + read variance, reparameterised so gradients reach ``y``
        (and through it the masks); no quantisation or clipping. ``noise`` (standard normal, shape
        of ``y``) replaces the draw from ``generator``, so callers can fix each image's noise.
        """
        budget = self.spec.photons_per_pixel if photons_per_pixel is None else photons_per_pixel
        if budget is None:
            return bin_pixels(y, self.spec.binning)
        photons = scale_to_photons(y, budget)
        qe = self.spec.quantum_efficiency
        variance = photons / qe + (self.spec.read_noise_e / qe) ** 2
        if noise is None:
            noise = torch.randn(photons.shape, generator=generator, dtype=photons.dtype, device=photons.device)
        elif noise.shape != photons.shape:
            raise ValueError(f"noise must have the intensities' shape {tuple(photons.shape)}, got {tuple(noise.shape)}")
        return bin_pixels(photons + variance.clamp_min(0).sqrt() * noise, self.spec.binning)


def snr_db(clean: torch.Tensor, noisy: torch.Tensor) -> float:
    """Measured SNR in dB: ``10 log10(sum clean^2 / sum (noisy - clean)^2)`` (same units for both)."""
    signal = clean.double().square().sum()
    noise = (noisy.double() - clean.double()).square().sum()
    return float(10 * torch.log10(signal / noise))


def expected_snr_db(photons: torch.Tensor, read_noise_e: float = 0.0, quantum_efficiency: float = 1.0) -> float:
    """Expected SNR in dB of Poisson + read noise for mean photon maps ``photons`` (in photons)."""
    p = photons.double()
    variance = p / quantum_efficiency + (read_noise_e / quantum_efficiency) ** 2
    return float(10 * torch.log10(p.square().sum() / variance.sum()))


def photons_for_snr_db(y: torch.Tensor, snr_db_target: float, read_noise_e: float = 0.0) -> float:
    """Mean photons per pixel at which clean intensities shaped like ``y`` reach ``snr_db_target``.

    Solves ``s^2 sum y^2 = r (s sum y + n sigma^2)`` for the scale ``s`` (r = 10^(snr/10),
    ``n`` pixels, ``sigma`` read noise in e-, QE 1) and returns ``s * mean(y)``.
    """
    y = y.double()
    r = 10 ** (snr_db_target / 10)
    a, b, c = y.square().sum(), -r * y.sum(), -r * y.numel() * read_noise_e**2
    s = (-b + torch.sqrt(b * b - 4 * a * c)) / (2 * a)
    return float(s * y.mean())
