"""Shared helpers for the device tests (imported explicitly: ``from conftest_devices import ...``)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from drivers.serial_sim import forget_simulated_devices
from drivers.sim_camera import SimulatedBenchCamera
from drivers.sim_slm import SimulatedBenchSLM
from drivers.slm import SLMController
from hil.common.config import from_mapping
from hil.physics.system import SystemConfig

REPO = Path(__file__).resolve().parents[1]
IDEAL_BENCH = REPO / "configs" / "bench_ideal.yaml"  # the twin, every imperfection off (the default is realistic)


def small_system(
    n: int = 16, macro_pixel: int = 1, optics: dict[str, Any] | None = None, **camera: Any
) -> SystemConfig:
    """The default system shrunk to ``n x n`` objects (fast), optics and camera keys overridden."""
    data = yaml.safe_load((REPO / "configs" / "system.yaml").read_text())
    data["optics"].update(optics or {})
    data["optics"]["n"] = data["data"]["n"] = n
    data["slm"]["macro_pixel"] = macro_pixel
    data["camera"].update(camera)
    return from_mapping(SystemConfig, data, "small system")


def write_small_system(directory: Path, n: int = 16, macro_pixel: int = 1) -> Path:
    data = yaml.safe_load((REPO / "configs" / "system.yaml").read_text())
    data["optics"]["n"] = data["data"]["n"] = n
    data["slm"]["macro_pixel"] = macro_pixel
    path = directory / "system.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def sim_bench_document(shutter_state: Path | None = None) -> dict[str, Any]:
    """``configs/bench_ideal.yaml`` (the ideal twin) as data, pointing at a ``system.yaml`` next to the written file."""
    doc = yaml.safe_load(IDEAL_BENCH.read_text())
    doc = copy.deepcopy(doc)
    if shutter_state is not None:
        doc["serial"]["shutter"]["port"] = f"sim-shutter://?state={shutter_state}"
        doc["camera"]["kwargs"]["light_source"] = doc["serial"]["shutter"]["port"]
    return doc


def write_bench(directory: Path, doc: dict[str, Any], name: str = "bench.yaml") -> Path:
    """Write ``doc`` and a small ``system.yaml`` into ``directory``; return the bench path."""
    write_small_system(directory)
    path = directory / name
    path.write_text(yaml.safe_dump(doc))
    return path


def twin(
    n: int = 16,
    macro_pixel: int = 1,
    seed: int = 0,
    camera: dict[str, Any] | None = None,
    system: SystemConfig | None = None,
    **slm_settings: Any,
) -> tuple[SimulatedBenchSLM, SimulatedBenchCamera, SLMController]:
    """A small simulated SLM + camera + ROI controller (no settle wait unless asked)."""
    system = system or small_system(n, macro_pixel)
    slm = SimulatedBenchSLM(system, seed=seed, **slm_settings)
    cam = SimulatedBenchCamera(slm, system, seed=seed, **(camera or {}))
    return slm, cam, SLMController(slm, (n, n), macro_pixel, settle=False)


def random_mask(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 2 * np.pi, (n, n))


@pytest.fixture
def fresh_sim_devices():
    """Each test starts with new simulated serial devices."""
    forget_simulated_devices()
    yield
    forget_simulated_devices()
