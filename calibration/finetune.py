"""Fine-tune a bundle's decoder on measured CDPs of unknown samples, through the bench's calibrated model.

No ground truth is needed for the measured CDPs: their loss is the amplitude mismatch between the CDP the
operator predicts for the decoder's output and the measured one,

    L_c = mean((sqrt(A(x̂)) - sqrt(y))²) / mean(y),

with ``x̂`` the decoder's output object and ``y`` the captured CDP in model units (the amplitude form
is the variance-stabilised Poisson likelihood). ``A`` is the calibrated model the captures record
(:func:`hil.bench.reconstruct.load_capture`: the measured SLM response, the SLM-plane field, the
registered camera), so frames stay on the camera's own pixels and the decoder is told the bench it
runs on. Consistency alone cannot say which of the objects that explain a frame is right, so with
``simulated`` > 0 each step adds that many simulated pairs through the same calibrated model
(:mod:`calibration.simulated_pairs`: the bundle's training objects, the captures' photon range, the
sensor's noise) and their supervised phase loss (the training's :func:`reconstruction_loss`); the weights
are then chosen on a fixed validation set of simulated pairs (phase PSNR), since that is what fine-tuning
is for, and the measured held-out consistency is reported beside it. The mask and the model stay fixed;
only the decoder's weights move (Adam, few steps). The classical hand-over at high photon counts
(:class:`~hil.learning.decoders.DecoderConfig`) is left out while training and choosing, so every frame's
gradient reaches the decoder (the hand-over starts from the decoder's output when deployed). The unchanged
decoder competes too, so the selection criterion never gets worse, and a NEW bundle is written with the
provenance of the run.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from calibration.simulated_pairs import PairSource, SimulatedPairs
from hil.bench.reconstruct import LoadedCapture, load_capture, single_precision
from hil.common.config import to_mapping
from hil.common.metrics import phase_psnr
from hil.learning.bundle import Bundle, compatibility_problems, load_bundle, save_bundle
from hil.learning.coded_system import CodedSystem, without_handover
from hil.learning.distillation import reconstruction_loss
from hil.physics.optics import CDPOperator

VALIDATION_PAIRS = 16  # simulated pairs (validation split, fixed noise) that choose the weights


@dataclass(frozen=True)
class FinetuneSettings:
    """Optimiser and split: ``steps`` of Adam at ``lr`` on the training captures (full batch),
    the last ``holdout`` captures held out (at least one; all are used when there is only one);
    ``simulated`` fresh simulated pairs per step, their loss weighted by ``simulated_weight``."""

    steps: int = 40
    lr: float = 1e-3
    holdout: int = 1
    seed: int = 0
    simulated: int = 0
    simulated_weight: float = 1.0

    def __post_init__(self) -> None:
        if self.steps < 1 or not 0 < self.lr < 1 or self.holdout < 0 or self.simulated < 0:
            raise ValueError(f"need steps >= 1, 0 < lr < 1, holdout >= 0, simulated >= 0; got {self}")
        if not self.simulated_weight > 0:
            raise ValueError(f"simulated_weight must be > 0; got {self.simulated_weight}")


@dataclass(frozen=True)
class FinetuneResult:
    """Held-out (``heldout_loss_*``) and training consistency before and after, best step (0: unchanged), and
    with simulated pairs the validation pairs' mean phase PSNR (dB) before and after (else None)."""

    heldout_loss_before: float
    heldout_loss_after: float
    train_loss_before: float
    train_loss_after: float
    best_step: int
    train_captures: tuple[str, ...]
    heldout_captures: tuple[str, ...]
    simulated_psnr_db_before: float | None = None
    simulated_psnr_db_after: float | None = None


@dataclass
class MeasuredSet:
    """Captured CDPs in model units ``(B, 1, height, width)`` with their photons per pixel ``(B,)``, the
    calibrated operator they were recorded through (complex64), the first capture (its model), and the
    calibrated model's record (:func:`calibrated_model_record`)."""

    y: torch.Tensor
    photons: torch.Tensor
    paths: tuple[str, ...]
    op: CDPOperator
    first: LoadedCapture
    calibration: dict


def calibrated_model_record(captured: LoadedCapture) -> dict:
    """What identifies a capture's calibrated model, as JSON: the system config (measured response, crosstalk,
    radiometry), the registration, and the SLM-plane field's shape and SHA-256 (its values are in every capture)."""
    model = captured.model
    field = None if model.field is None else np.ascontiguousarray(model.field, dtype=np.complex128)
    return {
        "system": to_mapping(model.system),
        "registration": None if model.registration is None else model.registration.to_dict(),
        "field_shape": None if field is None else list(field.shape),
        "field_sha256": None if field is None else hashlib.sha256(field.tobytes()).hexdigest(),
    }


def load_measured(paths: list[Path], bundle: Bundle) -> MeasuredSet:
    """Read captures; each must be taken with the bundle's mask on a system the bundle fits
    (:func:`compatibility_problems`: a measured SLM response or radiometry is no mismatch), all through
    one calibrated model."""
    ys, photons, first, calibration = [], [], None, None
    for path in paths:
        captured = load_capture(path)
        problems = compatibility_problems(bundle.system_config, captured.system)
        if problems:
            raise ValueError(f"{path}: captured on another system than the bundle's: {'; '.join(problems)}")
        if not np.allclose(bundle.mask_rad[0].double().numpy(), captured.mask_rad.numpy(), atol=1e-6):
            raise ValueError(f"{path}: captured with another mask than the bundle's")
        record = calibrated_model_record(captured)
        if first is None:
            first, calibration = captured, record
        elif record != calibration:
            raise ValueError(
                f"{path}: recorded with another calibrated model (system, registration or field) than {paths[0]}: "
                "fine-tune on captures of one calibration"
            )
        ys.append(captured.y[0].float())
        photons.append(captured.photons_per_pixel)
    return MeasuredSet(
        torch.stack(ys), torch.tensor(photons, dtype=torch.float32), tuple(str(p) for p in paths),
        single_precision(first.op), first, calibration,
    )  # fmt: skip


