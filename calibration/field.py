"""The SLM-plane field: illumination amplitude and static aberration over the mask, by multi-mask phase retrieval.

With the sample out of the beam, the bench records the CDPs of ``L`` known masks (uniform random phases from a
seed, optionally a flat mask). The field ``g`` (complex, one value per mask pixel) is then the *object* of a
multi-mask phase retrieval on the calibrated model without a field,
``BenchModel(system, registration).operator(masks)``, whose camera pixels it must reproduce:
``y_l = c |D F(t_l g)|²``. No unit-modulus or phase-range prior applies (the field has a free amplitude); the
frames' common scale ``c`` (one exposure, one laser power) is absorbed into ``|g|``, which is normalised to a
maximum of 1 afterwards. The solver is RAAR without a prior from a spectral start, polished by L-BFGS on the
amplitudes of the camera pixels the model covers completely (its detector window ends at the first macro-pixel
order; a pixel beyond it sees light the model does not have).

The fit covers the ROI plus ``margin`` mask pixels on each side, where the SLM shows zero phase in every frame:
light that passes the SLM outside the ROI (an iris larger than the ROI) reaches the camera too, and without
those pixels the fit would fold it into the ROI's field. The whole ``(n + 2 margin)`` field is returned:
:class:`~hil.physics.bench_model.BenchModel` multiplies the masks by its ROI part and adds the margin's light
as a fixed detector field (it interferes with the ROI's: about 1 % of the power, but leaving it out doubled the
held-out residual on the fixture bench, 11 % -> 19 %); the power outside the ROI is reported.

Two masks are held out of the fit; the returned field's prediction of their frames (camera pixels, the
calibrated model the rest of the project uses) must correlate at least :data:`MIN_HELDOUT_CORRELATION` with
them, otherwise the result is refused rather than written.

A phase tilt of ``g`` shifts every CDP alike, so it trades against the registration's shift: with a measured
registration the tilt in the field compensates its shift error (docs/calibration.md).

Pixel crosstalk (``slm.crosstalk_sigma_px``, the Gaussian blur of the liquid crystal's retardance) changes every
mask's CDP in a mask-dependent way, so it is measured from the same frames (``fit_crosstalk``): golden-section
search over ``[0, MAX_CROSSTALK_PX]`` for the sigma whose field predicts the held-out masks best (lowest
residual). Each trial polishes one common start (a full fit at :data:`CROSSTALK_START_PX`) by a short L-BFGS
instead of fitting from scratch (spectral start and RAAR each time): the held-out residual at the fixture's
0.6 px is the cold fit's to 1e-4, and the search finds 0.625 / 0.907 px against the hidden 0.6 / 0.9.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from calibration.frame_checks import (
    DarkCheck,
    camera_ceiling_adu,
    refuse_lit_dark,
    refuse_no_signal,
    refuse_saturated,
)
from calibration.verify import agreement
from hil.bench.bench import Bench
from hil.bench.frame_log import FrameLog
from hil.bench.signals import check_dark
from hil.common.provenance import record
from hil.physics.bench_model import BenchModel
from hil.physics.registration import Registration
from hil.physics.slm_field import SLMField, central
from hil.physics.system import SystemConfig
from hil.solvers.alternating import raar
from hil.solvers.constraints import NO_PRIOR
from hil.solvers.initialisation import spectral_start

MIN_HELDOUT_CORRELATION = 0.9  # held-out masks: partial correlation of prediction and frame (shared pattern removed)
HELD_OUT = 2  # masks kept out of the fit
RAAR_ITERATIONS = 50
POLISH_ITERATIONS = 100  # L-BFGS iterations on the covered camera pixels
MAX_CROSSTALK_PX = 1.5  # largest crosstalk sigma (SLM pixels) the search considers
CROSSTALK_STEPS = 8  # golden-section evaluations (the bracket shrinks to 0.618**6 of its width: ±0.04 px)
CROSSTALK_START_PX = 0.75  # the crosstalk search's common start is fitted at this sigma (the bracket's middle)
SEARCH_POLISH_ITERATIONS = 30  # L-BFGS iterations of the search's start and of each trial (then POLISH_ITERATIONS more)


def field_masks(n: int, count: int, seed: int = 0, flat: bool = False) -> np.ndarray:
    """``count`` masks ``(count, n, n)`` of uniform random phases in [0, 2π) from ``seed``; the first is
    flat (zero phase) when ``flat``."""
    masks = np.random.default_rng(seed).uniform(0, 2 * math.pi, (count, n, n))
    if flat:
        masks[0] = 0
    return masks


def widened(model: BenchModel, margin: int) -> BenchModel:
    """The same bench with the mask grown by ``margin`` mask pixels on each side (no field): the detector
    grid is finer by ``(n + 2 margin) / n`` over the same angles, so the registration is rescaled about the
    zero frequency (index ``side // 2``)."""
    if margin == 0:
        return BenchModel(model.system, model.registration)
    system, registration = model.system, model.registration
    n, wide = system.optics.n, system.optics.n + 2 * margin
    system = dataclasses.replace(
        system,
        optics=dataclasses.replace(system.optics, n=wide),
        data=dataclasses.replace(system.data, n=wide),
    )
    shape = system.geometry().detector_shape
    matrix = np.asarray(registration.camera_to_model, dtype=np.float64)
    centre, centre_wide = np.array(registration.model_shape[::-1]) // 2, np.array(shape[::-1]) // 2
    ratio = wide / n
    rescaled = np.hstack([ratio * matrix[:, :2], (centre_wide + ratio * (matrix[:, 2] - centre))[:, None]])
    return BenchModel(system, Registration(rescaled, shape, registration.camera_shape, registration.correlation))


def covered_pixels(model: BenchModel) -> torch.Tensor:
    """Camera pixels ``camera_shape`` (bool) whose whole footprint lies on the model's detector grid."""
    detector = model.detector
    area = detector.forward(torch.ones(detector.detector_shape, dtype=torch.float64))
    return area >= (1 - 1e-6) * area.max()


def fit_field(
    model: BenchModel,
    masks_rad: np.ndarray,
    frames: np.ndarray,
    margin: int = 1,
    seed: int = 0,
    polish_iterations: int = POLISH_ITERATIONS,
    start: np.ndarray | None = None,
) -> np.ndarray:
    """The field ``(n + 2 margin, n + 2 margin)`` (complex, in sqrt(frame units)) whose CDPs through ``model``
    (a registered bench model without a field) match the dark-subtracted ``frames`` ``(L, *camera_shape)`` of
    ``masks_rad`` ``(L, n, n)``; the margin's masks are zero phase, as the SLM shows outside its ROI. From a
    spectral start and RAAR, or, given a wide field ``start``, polished from there."""
    wide = widened(model, margin)
    op = wide.operator(np.pad(masks_rad, ((0, 0), (margin, margin), (margin, margin))))
    y = torch.from_numpy(np.clip(frames, 0, None).astype(np.float64))[None]
    if start is None:
        spectral = spectral_start(op, y, generator=torch.Generator().manual_seed(seed))
        estimate = raar(op, y, spectral, NO_PRIOR, iterations=RAAR_ITERATIONS).detach().requires_grad_(True)
    else:
        estimate = torch.from_numpy(np.array(start, dtype=np.complex128))[None].requires_grad_(True)
    covered, sqrt_y = covered_pixels(wide).to(torch.float64), y.sqrt()
    floor = 1e-9 * float(y.mean())  # keeps the square root differentiable at dark pixels
    optimiser = torch.optim.LBFGS(
        [estimate], lr=1, max_iter=polish_iterations, history_size=20, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = (((op.A(estimate) + floor).sqrt() - sqrt_y).square() * covered).sum()
        loss.backward()
        return loss

    optimiser.step(closure)
    return estimate.detach()[0].numpy()


def crop(wide_field: np.ndarray, margin: int) -> np.ndarray:
    """The ROI's ``(n, n)`` part of a field fitted with ``margin``."""
    return central(wide_field, wide_field.shape[-1] - 2 * margin)


def field_metrics(
    model: BenchModel, masks_rad: np.ndarray, frames: np.ndarray, wide_field: np.ndarray, margin: int, held_out: int
) -> dict[str, float]:
    """Metrics of a fit: ``fit_residual_rel``, the relative RMS residual of the fitted masks' frames on the
    camera pixels the (widened) model covers, and ``covered_pixel_fraction``; ``heldout_correlation`` and
    ``heldout_residual_rel``, the held-out masks' frames against the field in ``model`` on all camera
    pixels (partial: the pattern every random mask shares, the fitted masks' mean prediction, removed);
    ``outside_roi_power_fraction``, the fitted power in the margin."""
    fitted = slice(0, len(masks_rad) - held_out)
    held = slice(len(masks_rad) - held_out, len(masks_rad))
    wide_model = widened(model, margin)
    wide = wide_model.operator(np.pad(masks_rad[fitted], ((0, 0), (margin, margin), (margin, margin))))
    covered = covered_pixels(wide_model).numpy()
    fit = agreement(frames[fitted][:, covered], wide.A(torch.from_numpy(wide_field)[None])[0].numpy()[:, covered])
    calibrated = dataclasses.replace(model, field=wide_field)
    n = model.system.optics.n
    unit = torch.ones((1, n, n), dtype=torch.complex128)
    shared = calibrated.operator(masks_rad[fitted]).A(unit)[0].mean(dim=0).numpy()
    predicted = calibrated.operator(masks_rad[held]).A(unit)[0].numpy()
    check = agreement(frames[held], predicted, np.broadcast_to(shared, predicted.shape))
    power = np.abs(wide_field) ** 2
    return {
        "fit_residual_rel": fit.residual_rel,
        "heldout_correlation": check.correlation,
        "heldout_residual_rel": check.residual_rel,
        "outside_roi_power_fraction": float(1 - crop(power, margin).sum() / power.sum()),
        "covered_pixel_fraction": float(covered.mean()),
    }


def record_frames(
    bench: Bench, log: FrameLog, masks_rad: np.ndarray, frames: int = 1, dark_frames: int = 4
) -> tuple[np.ndarray, DarkCheck]:
    """Dark frames, then ``frames`` lit frames of each mask ``(L, n, n)`` into ``log`` (sample out of the beam);
    returns the dark-subtracted mean frames ``(L, height, width)`` and the dark check. Raises ``ValueError``
    on dark frames that are lit or off the calibrated sensor, saturated frames, or no signal."""
    system = bench.spec.system
    log.store("masks_rad", masks_rad)
    ceiling = camera_ceiling_adu(bench.camera)
    bench.show_mask(masks_rad[0])
    bench.light_off()
    dark = np.stack([log.add("dark", bench.capture()) for _ in range(dark_frames)])
    check_dark(dark, system.camera)
    lit = []
    with bench.lit():
        for index, mask in enumerate(masks_rad):
            bench.show_mask(mask)
            shots = np.stack([log.add("lit", bench.capture(), mask_index=index) for _ in range(frames)])
            refuse_saturated(shots, ceiling, f"field mask {index}")
            lit.append(shots.mean(axis=0))
    dark_ok = refuse_lit_dark(dark, lit[0])
    refuse_no_signal(np.mean(lit, axis=0), dark, "field frames (mean over the masks)")
    return np.stack(lit) - dark.mean(axis=0), dark_ok


def check_prerequisites(system: SystemConfig, registration: Registration | None) -> None:
    """Refuse (``ValueError``) without a registration or without a measured SLM response (``slm.gamma``)."""
    if registration is None:
        raise ValueError(
            "the field calibration needs the camera registration: run `hil calibrate geometry --update-bench` "
            "(or name one with --registration)"
        )
    if not system.slm.gamma:
        raise ValueError(
            "the field calibration needs the measured SLM response (slm.gamma is empty in the system file): run "
            "`hil calibrate slm-response --update-system` first"
        )


def with_crosstalk(system: SystemConfig, sigma_px: float) -> SystemConfig:
    return dataclasses.replace(system, slm=dataclasses.replace(system.slm, crosstalk_sigma_px=float(sigma_px)))


def fit_crosstalk(
    model: BenchModel, masks_rad: np.ndarray, frames: np.ndarray, margin: int, seed: int
) -> tuple[float, np.ndarray, dict[str, float]]:
    """(crosstalk sigma in SLM pixels, wide field, metrics) minimising the held-out residual: golden section over
    ``[0, MAX_CROSSTALK_PX]`` whose trial fits are short polishes from one common start (the field fitted at
    :data:`CROSSTALK_START_PX` from a spectral start and RAAR); the kept sigma's field is polished in full."""
    fitted = len(masks_rad) - HELD_OUT
    fields: dict[float, np.ndarray] = {}
    residuals: dict[float, float] = {}

    def trial_model(sigma: float) -> BenchModel:
        return dataclasses.replace(model, system=with_crosstalk(model.system, sigma))

    def fit(sigma: float, iterations: int, start: np.ndarray | None) -> np.ndarray:
        return fit_field(trial_model(sigma), masks_rad[:fitted], frames[:fitted], margin, seed, iterations, start)

    start = fit(CROSSTALK_START_PX, SEARCH_POLISH_ITERATIONS, None)

    def residual(sigma: float) -> float:
        fields[sigma] = fit(sigma, SEARCH_POLISH_ITERATIONS, start)
        metrics = field_metrics(trial_model(sigma), masks_rad, frames, fields[sigma], margin, HELD_OUT)
        residuals[sigma] = metrics["heldout_residual_rel"]
        return residuals[sigma]

    ratio = (math.sqrt(5) - 1) / 2
    low, high = 0.0, MAX_CROSSTALK_PX
    a, b = high - ratio * (high - low), low + ratio * (high - low)
    fa, fb = residual(a), residual(b)
    for _ in range(CROSSTALK_STEPS - 2):
        if fa <= fb:
            high, b, fb = b, a, fa
            a = high - ratio * (high - low)
            fa = residual(a)
        else:
            low, a, fa = a, b, fb
            b = low + ratio * (high - low)
            fb = residual(b)
    best = min(residuals, key=residuals.get)
    wide = fit(best, POLISH_ITERATIONS, fields[best])
    return best, wide, field_metrics(trial_model(best), masks_rad, frames, wide, margin, HELD_OUT)


def measure_field(
    bench: Bench,
    log: FrameLog,
    registration: Registration | None,
    masks: int = 12,
    flat: bool = False,
    seed: int = 0,
    frames: int = 1,
    dark_frames: int = 4,
    margin: int = 1,
    crosstalk: bool = False,
) -> SLMField:
    """Show ``masks`` known masks (sample out of the beam), record dark and lit frames into ``log``, fit the
    field on all but :data:`HELD_OUT` of them and check it on those; with ``crosstalk``, also measure the
    crosstalk sigma (its metrics then hold ``crosstalk_sigma_px``).

    Raises ``ValueError`` without a registration or a measured SLM response, on dark frames that are lit or
    do not match the calibrated sensor, saturated frames, no signal, or a held-out correlation below
    :data:`MIN_HELDOUT_CORRELATION`.
    """
    system = bench.spec.system
    check_prerequisites(system, registration)
    if masks < HELD_OUT + 4 or frames < 1 or dark_frames < 2 or not 0 <= margin <= system.optics.n:
        raise ValueError(
            f"need masks >= {HELD_OUT + 4}, frames >= 1, dark_frames >= 2 and 0 <= margin <= n; "
            f"got {masks}, {frames}, {dark_frames}, {margin}"
        )
    model = BenchModel(system, registration)
    shown = field_masks(system.optics.n, masks, seed, flat)
    signal, dark_ok = record_frames(bench, log, shown, frames, dark_frames)
    if signal.shape[1:] != tuple(model.camera_shape):
        raise ValueError(
            f"frames are {signal.shape[1:]} (height, width); the registration is for {tuple(model.camera_shape)}"
        )
    fitted = len(shown) - HELD_OUT
    if crosstalk:
        sigma, wide_field, metrics = fit_crosstalk(model, shown, signal, margin, seed)
        metrics = {**metrics, "crosstalk_sigma_px": sigma}
    else:
        wide_field = fit_field(model, shown[:fitted], signal[:fitted], margin, seed)
        metrics = field_metrics(model, shown, signal, wide_field, margin, HELD_OUT)
    settings = {"masks": masks, "flat": flat, "seed": seed, "frames": frames, "dark_frames": dark_frames}
    log.set_result({**metrics, **settings, "margin": margin, "dark_check": dark_ok.to_dict()})
    if not metrics["heldout_correlation"] >= MIN_HELDOUT_CORRELATION:
        raise ValueError(
            f"the fitted field predicts the {HELD_OUT} held-out masks with correlation "
            f"{metrics['heldout_correlation']:.3f} (< {MIN_HELDOUT_CORRELATION}): the model does not describe this "
            "bench (registration, SLM response, crosstalk, sample left in the beam); nothing written"
        )
    provenance = record(
        {**settings, "margin": margin, "held_out": HELD_OUT},
        seed=seed,
        procedure="hil calibrate field",
        registration=registration.to_dict(),
        frames_file=str(log.path),
    )
    return SLMField.from_complex(wide_field, provenance=provenance, metrics=metrics)
