"""Classical phase-retrieval solvers on the shared CDP operator (the baselines to beat).

>>> x_hat = solve("raar", op, y, iterations=200)        # doctest: +SKIP
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Collection, Sequence

import torch

from hil.physics.optics import CDPOperator
from hil.solvers.alternating import Callback, error_reduction, hybrid_input_output, raar
from hil.solvers.constraints import NO_PRIOR, ObjectConstraint
from hil.solvers.initialisation import random_start, spectral_start
from hil.solvers.wirtinger import wirtinger_flow

SOLVERS: dict[str, Callable[..., torch.Tensor]] = {
    "er": error_reduction,
    "hio": hybrid_input_output,
    "raar": raar,
    "wf": wirtinger_flow,
}
INITS = ("random", "spectral", "backprojection")


def solve(
    name: str,
    op: CDPOperator,
    y: torch.Tensor,
    constraint: ObjectConstraint | None = None,
    iterations: int = 200,
    init: str | None = None,
    seed: int = 0,
    callback: Callback | None = None,
    checkpoints: Collection[int] | None = None,
    **options: float,
) -> torch.Tensor:
    """Run solver ``name`` on CDPs ``y`` (B, L, Hd, Wd) in model units; returns objects (B, n, n).

    ``constraint`` defaults to a phase-only object with the [0, π] range prior. ``init``
    defaults to the spectral start for WF and a random start in the prior's range otherwise.
    ``callback(iteration, objects)`` runs after each iteration in ``checkpoints`` (every one when None).
    """
    if name not in SOLVERS:
        raise ValueError(f"unknown solver {name!r}; choose from {sorted(SOLVERS)}")
    constraint = ObjectConstraint() if constraint is None else constraint
    init = init or ("spectral" if name == "wf" else "random")
    generator = torch.Generator().manual_seed(seed)
    if init == "random":
        lo, hi = constraint.phase_range_rad or (0.0, 2 * math.pi)
        x0 = random_start(op, y.shape[0], generator, phi_max_rad=hi - lo) * complex(math.cos(lo), math.sin(lo))
    elif init == "spectral":
        x0 = spectral_start(op, y, generator=generator)
    elif init == "backprojection":
        x0 = op.backproject(y)
    else:
        raise ValueError(f"unknown init {init!r}; choose from {INITS}")
    return SOLVERS[name](
        op, y, x0, constraint, iterations=iterations, callback=callback, checkpoints=checkpoints, **options
    )


def solve_at_checkpoints(
    name: str,
    op: CDPOperator,
    y: torch.Tensor,
    checkpoints: Sequence[int],
    constraint: ObjectConstraint | None = None,
    init: str | None = None,
    seed: int = 0,
    repeats: int = 1,
) -> dict[int, tuple[float, torch.Tensor]]:
    """A quality-versus-time curve: for each checkpoint, the seconds elapsed since the start of a run of
    :func:`solve` to ``max(checkpoints)`` iterations and the objects ``(B, n, n)`` at that iteration.

    ``repeats > 1``: one warm-up run to the first checkpoint, then ``repeats`` timed runs; the seconds are
    their median (the runs are deterministic, so the objects are the same in each).
    """
    wanted = set(checkpoints)

    def timed_run(last: int) -> dict[int, tuple[float, torch.Tensor]]:
        marks: dict[int, tuple[float, torch.Tensor]] = {}
        start = time.perf_counter()

        def callback(it: int, x: torch.Tensor) -> None:
            marks[it] = (time.perf_counter() - start, x)

        solve(name, op, y, constraint, iterations=last, init=init, seed=seed, callback=callback, checkpoints=wanted)
        return marks

    if repeats > 1:
        timed_run(min(wanted))
    runs = [timed_run(max(wanted)) for _ in range(max(repeats, 1))]
    return {it: (statistics.median(r[it][0] for r in runs), x) for it, (_, x) in sorted(runs[0].items())}


__all__ = ["NO_PRIOR", "SOLVERS", "ObjectConstraint", "solve", "solve_at_checkpoints", "random_start", "spectral_start"]
