"""Fine-tune a bundle's decoder on measured CDPs of unknown samples by measurement consistency.

No ground truth is needed: the loss is the amplitude mismatch between the CDP the shared
operator predicts for the decoder's output and the measured one,

    L = mean((sqrt(A(x̂)) - sqrt(y))²) / mean(y),

with ``x̂`` the decoder's output object and ``y`` the captured CDP in model units (the amplitude form
is the variance-stabilised Poisson likelihood). ``A`` is the calibrated model the captures record
(:func:`hil.bench.reconstruct.load_capture`: the measured SLM response, the SLM-plane field, the
registered camera), so frames stay on the camera's own pixels and the decoder is told the bench it
runs on. The mask and the model stay fixed; only the decoder's weights move (Adam, few steps).
Captures are split into training and held-out sets; the weights with the lowest held-out loss are
kept (the unchanged decoder included, so the loss never gets worse), and a NEW bundle is written
with the provenance of the run.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from hil.bench.reconstruct import LoadedCapture, load_capture, single_precision
from hil.learning.bundle import Bundle, compatibility_problems, load_bundle, save_bundle
from hil.learning.coded_system import CodedSystem
from hil.physics.optics import CDPOperator


@dataclass(frozen=True)
class FinetuneSettings:
    """Optimiser and split: ``steps`` of Adam at ``lr`` on the training captures (full batch),
    the last ``holdout`` captures held out (at least one; all are used when there is only one)."""

    steps: int = 40
    lr: float = 1e-3
    holdout: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1 or not 0 < self.lr < 1 or self.holdout < 0:
            raise ValueError(f"need steps >= 1, 0 < lr < 1, holdout >= 0; got {self}")


@dataclass(frozen=True)
class FinetuneResult:
    """Held-out (``heldout_loss_*``) and training consistency before and after, best step (0: unchanged)."""

    heldout_loss_before: float
    heldout_loss_after: float
    train_loss_before: float
    train_loss_after: float
    best_step: int
    train_captures: tuple[str, ...]
    heldout_captures: tuple[str, ...]


@dataclass
class MeasuredSet:
    """Captured CDPs in model units ``(B, 1, height, width)`` with their photons per pixel ``(B,)`` and the
    calibrated operator they were recorded through (complex64)."""

    y: torch.Tensor
    photons: torch.Tensor
    paths: tuple[str, ...]
    op: CDPOperator


def _model_record(captured: LoadedCapture) -> tuple:
    """What identifies a capture's calibrated model (system, registration, field), for comparison."""
    model = captured.model
    registration = None if model.registration is None else json.dumps(model.registration.to_dict())
    field = None if model.field is None else np.asarray(model.field).tobytes()
    return model.system, registration, field


def load_measured(paths: list[Path], bundle: Bundle) -> MeasuredSet:
    """Read captures; each must be taken with the bundle's mask on a system the bundle fits
    (:func:`compatibility_problems`: a measured SLM response or radiometry is no mismatch), all through
    one calibrated model."""
    ys, photons, first = [], [], None
    for path in paths:
        captured = load_capture(path)
        problems = compatibility_problems(bundle.system_config, captured.system)
        if problems:
            raise ValueError(f"{path}: captured on another system than the bundle's: {'; '.join(problems)}")
        if not np.allclose(bundle.mask_rad[0].double().numpy(), captured.mask_rad.numpy(), atol=1e-6):
            raise ValueError(f"{path}: captured with another mask than the bundle's")
        if first is None:
            first = captured
        elif _model_record(captured) != _model_record(first):
            raise ValueError(
                f"{path}: recorded with another calibrated model (system, registration or field) than {paths[0]}: "
                "fine-tune on captures of one calibration"
            )
        ys.append(captured.y[0].float())
        photons.append(captured.photons_per_pixel)
    return MeasuredSet(
        torch.stack(ys), torch.tensor(photons, dtype=torch.float32), tuple(str(p) for p in paths),
        single_precision(first.op),
    )  # fmt: skip


