"""Wirtinger flow (Candès, Li & Soltanolkotabi 2015) with a step-size safeguard, batched."""

from __future__ import annotations

from collections.abc import Collection

import torch

from hil.physics.optics import CDPOperator, macro_upsample
from hil.solvers.alternating import Callback
from hil.solvers.constraints import NO_PRIOR, ObjectConstraint


def intensity_loss(op: CDPOperator, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-image ``1/(2m) sum (|A x|^2 - y)^2`` with ``m`` measurements per image."""
    return 0.5 * (op.A(x) - y).square().mean(dim=(1, 2, 3))


def wirtinger_flow(
    op: CDPOperator,
    y: torch.Tensor,
    x0: torch.Tensor,
    constraint: ObjectConstraint = NO_PRIOR,
    iterations: int = 500,
    step_max: float = 0.2,
    tau0: float = 330.0,
    callback: Callback | None = None,
    checkpoints: Collection[int] | None = None,
) -> torch.Tensor:
    """Gradient descent on :func:`intensity_loss` from ``x0`` (use :func:`spectral_start`).

    Step ``mu_t / ||x0||^2`` with ``mu_t = min(1 - exp(-t / tau0), step_max)``; the safeguard
    rejects a step that raises an image's loss and halves that image's step scale instead.
    With a constraint the iterate is projected after every accepted step (projected WF).
    """
    x = x0
    # Candès' scaling: measurement vectors of the non-unitary DFT (||a_r||^2 = number of unknowns).
    gain = y.shape[-2] * y.shape[-1] / op.n_masks
    norm0 = torch.linalg.vector_norm(x0, dim=(-2, -1)).square().clamp_min(1e-30).view(-1, 1, 1)
    scale = torch.ones_like(norm0)
    loss = intensity_loss(op, x, y)
    for it in range(1, iterations + 1):
        ax = op.A_linear(x)
        residual = op.A(x) - y  # on camera pixels; d/dz of the binned loss spreads it over each pixel's bins
        grad = op.A_linear_adjoint(macro_upsample(residual, op.geometry.binning) * ax) * gain
        mu = min(1.0 - float(torch.exp(torch.tensor(-it / tau0))), step_max)
        trial = constraint.project(x - (mu * scale / norm0) * grad)
        trial_loss = intensity_loss(op, trial, y)
        accept = trial_loss <= loss
        x = torch.where(accept.view(-1, 1, 1), trial, x)
        loss = torch.where(accept, trial_loss, loss)
        scale = torch.where(accept.view(-1, 1, 1), scale, 0.5 * scale)
        if callback is not None and (checkpoints is None or it in checkpoints):
            callback(it, x)
    return x
