"""Capture on the simulated bench: dark frames, stored frames, saturation, light left off."""

import math
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml

from drivers.serial_sim import simulated_device
from hil.bench.bench import Bench
from hil.bench.capture import CaptureSettings, SaturationError, capture_cdp
from hil.bench.reconstruct import to_model_units
from hil.physics.optics import CDPGeometry

REPO = Path(__file__).resolve().parents[1]


def _bench_config(tmp_path: Path, calibrated: bool = True, **sensor) -> Path:
    """The simulated bench with ``sensor`` overrides; ``calibrated``: the system config knows them."""
    system = yaml.safe_load((REPO / "configs" / "system.yaml").read_text())
    if calibrated:
        system["camera"] |= sensor
    (tmp_path / "system.yaml").write_text(yaml.safe_dump(system))
    cfg = yaml.safe_load((REPO / "configs" / "bench_ideal.yaml").read_text())
    cfg["system"] = str(tmp_path / "system.yaml")
    cfg["camera"]["kwargs"]["sensor"] = sensor
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _mask(n: int = 64) -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 2 * math.pi, (n, n))


def _stack(group: h5py.Group) -> np.ndarray:
    return np.stack([group[k][()] for k in sorted(group)])


def _shutter_state() -> dict:
    return simulated_device("sim-shutter://").firmware.state


def test_capture_stores_every_frame_and_subtracts_the_dark(tmp_path):
    cfg = _bench_config(tmp_path, dark_offset_adu=100.0, read_noise_e=1.0)
    with Bench.from_config(cfg) as bench:
        result = capture_cdp(bench, _mask(), CaptureSettings(frames=3, dark_frames=2), tmp_path / "c.h5")
        assert _shutter_state()["shutter"] == "CLOSED" and _shutter_state()["laser"] == "OFF"
    with h5py.File(result.path) as h5:
        frames, dark = _stack(h5["frames"]), _stack(h5["dark"])
        assert frames.shape == (3, 128, 128) and dark.shape == (2, 128, 128)
        stamps = [h5["frames"][k].attrs["time_unix_s"] for k in sorted(h5["frames"])]
        assert np.all(np.diff(stamps) >= 0)
        assert "git_commit" in h5.attrs["provenance_json"]
        np.testing.assert_allclose(h5["cdp_adu"][()], frames.mean(0) - dark.mean(0))
        assert abs(dark.mean() - 100.0) < 0.5  # dark frames: offset only, light off
    assert abs(result.cdp_adu.mean() - 50.0) < 2.0  # system.yaml: 50 photons/pixel, gain 1, QE 1
    assert result.saturated_fraction == 0.0


def test_saturation_is_reported_and_frames_are_kept(tmp_path):
    cfg = _bench_config(tmp_path, adc_bits=8, gain_adu_per_e=4.0)
    with Bench.from_config(cfg) as bench:
        with pytest.raises(SaturationError, match=r"pixels saturated \(>= 255 ADU\) at exposure 0.01 s"):
            capture_cdp(bench, _mask(), CaptureSettings(frames=2, dark_frames=1), tmp_path / "s.h5")
        assert _shutter_state()["shutter"] == "CLOSED"
    with h5py.File(tmp_path / "s.h5") as h5:
        frames = _stack(h5["frames"])
        assert frames.shape == (2, 128, 128) and frames.max() == 255
        assert h5.attrs["saturated_fraction"] > 0


def test_light_is_off_after_a_lit_block_that_fails(tmp_path):
    with Bench.from_config(_bench_config(tmp_path)) as bench:
        with pytest.raises(RuntimeError, match="camera lost"), bench.lit():
            assert _shutter_state()["shutter"] == "OPEN" and _shutter_state()["laser"] == "ON"
            raise RuntimeError("camera lost")
        assert _shutter_state()["shutter"] == "CLOSED" and _shutter_state()["laser"] == "OFF"
        assert bench.capture().max() == 0  # dark: the simulated camera sees no light


def test_an_existing_capture_is_never_overwritten(tmp_path):
    path = tmp_path / "c.h5"
    path.write_bytes(b"earlier data")
    with Bench.from_config(_bench_config(tmp_path)) as bench:
        with pytest.raises(FileExistsError, match="recorded frames are never overwritten"):
            capture_cdp(bench, _mask(), CaptureSettings(frames=1, dark_frames=0), path)
    assert path.read_bytes() == b"earlier data"


def test_capture_settings_and_grid_mismatch_are_named():
    with pytest.raises(ValueError, match="need frames >= 1"):
        CaptureSettings(frames=0)
    op = CDPGeometry(16).operator(torch.zeros(1, 16, 16))
    with pytest.raises(ValueError, match=r"captured CDP has shape \(30, 32\) .* the model predicts \(32, 32\)"):
        to_model_units(op, torch.ones(30, 32))
