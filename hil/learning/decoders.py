"""Learned decoders: CDP intensities -> object, through the shared operator.

:class:`UnrolledDecoder` (the product) unrolls RAAR: each stage is one RAAR step with the
measured sqrt-intensities and a learned relaxation ``beta``, whose object projection is a small
residual CNN on the phase (conditioned on the photon level, its residual gated by a learned
function of the photon level) followed by the range projection. The stages are followed by
gated data-consistency (error-reduction) steps whose weight is a learned function of the photon
level, so at high photon counts the output is pulled back onto the measured intensities even
for objects unlike the training set.

:class:`UNetDecoder` (ablation only): back-projection then a plain U-Net.

Both return a :class:`DecoderOutput` holding the object and named feature taps (``stage{k}``,
the last hidden layer of stage ``k``'s CNN; ``unet.enc{k}`` for the U-Net) that the
distillation losses compare.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from hil.physics.optics import CDPOperator
from hil.solvers.constraints import ObjectConstraint

DecoderKind = Literal["unrolled", "unet"]
LOG_PHOTONS_CAP = 5.0  # log10 photons per pixel fed to the network for noiseless data
LOG_PHOTONS_REF = 2.0  # centre of the photon-level conditioning (100 photons per pixel)
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
            stages: a cheap classical warm start (unrolled only), not backpropagated through.
        start_seed: seed of the fixed random start phase, as classical RAAR uses.
    """

    kind: DecoderKind = "unrolled"
    stages: int = 6
    channels: int = 16
    hidden_layers: int = 1
    refine_steps: int = 3
    warm_iterations: int = 0
    start_seed: int = 0

    def __post_init__(self) -> None:
        if self.stages < 1 or self.channels < 1 or min(self.hidden_layers, self.refine_steps, self.warm_iterations) < 0:
            raise ValueError(f"DecoderConfig needs stages, channels >= 1 and layers, refine_steps >= 0: {self}")


@dataclass
class DecoderOutput:
    """Reconstructed objects ``(B, n, n)`` complex and named feature taps ``(B, C, n, n)``."""

    x: torch.Tensor
    features: dict[str, torch.Tensor]

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
        x0 = torch.polar(torch.ones_like(self.start_phase), self.start_phase).expand(batch, -1, -1)
        z = op.A_linear(x0)
        for _ in range(self.cfg.warm_iterations):
            pm = op.modulus_projection(z, sqrt_y, SOFT_EPS)
            z = (
                WARM_BETA * z
                + (1 - 2 * WARM_BETA) * pm
                + WARM_BETA * op.A_linear(self._project(op.pseudo_inverse(2 * pm - z)))
            )
        if self.cfg.warm_iterations:
            z = z.detach()  # truncated backpropagation: gradients through many RAAR steps explode
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
        return DecoderOutput(x=x, features=features)


class UNetDecoder(nn.Module):
    """Ablation: back-projection ``[Re, Im, |.|, level]`` -> two-level U-Net -> phase in the range."""

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

        self.enc0, self.enc1, self.mid = block(4, c), block(c, 2 * c), block(2 * c, 4 * c)
        self.up1, self.dec1 = nn.ConvTranspose2d(4 * c, 2 * c, 2, stride=2), block(4 * c, 2 * c)
        self.up0, self.dec0 = nn.ConvTranspose2d(2 * c, c, 2, stride=2), block(2 * c, c)
        self.head = nn.Conv2d(c, 1, 1)
        self.pool = nn.MaxPool2d(2)

    def forward(
        self, op: CDPOperator, y: torch.Tensor, photons_per_pixel: torch.Tensor | float | None = None
    ) -> DecoderOutput:
        level = photon_level(photons_per_pixel, y.shape[0], y.device)
        b = op.backproject(y)
        scale = b.abs().mean(dim=(-2, -1), keepdim=True).clamp_min(1e-12)
        b = b / scale
        inp = torch.stack((b.real, b.imag, b.abs(), level.view(-1, 1, 1).expand_as(b.real)), dim=1).float()
        e0 = self.enc0(inp)
        e1 = self.enc1(self.pool(e0))
        m = self.mid(self.pool(e1))
        d1 = self.dec1(torch.cat((self.up1(m), e1), dim=1))
        d0 = self.dec0(torch.cat((self.up0(d1), e0), dim=1))
        lo, hi = self.constraint.phase_range_rad or (0.0, 2 * math.pi)
        phase = lo + (hi - lo) * torch.sigmoid(self.head(d0)[:, 0])
        x = torch.polar(torch.ones_like(phase), phase).to(op.masks.dtype)
        return DecoderOutput(x=x, features={"unet.enc0": e0, "unet.enc1": e1, "unet.mid": m})


def build_decoder(n: int, cfg: DecoderConfig, constraint: ObjectConstraint | None = None) -> nn.Module:
    """The decoder ``cfg.kind`` names, for ``n x n`` objects."""
    return (UnrolledDecoder if cfg.kind == "unrolled" else UNetDecoder)(n, cfg, constraint)


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def feature_pairs(student: list[str], teacher: list[str]) -> list[tuple[str, str]]:
    """Match each student tap to the teacher tap at the same relative depth (last to last)."""
    if not student or not teacher:
        return []
    ns, nt = len(student), len(teacher)
    return [(s, teacher[round((i + 1) * nt / ns) - 1]) for i, s in enumerate(student)]
