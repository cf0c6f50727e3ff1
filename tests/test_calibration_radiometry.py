"""Photon transfer on the simulated camera recovers its hidden sensor constants."""

import math

import h5py
import numpy as np
import pytest
from test_calibration_setup import small_bench

from calibration.radiometry import measure_radiometry, photon_transfer
from drivers.serial_sim import simulated_device
from hil.bench.bench import Bench
from hil.bench.frame_log import FrameLog

SENSOR = {"gain_adu_per_e": 2.0, "dark_offset_adu": 100.0, "read_noise_e": 3.0, "adc_bits": 12, "full_well_e": 1500.0}


def test_bench_photon_transfer_recovers_the_sensor(tmp_path):
    cfg = small_bench(tmp_path, n=32, **SENSOR)
    mask = np.random.default_rng(1).uniform(0, 2 * math.pi, (32, 32))
    with Bench.from_config(cfg) as bench, FrameLog(tmp_path / "r.h5", "radiometry", {}) as log:
        result = measure_radiometry(bench, log, [0.005, 0.01, 0.02, 0.04], mask, pairs=4, dark_frames=6)
        assert simulated_device("sim-shutter://").firmware.state["shutter"] == "CLOSED"
        assert bench.camera.get_exposure() == pytest.approx(0.01)
    assert result.gain_adu_per_e == pytest.approx(2.0, rel=0.03)
    assert result.dark_offset_adu == pytest.approx(100.0, abs=0.2)
    assert result.read_noise_e == pytest.approx(3.0, rel=0.03)
    assert result.full_well_e == pytest.approx(1500.0, rel=0.03)  # 1500 e- * 2 + 100 = 3100 ADU < 4095
    assert result.fit_r2 > 0.95
    assert result.camera_keys()["gain_adu_per_e"] == pytest.approx(result.gain_adu_per_e, abs=1e-5)
    with h5py.File(tmp_path / "r.h5") as h5:
        assert len(h5["dark"]) == 6 and len(h5["lit"]) == 32
        assert "gain_adu_per_e" in h5.attrs["result_json"]


def test_photon_transfer_rejects_frames_without_signal():
    rng = np.random.default_rng(0)
    dark = 100 + rng.normal(0, 3, (4, 16, 16))
    with pytest.raises(ValueError, match="need at least 2 dark frames"):
        photon_transfer(dark[:1], [dark[None, :2]])
    with pytest.raises(ValueError, match="use brighter"):
        photon_transfer(dark, [dark[None, 2:]])
