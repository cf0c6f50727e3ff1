"""Starting points for the iterative solvers."""

from __future__ import annotations

import math

import torch

from hil.physics.optics import CDPOperator


def random_start(
    op: CDPOperator,
    batch: int,
    generator: torch.Generator | None = None,
    phi_max_rad: float = math.pi,
) -> torch.Tensor:
    """Unit-modulus objects with i.i.d. uniform phases in [0, phi_max_rad]."""
    n = op.geometry.n
    real = op.masks.real.dtype
    phase = torch.rand((batch, n, n), generator=generator, dtype=real).to(op.masks.device) * phi_max_rad
    return torch.polar(torch.ones_like(phase), phase)


def spectral_start(
    op: CDPOperator, y: torch.Tensor, iterations: int = 50, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Leading eigenvector of ``A^H diag(y) A`` by power iteration, scaled to the measured energy."""
    x = random_start(op, y.shape[0], generator, phi_max_rad=2 * math.pi)
    for _ in range(iterations):
        x = op.A_linear_adjoint(op.expand(y) * op.A_linear(x))
        x = x / torch.linalg.vector_norm(x, dim=(-2, -1), keepdim=True).clamp_min(1e-30)
    energy = y.sum(dim=(1, 2, 3)).view(-1, 1, 1) / op.gram_diagonal().mean()
    return x * energy.sqrt()
