"""Learned decoders: CDP intensities -> object, through the shared operator.

:class:`UnrolledDecoder` (the product) unrolls RAAR: each stage is one RAAR step with the
measured sqrt-intensities and a learned relaxation ``beta``, whose object projection is a small
residual CNN on the phase (conditioned on the photon level, its residual gated by a learned
function of the photon level) followed by the range projection. The stages are followed by
gated data-consistency (error-reduction) steps whose weight is a learned function of the photon
level, so at high photon counts the output is pulled back onto the measured intensities even
for objects unlike the training set.

:class:`UNetDecoder` (the ``cnn`` regime): back-projection then a plain U-Net, optionally beside
a classical RAAR warm start (``warm_iterations``, not backpropagated).

Both can hand over to classical RAAR at high photon counts (``handover_iterations`` RAAR
iterations started from the decoder's output for frames with at least ``handover_photons``
photons per pixel; off by default, set after training by
:func:`hil.learning.evaluation.calibrate_handover`).

Both return a :class:`DecoderOutput` holding the object and named feature taps that the
distillation losses compare by name (:func:`feature_pairs`): ``stage{k}`` (the last hidden layer
of learned stage ``k``, counted from the same classical warm start), ``est`` (the output phase as
``[cos φ, sin φ]``, whatever the decoder) and ``unet.*`` (U-Net only).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from hil.physics.optics import CDPOperator
from hil.solvers.alternating import raar
from hil.solvers.constraints import ObjectConstraint

DecoderKind = Literal["unrolled", "unet"]
LOG_PHOTONS_CAP = 5.0  # log10 photons per pixel fed to the network for noiseless data
LOG_PHOTONS_REF = 2.0  # centre of the photon-level conditioning (100 photons per pixel)
RESCUE_CHI2 = 2.0  # data misfit (:func:`data_misfit`) above which a decoder's output counts as refuted
MAX_STEP_RAD = math.pi / 2  # largest phase correction one CNN prox can make (tanh-bounded)
WARM_BETA = 0.9  # relaxation of the plain RAAR warm-start iterations
SOFT_EPS = 1e-2  # smoothing of |z| and of the phase's gradient near zeros, relative to the rms amplitude


class _SafeAngle(torch.autograd.Function):
    """``torch.angle`` whose gradient ``1j x / (|x|² + eps²)`` stays bounded near zeros of ``x``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, eps)
        return torch.angle(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        x, eps = ctx.saved_tensors
        return grad * x / (x.abs().square() + eps.square()) * 1j, None


def safe_angle(x: torch.Tensor) -> torch.Tensor:
    """Phase of complex objects ``(B, n, n)``; gradient bounded at pixels far below the rms amplitude."""
    rms = x.detach().abs().square().mean(dim=(-2, -1), keepdim=True).sqrt()
    return _SafeAngle.apply(x, SOFT_EPS * rms.clamp_min(1e-12))


@dataclass(frozen=True)
class DecoderConfig:
    """Size of a decoder.

    Attributes:
        kind: ``unrolled`` (RAAR stages + CNN prox) or ``unet`` (ablation).
        stages: unrolled RAAR stages (U-Net: ignored).
        channels: CNN width (U-Net: width of the first level).
        hidden_layers: channels x channels 3x3 convolutions per stage CNN (U-Net: ignored).
        refine_steps: final gated data-consistency steps (unrolled only).
        warm_iterations: plain RAAR iterations (beta 0.9, range projection, no CNN) before the learned
            stages: a cheap classical warm start, not backpropagated through (U-Net: its estimate is
            an extra input and the U-Net predicts a bounded correction of it; 0 = today's U-Net).
        start_seed: seed of the fixed random start phase, as classical RAAR uses.
        handover_photons, handover_iterations: frames with at least ``handover_photons`` photons per
            pixel (noiseless included) get ``handover_iterations`` classical RAAR iterations started
            from the decoder's output (0 iterations: never; not used in training).
        rescue_iterations: RAAR iterations in all (any handover included) for frames whose object the
            data refute after the decoder and any handover (:func:`data_misfit` above ``RESCUE_CHI2``:
            the decoder failed, e.g. on an object kind it never saw, and a handover from its output
            can stall in the same wrong basin); RAAR's result is kept where it fits the frame better
            (0: never; not used in training).
    """

    kind: DecoderKind = "unrolled"
    stages: int = 6
    channels: int = 16
    hidden_layers: int = 1
    refine_steps: int = 3
    warm_iterations: int = 0
    start_seed: int = 0
    handover_photons: float = 0.0
    handover_iterations: int = 0
    rescue_iterations: int = 500

    def __post_init__(self) -> None:
        if self.stages < 1 or self.channels < 1 or min(self.hidden_layers, self.refine_steps, self.warm_iterations) < 0:
            raise ValueError(f"DecoderConfig needs stages, channels >= 1 and layers, refine_steps >= 0: {self}")
        if min(self.handover_photons, self.handover_iterations, self.rescue_iterations) < 0:
            raise ValueError(f"DecoderConfig handover_photons, handover/rescue_iterations must be >= 0: {self}")


@dataclass
class DecoderOutput:
    """Reconstructed objects ``(B, n, n)`` complex, named feature taps ``(B, C, n, n)`` and the classical
    RAAR iterations run after the network on each frame ``(B,)``."""

    x: torch.Tensor
    features: dict[str, torch.Tensor]
    raar_iterations: torch.Tensor

    @property
    def phase_rad(self) -> torch.Tensor:
        return torch.angle(self.x)


def photon_level(photons_per_pixel: torch.Tensor | float | None, batch: int, device: torch.device) -> torch.Tensor:
    """``log10(photons per pixel) - LOG_PHOTONS_REF`` per image ``(B,)``; noiseless (None/inf) -> the cap."""
    if photons_per_pixel is None:
        p = torch.full((batch,), math.inf, device=device)
    else:
        p = torch.as_tensor(photons_per_pixel, dtype=torch.float32, device=device).expand(batch)
    return torch.log10(p.clamp_min(1e-3)).clamp_max(LOG_PHOTONS_CAP) - LOG_PHOTONS_REF


def start_field(start_phase: torch.Tensor, batch: int) -> torch.Tensor:
    """The fixed unit-modulus start ``(B, n, n)`` from a start phase ``(n, n)``."""
    return torch.polar(torch.ones_like(start_phase), start_phase).expand(batch, -1, -1)


def warm_start(op: CDPOperator, sqrt_y: torch.Tensor, x0: torch.Tensor, project, iterations: int) -> torch.Tensor:
    """``iterations`` plain RAAR steps (beta ``WARM_BETA``, soft modulus projection) from ``x0``;
    returns the detector iterate ``z`` (B, L, Hd, Wd), detached when ``iterations`` > 0."""
    z = op.A_linear(x0)
    for _ in range(iterations):
        pm = op.modulus_projection(z, sqrt_y, SOFT_EPS)
        z = WARM_BETA * z + (1 - 2 * WARM_BETA) * pm + WARM_BETA * op.A_linear(project(op.pseudo_inverse(2 * pm - z)))
    return z.detach() if iterations else z  # truncated backpropagation: gradients through many RAAR steps explode


def data_misfit(op: CDPOperator, y: torch.Tensor, x: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
    """Pearson misfit per frame ``(B,)``: mean of ``(y - λ)² / (λ + 1)`` over the pixels of every CDP, with
    ``y`` and the intensities ``λ`` that objects ``x`` predict both in photons at the photon ``level``.

    Poisson frames of the true object give ``λ / (λ + 1)`` on average (under 1); read noise of σ
    photons adds about ``σ² / (λ + 1)``. Much larger values mean ``x`` does not explain the frame."""
    photons = 10 ** (level.double() + LOG_PHOTONS_REF)
    lam = op.A(x).real.double()
    scale = photons.view(-1, 1, 1, 1) / y.double().mean(dim=(-2, -1), keepdim=True).clamp_min(1e-12)
    counts, lam = y.double() * scale, lam * scale
    return ((counts - lam).square() / (lam + 1)).mean(dim=(1, 2, 3))


def hand_over(
    cfg: DecoderConfig,
    constraint: ObjectConstraint,
    op: CDPOperator,
    y: torch.Tensor,
    x: torch.Tensor,
    level: torch.Tensor,
    rescue: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Objects after the classical stages and the RAAR iterations each frame got ``(B,)``.

    Frames at or above ``cfg.handover_photons`` continue with RAAR from the decoder's ``x``. With
    ``rescue``, frames whose object the data still refute (the decoder's, or the handover's when it
    stalled in a wrong basin) continue with RAAR to ``cfg.rescue_iterations`` in all, kept where
    RAAR's result fits the frame better (:func:`data_misfit`)."""
    iterations = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
    out = x
    if cfg.handover_iterations:
        chosen = level >= photon_level(cfg.handover_photons, 1, level.device)
        if bool(chosen.any()):
            out = out.clone()
            out[chosen] = raar(op, y[chosen], x[chosen].detach(), constraint, iterations=cfg.handover_iterations).to(
                x.dtype
            )
            iterations[chosen] = cfg.handover_iterations
    if rescue and cfg.rescue_iterations:
        with torch.no_grad():
            misfit = data_misfit(op, y, out.detach(), level)
            refuted = (misfit > RESCUE_CHI2) & (iterations < cfg.rescue_iterations)
            if bool(refuted.any()):
                out = out.clone()
            for done in iterations[refuted].unique().tolist():
                group = refuted & (iterations == done)
                tried = raar(op, y[group], out[group].detach(), constraint, iterations=cfg.rescue_iterations - done)
                better = data_misfit(op, y[group], tried, level[group]) < misfit[group]
                iterations[group] = cfg.rescue_iterations
                out[group.nonzero().squeeze(1)[better]] = tried[better].to(x.dtype)
    return out, iterations


def estimate_tap(x: torch.Tensor) -> torch.Tensor:
    """The ``est`` feature tap: ``[cos φ, sin φ]`` of objects ``x`` (B, n, n) -> (B, 2, n, n)."""
    phase = safe_angle(x)
    return torch.stack((torch.cos(phase), torch.sin(phase)), dim=1)


class ProxCNN(nn.Module):
    """Residual phase correction: [cos φ, sin φ, |x|, photon level] -> Δφ, through ``hidden_layers`` convs."""

    def __init__(self, channels: int, hidden_layers: int, out_channels: int = 1) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(4, channels, 3, padding=1), nn.ReLU()]
        for _ in range(hidden_layers):
            layers += [nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU()]
        self.body = nn.Sequential(*layers)
        self.head = nn.Conv2d(channels, out_channels, 3, padding=1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor, level: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Correction ``(B, out, n, n)`` and the last hidden features ``(B, C, n, n)``."""
        phase = safe_angle(x)
        level_map = level.view(-1, 1, 1).expand_as(phase)
        inp = torch.stack((torch.cos(phase), torch.sin(phase), x.abs(), level_map), dim=1)
        hidden = self.body(inp)
        return self.head(hidden), hidden


class PhotonGate(nn.Module):
    """Per-step weights in (0, 1): ``sigmoid(a_k + b_k * level)`` with learned ``a``, ``b``."""

    def __init__(self, steps: int, bias: float, slope: float) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.full((steps,), bias))
        self.slope = nn.Parameter(torch.full((steps,), slope))

    def forward(self, k: int, level: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.bias[k] + self.slope[k] * level).view(-1, 1, 1)


class UnrolledDecoder(nn.Module):
    """RAAR unrolled for ``stages`` steps with learned relaxation and CNN prox, then gated data consistency."""

    def __init__(self, n: int, cfg: DecoderConfig, constraint: ObjectConstraint | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.constraint = ObjectConstraint() if constraint is None else constraint
        out_channels = 1 if self.constraint.unit_modulus else 2
        self.prox = nn.ModuleList(ProxCNN(cfg.channels, cfg.hidden_layers, out_channels) for _ in range(cfg.stages))
        self.beta_logit = nn.Parameter(torch.full((cfg.stages,), math.log(0.9 / 0.1)))  # RAAR's usual beta = 0.9
        self.residual_gate = PhotonGate(cfg.stages, bias=0.0, slope=-1.0)  # shrinks as photons rise
        self.refine_gate = PhotonGate(max(cfg.refine_steps, 1), bias=0.0, slope=1.0)  # grows as photons rise
        lo, hi = self.constraint.phase_range_rad or (0.0, 2 * math.pi)
        start = torch.rand((n, n), generator=torch.Generator().manual_seed(cfg.start_seed)) * (hi - lo) + lo
        self.register_buffer("start_phase", start)

    def _project(self, x: torch.Tensor) -> torch.Tensor:
        """The constraint's projection (unit modulus, range) with :func:`safe_angle`."""
        magnitude = torch.ones_like(x.real) if self.constraint.unit_modulus else x.abs()
        return torch.polar(magnitude, self.constraint.clip_phase(safe_angle(x)))

    def _prox(self, k: int, x: torch.Tensor, level: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        delta, hidden = self.prox[k](x, level)
        gate = self.residual_gate(k, level) * MAX_STEP_RAD
        phase = self.constraint.clip_phase(safe_angle(x) + gate * torch.tanh(delta[:, 0]))
        if self.constraint.unit_modulus:
            magnitude = torch.ones_like(phase)
        else:
            magnitude = x.abs() * torch.exp(gate / MAX_STEP_RAD * torch.tanh(delta[:, 1]))
        return torch.polar(magnitude, phase), hidden

    def forward(
        self, op: CDPOperator, y: torch.Tensor, photons_per_pixel: torch.Tensor | float | None = None
    ) -> DecoderOutput:
        """Objects from CDPs ``y`` (B, L, Hd, Wd) in model units; ``photons_per_pixel`` per frame (None: noiseless)."""
        batch = y.shape[0]
        level = photon_level(photons_per_pixel, batch, y.device)
        sqrt_y = torch.sqrt(y.clamp_min(0)).to(op.masks.dtype)
        x0 = start_field(self.start_phase, batch)
        z = warm_start(op, sqrt_y, x0, self._project, self.cfg.warm_iterations)
        features = {}
        for k in range(self.cfg.stages):
            beta = torch.sigmoid(self.beta_logit[k])
            pm = op.modulus_projection(z, sqrt_y, SOFT_EPS)
            x, features[f"stage{k}"] = self._prox(k, op.pseudo_inverse(2 * pm - z), level)
            z = beta * z + (1 - 2 * beta) * pm + beta * op.A_linear(x)
        # the last prox output, not RAAR's shadow estimate, which would re-impose the noisy moduli;
        # the gated steps below restore data consistency as far as the photon level warrants
        for t in range(self.cfg.refine_steps):
            fitted = self._project(op.pseudo_inverse(op.modulus_projection(op.A_linear(x), sqrt_y, SOFT_EPS)))
            w = self.refine_gate(t, level)
            step = safe_angle(fitted * x.conj())
            magnitude = x.abs() + w * (fitted.abs() - x.abs())
            x = self._project(torch.polar(magnitude, safe_angle(x) + w * step))
        features["est"] = estimate_tap(x)
        x, iterations = hand_over(self.cfg, self.constraint, op, y, x, level, rescue=not self.training)
        return DecoderOutput(x=x, features=features, raar_iterations=iterations)


class UNetDecoder(nn.Module):
    """The ``cnn`` regime: back-projection ``[Re, Im, |.|, level]`` (plus, with ``warm_iterations``, the
    warm start's ``[cos φ, sin φ]``) -> two-level U-Net -> phase in the range (a bounded correction
    of the warm start's phase when there is one)."""

    def __init__(self, n: int, cfg: DecoderConfig, constraint: ObjectConstraint | None = None) -> None:
        super().__init__()
        if n % 4:
            raise ValueError(f"UNetDecoder needs n divisible by 4, got {n}")
        self.cfg = cfg
        self.constraint = ObjectConstraint() if constraint is None else constraint
        c = cfg.channels

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(), nn.Conv2d(cout, cout, 3, padding=1), nn.ReLU()
            )

        self.enc0 = block(6 if cfg.warm_iterations else 4, c)
        self.enc1, self.mid = block(c, 2 * c), block(2 * c, 4 * c)
        self.up1, self.dec1 = nn.ConvTranspose2d(4 * c, 2 * c, 2, stride=2), block(4 * c, 2 * c)
        self.up0, self.dec0 = nn.ConvTranspose2d(2 * c, c, 2, stride=2), block(2 * c, c)
        self.head = nn.Conv2d(c, 1, 1)
        self.pool = nn.MaxPool2d(2)
        if cfg.warm_iterations:  # start as the warm start itself: the correction begins at zero
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)
            lo, hi = self.constraint.phase_range_rad or (0.0, 2 * math.pi)
            start = torch.rand((n, n), generator=torch.Generator().manual_seed(cfg.start_seed)) * (hi - lo) + lo
            self.register_buffer("start_phase", start)

    def _project(self, x: torch.Tensor) -> torch.Tensor:
        return torch.polar(torch.ones_like(x.real), self.constraint.clip_phase(safe_angle(x)))

    def forward(
        self, op: CDPOperator, y: torch.Tensor, photons_per_pixel: torch.Tensor | float | None = None
    ) -> DecoderOutput:
        level = photon_level(photons_per_pixel, y.shape[0], y.device)
        b = op.backproject(y)
        scale = b.abs().mean(dim=(-2, -1), keepdim=True).clamp_min(1e-12)
        b = b / scale
        channels = [b.real, b.imag, b.abs(), level.view(-1, 1, 1).expand_as(b.real)]
        if self.cfg.warm_iterations:
            sqrt_y = torch.sqrt(y.clamp_min(0)).to(op.masks.dtype)
            z = warm_start(
                op, sqrt_y, start_field(self.start_phase, y.shape[0]), self._project, self.cfg.warm_iterations
            )
            warm_phase = self.constraint.clip_phase(
                torch.angle(op.pseudo_inverse(op.modulus_projection(z, sqrt_y, SOFT_EPS)))
            )
            channels += [torch.cos(warm_phase), torch.sin(warm_phase)]
        inp = torch.stack(channels, dim=1).float()
        e0 = self.enc0(inp)
        e1 = self.enc1(self.pool(e0))
        m = self.mid(self.pool(e1))
        d1 = self.dec1(torch.cat((self.up1(m), e1), dim=1))
        d0 = self.dec0(torch.cat((self.up0(d1), e0), dim=1))
        lo, hi = self.constraint.phase_range_rad or (0.0, 2 * math.pi)
        if self.cfg.warm_iterations:
            phase = self.constraint.clip_phase(warm_phase + MAX_STEP_RAD * torch.tanh(self.head(d0)[:, 0]))
        else:
            phase = lo + (hi - lo) * torch.sigmoid(self.head(d0)[:, 0])
        x = torch.polar(torch.ones_like(phase), phase).to(op.masks.dtype)
        features = {"unet.enc0": e0, "unet.enc1": e1, "unet.mid": m, "est": estimate_tap(x)}
        x, iterations = hand_over(self.cfg, self.constraint, op, y, x, level, rescue=not self.training)
        return DecoderOutput(x=x, features=features, raar_iterations=iterations)


def build_decoder(n: int, cfg: DecoderConfig, constraint: ObjectConstraint | None = None) -> nn.Module:
    """The decoder ``cfg.kind`` names, for ``n x n`` objects."""
    return (UnrolledDecoder if cfg.kind == "unrolled" else UNetDecoder)(n, cfg, constraint)


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def feature_pairs(student: list[str], teacher: list[str]) -> list[tuple[str, str]]:
    """Pair taps that mean the same thing: equal names (``stage{k}``: the k-th learned stage after the
    same classical warm start; ``est``: the output estimate), in the student's order."""
    return [(name, name) for name in student if name in teacher]
