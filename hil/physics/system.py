"""The physical system in one config: optics, SLM, camera, objects (``configs/system.yaml``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from hil.common.config import from_mapping, load_yaml
from hil.common.provenance import REPO_ROOT
from hil.data.datasets import DataSpec
from hil.physics.camera import CameraSpec
from hil.physics.optics import CDPGeometry, PropagatorKind
from hil.physics.slm import SLMSpec

DEFAULT_SYSTEM = REPO_ROOT / "configs" / "system.yaml"
MAX_N = 2048
MAX_GRID_PX = 8192  # largest simulated field side (a complex64 field of 8192² is 512 MiB)


@dataclass(frozen=True)
class OpticsConfig:
    """Propagation; ``wavelength_um``, ``pitch_um`` (SLM pixel pitch) and ``distance_um`` only matter
    for the free-space propagators."""

    n: int = 64
    pad_factor: int = 2
    propagator: PropagatorKind = "fraunhofer"
    wavelength_um: float = 0.633
    pitch_um: float = 8.0
    distance_um: float = 0.0

    def __post_init__(self) -> None:
        if not 2 <= self.n <= MAX_N:  # checked before any (pad·k·n)² array is allocated
            raise ValueError(f"optics.n must lie in [2, {MAX_N}], got {self.n}")
        if not 1 <= self.pad_factor <= 8:
            raise ValueError(f"optics.pad_factor must lie in [1, 8], got {self.pad_factor}")


@dataclass(frozen=True)
class SystemConfig:
    optics: OpticsConfig = field(default_factory=OpticsConfig)
    slm: SLMSpec = field(default_factory=SLMSpec)
    camera: CameraSpec = field(default_factory=CameraSpec)
    data: DataSpec = field(default_factory=DataSpec)

    def __post_init__(self) -> None:
        if self.data.n != self.optics.n:
            raise ValueError(f"data.n ({self.data.n}) must equal optics.n ({self.optics.n})")
        side = self.optics.n * self.optics.pad_factor * self.slm.macro_pixel
        if side > MAX_GRID_PX:
            raise ValueError(
                f"optics.n · optics.pad_factor · slm.macro_pixel = {side} px per side, more than {MAX_GRID_PX}"
            )

    def geometry(self) -> CDPGeometry:
        o = self.optics
        return CDPGeometry(
            n=o.n,
            pad_factor=o.pad_factor,
            macro_pixel=self.slm.macro_pixel,
            propagator=o.propagator,
            wavelength_um=o.wavelength_um,
            pitch_um=o.pitch_um,
            distance_um=o.distance_um,
        )


def load_system(path: str | Path = DEFAULT_SYSTEM) -> SystemConfig:
    """Load ``path`` (default ``configs/system.yaml``) with strict validation."""
    return from_mapping(SystemConfig, load_yaml(path), where=str(path))