def pair_source(bundle: Bundle, measured: MeasuredSet) -> PairSource:
    """Simulated pairs like ``measured``: through its calibrated model, over its photon range, with the
    calibrated sensor's read noise and the first capture's frame count."""
    first, camera = measured.first, measured.first.system.camera
    levels = measured.photons.double()
    return PairSource(
        first.model, first.op, bundle.train_config.data_spec(bundle.system_config),
        (float(levels.min()), float(levels.max())), first.frames, camera.read_noise_e / camera.quantum_efficiency,
    )  # fmt: skip


def supervised_loss(system: CodedSystem, op: CDPOperator, pairs: SimulatedPairs) -> torch.Tensor:
    """The training's reconstruction loss (minus the mean phase PSNR over 10) on simulated pairs."""
    return reconstruction_loss(system(op, pairs.y, pairs.photons).x, pairs.phase_rad, pairs.amplitude)


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
        y, photons, paths = measured.y[rows], measured.photons[rows], measured.paths[rows]
        return dataclasses.replace(measured, y=y, photons=photons, paths=paths)

    return part(slice(0, count - holdout)), part(slice(count - holdout, count))


def finetune(
    bundle: Bundle, captures: list[Path], settings: FinetuneSettings
) -> tuple[CodedSystem, FinetuneResult, dict]:
    """Fine-tune a copy of the bundle's decoder; returns it, the losses and the captures' calibrated-model record
    (the bundle is untouched)."""
    if not captures:
        raise ValueError("give at least one capture file")
    if settings.holdout >= len(captures) > 1:  # before any capture is read
        raise ValueError(f"holdout {settings.holdout} leaves no training capture out of {len(captures)}")
    torch.manual_seed(settings.seed)
    measured = load_measured(list(captures), bundle)
    train_set, heldout_set = _split(measured, settings.holdout)
    system = copy.deepcopy(bundle.system)
    system.mask_rad.requires_grad_(False)
    optimiser = torch.optim.Adam(system.decoder.parameters(), lr=settings.lr)
    source = pair_source(bundle, measured) if settings.simulated else None
    validation = None if source is None else source.pairs("val", VALIDATION_PAIRS, settings.seed)

    def evaluate(measured: MeasuredSet) -> float:
        system.eval()
        with torch.no_grad():
            return float(consistency_loss(system, measured))

    def simulated_psnr_db() -> float:
        system.eval()
        with torch.no_grad(), without_handover(system):
            estimate = system(measured.op, validation.y, validation.photons).phase_rad
        return float(phase_psnr(estimate, validation.phase_rad).mean())

    def score() -> float:
        """What chooses the weights (lower is better)."""
        return -simulated_psnr_db() if validation is not None else evaluate(heldout_set)

    heldout_before, train_before = evaluate(heldout_set), evaluate(train_set)
    psnr_before = None if validation is None else simulated_psnr_db()
    best_score, best_step, best_state = score(), 0, copy.deepcopy(system.decoder.state_dict())
    for step in range(1, settings.steps + 1):
        system.train()
        optimiser.zero_grad()
        with without_handover(system):
            loss = consistency_loss(system, train_set)
            if source is not None:
                pairs = source.pairs("train", settings.simulated, settings.seed * 100_003 + step)
                loss = loss + settings.simulated_weight * supervised_loss(system, measured.op, pairs)
        if not torch.isfinite(loss):
            break
        loss.backward()
        torch.nn.utils.clip_grad_norm_(system.decoder.parameters(), 1.0)
        optimiser.step()
        current = score()
        if current < best_score:
            best_score, best_step, best_state = current, step, copy.deepcopy(system.decoder.state_dict())
    system.decoder.load_state_dict(best_state)
    system.eval()
    result = FinetuneResult(
        heldout_loss_before=heldout_before,
        heldout_loss_after=evaluate(heldout_set),
        train_loss_before=train_before,
        train_loss_after=evaluate(train_set),
        best_step=best_step,
        train_captures=train_set.paths,
        heldout_captures=heldout_set.paths,
        simulated_psnr_db_before=psnr_before,
        simulated_psnr_db_after=None if validation is None else -best_score,
    )
    return system, result, measured.calibration


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def finetune_bundle(source: Path, captures: list[Path], out: Path, settings: FinetuneSettings) -> FinetuneResult:
    """Fine-tune ``source``'s decoder on ``captures`` and write a new bundle at ``out`` (never over an existing one)."""
    source, out = Path(source), Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"{out}: exists; fine-tuning writes a new bundle and never overwrites one")
    bundle = load_bundle(source)
    system, result, calibration = finetune(bundle, [Path(c) for c in captures], settings)
    if not math.isfinite(result.heldout_loss_after):
        raise ValueError("fine-tuning produced a non-finite loss; nothing written")
    save_bundle(
        out,
        system,
        bundle.train_config,
        bundle.system_config,
        metrics={
            "consistency_heldout": result.heldout_loss_after,
            "consistency_train": result.train_loss_after,
            "simulated_psnr_db": result.simulated_psnr_db_after,
        },
        finetune={
            "source_bundle": str(source.resolve()),
            "source_files_sha256": bundle.manifest.get("files"),
            "source_metrics": bundle.manifest.get("metrics"),
            "captures_sha256": {str(c): _sha256(Path(c)) for c in captures},
            "calibrated_model": calibration,
            "settings": asdict(settings),
            "result": asdict(result),
        },
    )
    return result
