"""Fine-tune a bundle's decoder on measured CDPs of unknown samples by measurement consistency.

No ground truth is needed: the loss is the amplitude mismatch between the CDP the shared
operator predicts for the decoder's output and the measured one,

    L = mean((sqrt(A(x̂)) - sqrt(y))²) / mean(y),

with ``x̂`` the decoder's output object and ``y`` the captured CDP in model units (the amplitude form
is the variance-stabilised Poisson likelihood). The mask and the SLM model stay fixed; only the
decoder's weights move (Adam, few steps). Captures are split into training and held-out sets;
the weights with the lowest held-out loss are kept (the unchanged decoder included, so the loss
never gets worse), and a NEW bundle is written with the provenance of the run.
"""

from __future__ import annotations

import copy
import hashlib
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from hil.bench.reconstruct import load_capture
from hil.learning.bundle import Bundle, load_bundle, save_bundle
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
    """Captured CDPs in model units ``(B, 1, Hd, Wd)`` with their photons per pixel ``(B,)``."""

    y: torch.Tensor
    photons: torch.Tensor
    paths: tuple[str, ...]


def load_measured(paths: list[Path], bundle: Bundle) -> MeasuredSet:
    """Read captures and check each was taken with the bundle's mask on the bundle's system."""
    ys, photons = [], []
    for path in paths:
        captured = load_capture(path)
        for part in ("optics", "slm"):
            if getattr(captured.system, part) != getattr(bundle.system_config, part):
                raise ValueError(f"{path}: captured with another {part} config than the bundle's")
        if not np.allclose(bundle.mask_rad[0].double().numpy(), captured.mask_rad.numpy(), atol=1e-6):
            raise ValueError(f"{path}: captured with another mask than the bundle's")
        ys.append(captured.y[0].float())
        photons.append(captured.photons_per_pixel)
    return MeasuredSet(torch.stack(ys), torch.tensor(photons, dtype=torch.float32), tuple(str(p) for p in paths))


def consistency_loss(system: CodedSystem, op: CDPOperator, measured: MeasuredSet) -> torch.Tensor:
    """Mean amplitude mismatch (relative to the measured mean) of the decoder's output on ``measured``."""
    predicted = op.A(system(op, measured.y, measured.photons).x)
    mismatch = (predicted.clamp_min(0).sqrt() - measured.y.clamp_min(0).sqrt()).square().mean(dim=(1, 2, 3))
    return (mismatch / measured.y.mean(dim=(1, 2, 3))).mean()


def _split(paths: list[Path], holdout: int) -> tuple[list[Path], list[Path]]:
    if len(paths) == 1 or holdout == 0:
        return paths, paths
    if holdout >= len(paths):
        raise ValueError(f"holdout {holdout} leaves no training capture out of {len(paths)}")
    return paths[:-holdout], paths[-holdout:]


def finetune(bundle: Bundle, captures: list[Path], settings: FinetuneSettings) -> tuple[CodedSystem, FinetuneResult]:
    """Fine-tune a copy of the bundle's decoder; returns it and the losses (the bundle is untouched)."""
    if not captures:
        raise ValueError("give at least one capture file")
    torch.manual_seed(settings.seed)
    train_paths, heldout_paths = _split(list(captures), settings.holdout)
    train_set, heldout_set = load_measured(train_paths, bundle), load_measured(heldout_paths, bundle)
    system = copy.deepcopy(bundle.system)
    system.mask_rad.requires_grad_(False)
    with torch.no_grad():
        op = system.operator()
    optimiser = torch.optim.Adam(system.decoder.parameters(), lr=settings.lr)

    def evaluate(measured: MeasuredSet) -> float:
        system.eval()
        with torch.no_grad():
            return float(consistency_loss(system, op, measured))

    heldout_before, train_before = evaluate(heldout_set), evaluate(train_set)
    best_loss, best_step, best_state = heldout_before, 0, copy.deepcopy(system.decoder.state_dict())
    for step in range(1, settings.steps + 1):
        system.train()
        optimiser.zero_grad()
        loss = consistency_loss(system, op, train_set)
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