def consistency_loss(system: CodedSystem, measured: MeasuredSet) -> torch.Tensor:
    """Mean amplitude mismatch (relative to the measured mean) of the decoder's output on ``measured``,
    through the calibrated operator the captures were recorded with."""
    op = measured.op
    predicted = op.A(system(op, measured.y, measured.photons).x)
    mismatch = (predicted.clamp_min(0).sqrt() - measured.y.clamp_min(0).sqrt()).square().mean(dim=(1, 2, 3))
    return (mismatch / measured.y.mean(dim=(1, 2, 3))).mean()


def _split(measured: MeasuredSet, holdout: int) -> tuple[MeasuredSet, MeasuredSet]:
    """(training, held-out): the last ``holdout`` captures held out; one capture (or ``holdout`` 0) is both."""
    count = len(measured.paths)
    if count == 1 or holdout == 0:
        return measured, measured

    def part(rows: slice) -> MeasuredSet:
        return MeasuredSet(measured.y[rows], measured.photons[rows], measured.paths[rows], measured.op)

    return part(slice(0, count - holdout)), part(slice(count - holdout, count))


def finetune(bundle: Bundle, captures: list[Path], settings: FinetuneSettings) -> tuple[CodedSystem, FinetuneResult]:
    """Fine-tune a copy of the bundle's decoder; returns it and the losses (the bundle is untouched)."""
    if not captures:
        raise ValueError("give at least one capture file")
    if settings.holdout >= len(captures) > 1:  # before any capture is read
        raise ValueError(f"holdout {settings.holdout} leaves no training capture out of {len(captures)}")
    torch.manual_seed(settings.seed)
    train_set, heldout_set = _split(load_measured(list(captures), bundle), settings.holdout)
    system = copy.deepcopy(bundle.system)
    system.mask_rad.requires_grad_(False)
    optimiser = torch.optim.Adam(system.decoder.parameters(), lr=settings.lr)

    def evaluate(measured: MeasuredSet) -> float:
        system.eval()
        with torch.no_grad():
            return float(consistency_loss(system, measured))

    heldout_before, train_before = evaluate(heldout_set), evaluate(train_set)
    best_loss, best_step, best_state = heldout_before, 0, copy.deepcopy(system.decoder.state_dict())
    for step in range(1, settings.steps + 1):
        system.train()
        optimiser.zero_grad()
        loss = consistency_loss(system, train_set)
        if not torch.isfinite(loss):
            break
        loss.backward()
        torch.nn.utils.clip_grad_norm_(system.decoder.parameters(), 1.0)
        optimiser.step()
        heldout = evaluate(heldout_set)
        if heldout < best_loss:
            best_loss, best_step, best_state = heldout, step, copy.deepcopy(system.decoder.state_dict())
    system.decoder.load_state_dict(best_state)
    system.eval()
    result = FinetuneResult(
        heldout_loss_before=heldout_before,
        heldout_loss_after=best_loss,
        train_loss_before=train_before,
        train_loss_after=evaluate(train_set),
        best_step=best_step,
        train_captures=train_set.paths,
        heldout_captures=heldout_set.paths,
    )
    return system, result


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def finetune_bundle(source: Path, captures: list[Path], out: Path, settings: FinetuneSettings) -> FinetuneResult:
    """Fine-tune ``source``'s decoder on ``captures`` and write a new bundle at ``out`` (never over an existing one)."""
    source, out = Path(source), Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"{out}: exists; fine-tuning writes a new bundle and never overwrites one")
    bundle = load_bundle(source)
    system, result = finetune(bundle, [Path(c) for c in captures], settings)
    if not math.isfinite(result.heldout_loss_after):
        raise ValueError("fine-tuning produced a non-finite loss; nothing written")
    save_bundle(
        out,
        system,
        bundle.train_config,
        bundle.system_config,
        metrics={"consistency_heldout": result.heldout_loss_after, "consistency_train": result.train_loss_after},
        finetune={
            "source_bundle": str(source.resolve()),
            "source_files_sha256": bundle.manifest.get("files"),
            "source_metrics": bundle.manifest.get("metrics"),
            "captures_sha256": {str(c): _sha256(Path(c)) for c in captures},
            "settings": asdict(settings),
            "result": asdict(result),
        },
    )
    return result
