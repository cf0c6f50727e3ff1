"""hil calibrate ... and hil finetune through the CLI on small simulated benches."""

import json
import math

import numpy as np
import pytest
import torch
import yaml
from test_calibration_setup import small_bench
from typer.testing import CliRunner

from hil.bench.bench import Bench
from hil.bench.capture import CaptureSettings, capture_cdp
from hil.bench.config import load_bench
from hil.cli import app
from hil.learning.bundle import load_bundle, save_bundle
from hil.learning.decoders import DecoderConfig
from hil.learning.train_config import TrainConfig
from hil.learning.training import build_model
from hil.physics.system import load_system

RUNNER = CliRunner()


def _invoke(*args):
    return RUNNER.invoke(app, [str(a) for a in args])


def test_dry_runs_touch_no_device(tmp_path, monkeypatch):
    def forbidden(self):
        raise AssertionError("a dry run opened the bench")

    monkeypatch.setattr(Bench, "__enter__", forbidden)
    cfg = small_bench(tmp_path)
    for command in ("radiometry", "geometry", "slm-response"):
        result = _invoke("calibrate", command, "--bench", cfg, "--out", tmp_path / f"{command}.out", "--dry-run")
        assert result.exit_code == 0, result.output
        assert "nothing was sent to any device" in result.output
    assert not list(tmp_path.glob("*.out")) and not list(tmp_path.glob("*.h5"))


def test_radiometry_and_slm_response_update_the_system_config(tmp_path):
    sensor = {"gain_adu_per_e": 1.5, "dark_offset_adu": 50.0, "read_noise_e": 2.0}
    cfg = small_bench(tmp_path, n=16, bitdepth=4, slm={"phase_range_rad": 0.75 * 2 * math.pi}, **sensor)
    system_yaml = tmp_path / "system.yaml"
    result = _invoke(
        "calibrate", "radiometry", "--bench", cfg, "--out", tmp_path / "radiometry.yaml",
        "--exposures-s", "0.01,0.02,0.04,0.08", "--update-system", system_yaml,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    measured = yaml.safe_load((tmp_path / "radiometry.yaml").read_text())
    assert measured["camera"]["gain_adu_per_e"] == pytest.approx(1.5, rel=0.05)
    assert (tmp_path / "radiometry.frames.h5").is_file()
    result = _invoke(
        "calibrate", "slm-response", "--bench", cfg, "--out", tmp_path / "slm.yaml", "--update-system", system_yaml
    )
    assert result.exit_code == 0, result.output
    system = load_system(system_yaml)
    assert system.camera.dark_offset_adu == pytest.approx(50.0, abs=0.5)
    assert system.camera.read_noise_e == pytest.approx(2.0, rel=0.08)
    np.testing.assert_allclose(system.slm.gamma, 0.75 * np.arange(16) / 16, atol=5e-3)
    result = _invoke("calibrate", "slm-response", "--bench", cfg, "--out", tmp_path / "slm.yaml")
    assert "slm.yaml exists" in str(result.exception)  # outputs and captured frames are never overwritten
    result = _invoke("calibrate", "radiometry", "--bench", cfg, "--out", tmp_path / "r2.yaml", "--exposures-s", "5")
    assert "within camera.exposure_limits_s" in str(result.exception)


def test_geometry_writes_a_registration(tmp_path):
    cfg = small_bench(tmp_path, n=16)
    result = _invoke("calibrate", "geometry", "--bench", cfg, "--out", tmp_path / "reg.json")
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "reg.json").read_text())
    np.testing.assert_allclose(data["camera_to_model"], [[1, 0, 0], [0, 1, 0]], atol=0.02)
    assert data["correlation"] > 0.95


def test_finetune_writes_a_new_bundle(tmp_path):
    cfg = small_bench(tmp_path, n=16, slm={"aberration_rad": [0.5]})
    system = load_bench(cfg).system
    train_cfg = TrainConfig(role="student", decoder=DecoderConfig(stages=1, channels=4, refine_steps=1))
    bundle = save_bundle(tmp_path / "b", build_model(train_cfg, system).system, train_cfg, system, metrics={})
    mask = load_bundle(bundle).mask_rad[0].double().numpy()
    with Bench.from_config(cfg) as bench:
        paths = []
        for i in range(2):
            bench.slm.slm.set_sample(np.random.default_rng(i).uniform(0, 1, (16, 16)))
            paths.append(capture_cdp(bench, mask, CaptureSettings(frames=1, dark_frames=1), tmp_path / f"{i}.h5").path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = _invoke("finetune", bundle, *paths, "--out", tmp_path / "tuned", "--steps", 3)
    finally:
        torch.set_num_threads(threads)
    assert result.exit_code == 0, result.output
    assert "held-out consistency loss" in result.output and load_bundle(tmp_path / "tuned").manifest["finetune"]
    result = _invoke("finetune", bundle, *paths, "--out", tmp_path / "tuned")
    assert "never overwrites" in str(result.exception)
