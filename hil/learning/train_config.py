"""Training run configuration (``configs/train_*.yaml``): role, system, data, decoder, noise, distillation, schedule."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from hil.common.config import from_mapping, load_yaml
from hil.common.provenance import REPO_ROOT
from hil.data.datasets import DataSpec
from hil.learning.coded_system import Budget, Role
from hil.learning.decoders import DecoderConfig
from hil.learning.distillation import DistillConfig
from hil.physics.system import SystemConfig, load_system


@dataclass(frozen=True)
class NoiseConfig:
    """Training noise: photons per pixel of the single-snapshot budget, log-uniform per image.

    ``budget`` says how a multi-mask system's frames share it (see :func:`hil.learning.coded_system.photons_per_frame`).
    """

    photons_min: float = 3.0
    photons_max: float = 1000.0
    budget: Budget = "per_snapshot"

    def __post_init__(self) -> None:
        if not 0 < self.photons_min <= self.photons_max:
            raise ValueError(f"need 0 < photons_min <= photons_max, got {self.photons_min}, {self.photons_max}")


@dataclass(frozen=True)
class TrainConfig:
    """One training run (``configs/train_*.yaml``).

    Attributes:
        role: ``teacher`` (``masks`` continuous masks) or ``student`` (one mask through the SLM model).
        system: path of the physical system config (optics, SLM, camera; its data section is
            overridden by ``sources``).
        n: object size overriding the system's ``optics.n`` and ``data.n`` (None: keep it).
        sources: training object sources (keep the unseen kinds out of it).
        masks: number of masks (teacher only; a student has one).
        steps: optimiser steps (the fixed budget); ``time_budget_s`` stops earlier if given.
        batch_size, lr, mask_lr: Adam with a cosine schedule over ``steps``.
        val_every, val_images, patience: validation PSNR every ``val_every`` steps on a fixed
            set; stop after ``patience`` validations without improvement (0: never).
        checkpoint_every: steps between checkpoints (resume picks up the last one).
        batch_size: images per process; under torchrun the global batch is ``batch_size * WORLD_SIZE``.
        device: ``cpu``, ``cuda`` (each torchrun process takes ``cuda:LOCAL_RANK``), ``cuda:1``...;
            threads: CPU threads per process (0 = torch's default).
        amp: bfloat16 autocast of the decoder's convolutions (CUDA only; FFTs stay float32).
        slm_bitdepth: overrides the system's SLM bit depth (e.g. 1: a binary 0/π SLM; None: keep it).
        train_subset: fraction of each finite source's training images used (the ``lowdata`` regime).
        handover_iterations: candidate RAAR iteration counts for the high-photon handover, measured on
            the validation split after training (:func:`hil.learning.evaluation.calibrate_handover`;
            empty: no handover).
    """

    role: Role = "student"
    system: str = "configs/system.yaml"
    sources: tuple[str, ...] = ("skimage", "lfw")
    n: int | None = None
    masks: int = 1
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    distillation: DistillConfig = field(default_factory=DistillConfig)
    steps: int = 400
    batch_size: int = 16
    lr: float = 2e-3
    mask_lr: float = 2e-2
    grad_clip: float = 1.0
    seed: int = 0
    val_every: int = 50
    val_images: int = 16
    patience: int = 0
    checkpoint_every: int = 50
    time_budget_s: float | None = None
    device: str = "cpu"
    threads: int = 0
    amp: bool = False
    slm_bitdepth: int | None = None
    train_subset: float = 1.0
    handover_iterations: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.amp and not self.device.startswith("cuda"):
            raise ValueError(f"amp (mixed precision) needs a CUDA device, got device {self.device!r}")
        if self.role == "student" and self.masks != 1:
            raise ValueError(f"a student has one mask, got masks={self.masks}")
        if self.role == "teacher" and self.distillation.teacher:
            raise ValueError("a teacher cannot have a teacher (distillation.teacher must be empty)")
        if self.steps < 1 or self.batch_size < 1 or self.val_every < 1 or self.checkpoint_every < 1:
            raise ValueError("steps, batch_size, val_every and checkpoint_every must be >= 1")

    def system_config(self) -> SystemConfig:
        """The physical system (a relative ``system`` path is taken from the repository root if absent here)."""
        path = Path(self.system)
        if not path.is_absolute() and not path.exists():
            path = REPO_ROOT / path
        system = load_system(path)
        if self.slm_bitdepth is not None:
            system = dataclasses.replace(system, slm=dataclasses.replace(system.slm, bitdepth=self.slm_bitdepth))
        if self.n is None:
            return system
        return dataclasses.replace(
            system, optics=dataclasses.replace(system.optics, n=self.n), data=dataclasses.replace(system.data, n=self.n)
        )

    def data_spec(self, system: SystemConfig) -> DataSpec:
        return dataclasses.replace(system.data, sources=self.sources, train_subset=self.train_subset)


def load_train_config(path: str | Path, **overrides: object) -> TrainConfig:
    """Load ``configs/train_*.yaml`` strictly; ``overrides`` replace top-level keys (e.g. seed)."""
    data = load_yaml(path)
    data.update({k: v for k, v in overrides.items() if v is not None})
    return from_mapping(TrainConfig, data, where=str(path))
