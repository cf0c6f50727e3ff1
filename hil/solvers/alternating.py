"""Alternating-projection solvers (ER, HIO, RAAR) on the CDP operator, batched.

The iterate is the stack of detector fields ``z`` (B, L, Hd, Wd). Two sets:
``M = {z : |z| = sqrt(y)}`` (measurements) and ``S = {A x : x in C}`` (objects in the
constraint set C, reached through the least-squares inverse of the operator).
"""

from __future__ import annotations

from collections.abc import Callable, Collection

import torch

from hil.physics.optics import CDPOperator
from hil.solvers.constraints import ObjectConstraint

Callback = Callable[[int, torch.Tensor], None]
"""Called with (iteration, current objects) after each iteration in ``checkpoints`` (every one when None);
the current objects are computed only for those iterations."""


def _run(
    update: Callable[[torch.Tensor, torch.Tensor, Callable[[torch.Tensor], torch.Tensor]], torch.Tensor],
    op: CDPOperator,
    y: torch.Tensor,
    x0: torch.Tensor,
    constraint: ObjectConstraint,
    iterations: int,
    callback: Callback | None,
    shadow: bool,
    checkpoints: Collection[int] | None,
) -> torch.Tensor:
    sqrt_y = torch.sqrt(y.clamp_min(0)).to(op.masks.dtype)

    def estimate(z: torch.Tensor) -> torch.Tensor:
        return constraint.project(op.pseudo_inverse(op.modulus_projection(z, sqrt_y) if shadow else z))

    def project_s(z: torch.Tensor) -> torch.Tensor:
        return op.A_linear(constraint.project(op.pseudo_inverse(z)))

    z = op.A_linear(constraint.project(x0))
    for it in range(1, iterations + 1):
        z = update(z, op.modulus_projection(z, sqrt_y), project_s)
        if callback is not None and (checkpoints is None or it in checkpoints):
            callback(it, estimate(z))
    return estimate(z)


def error_reduction(
    op: CDPOperator,
    y: torch.Tensor,
    x0: torch.Tensor,
    constraint: ObjectConstraint,
    iterations: int = 200,
    callback: Callback | None = None,
    checkpoints: Collection[int] | None = None,
) -> torch.Tensor:
    """ER (Gerchberg-Saxton-Fienup): ``z <- P_S P_M z``. Returns objects (B, n, n)."""
    return _run(lambda z, pm, ps: ps(pm), op, y, x0, constraint, iterations, callback, False, checkpoints)


def hybrid_input_output(
    op: CDPOperator,
    y: torch.Tensor,
    x0: torch.Tensor,
    constraint: ObjectConstraint,
    iterations: int = 200,
    beta: float = 0.9,
    callback: Callback | None = None,
    checkpoints: Collection[int] | None = None,
) -> torch.Tensor:
    """HIO in its convex-set form: ``z <- z + P_S((1+β) P_M z - z) - β P_M z``."""
    return _run(
        lambda z, pm, ps: z + ps((1 + beta) * pm - z) - beta * pm,
        op,
        y,
        x0,
        constraint,
        iterations,
        callback,
        True,
        checkpoints,
    )


def raar(
    op: CDPOperator,
    y: torch.Tensor,
    x0: torch.Tensor,
    constraint: ObjectConstraint,
    iterations: int = 200,
    beta: float = 0.9,
    callback: Callback | None = None,
    checkpoints: Collection[int] | None = None,
) -> torch.Tensor:
    """RAAR (Luke 2005): ``z <- β z + (1 - 2β) P_M z + β P_S(2 P_M z - z)``."""
    return _run(
        lambda z, pm, ps: beta * z + (1 - 2 * beta) * pm + beta * ps(2 * pm - z),
        op,
        y,
        x0,
        constraint,
        iterations,
        callback,
        True,
        checkpoints,
    )
