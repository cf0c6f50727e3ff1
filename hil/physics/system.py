"""The physical system in one config: optics, SLM, camera, objects (``configs/system.yaml``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from hil.common.config import from_mapping, load_yaml
from hil.common.provenance import REPO_ROOT
from hil.data.datasets import DataSpec
from hil.physics.camera import CameraSpec
from hil.physics.optics import CDPGeometry, OpticsSpec
from hil.physics.slm import SLMSpec

DEFAULT_SYSTEM = REPO_ROOT / "configs" / "system.yaml"
MAX_GRID_PX = 8192  # largest simulated field side (a complex64 field of 8192² is 512 MiB)


@dataclass(frozen=True)
class SystemConfig:
    optics: OpticsSpec = field(default_factory=OpticsSpec)
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
        self.geometry()  # the optics, macro-pixels and binning must fit together

    def geometry(self) -> CDPGeometry:
        """The optics with the SLM's macro-pixels and the camera's binning."""
        return CDPGeometry(
            **dataclasses.asdict(self.optics), macro_pixel=self.slm.macro_pixel, binning=self.camera.binning
        )


def load_system(path: str | Path = DEFAULT_SYSTEM) -> SystemConfig:
    """Load ``path`` (default ``configs/system.yaml``) with strict validation."""
    return from_mapping(SystemConfig, load_yaml(path), where=str(path))
