"""Each calibration recovers the hidden value of the independent fixture bench (drivers/slmsuite_bench.py:
Gaussian beam behind an iris, aberration, crosstalk, nonlinear short stroke, rotated and scaled camera,
sensor offset and read noise), on two sets of values it was not tuned on; bad frames are refused;
a bundle deploys through a changed LUT without retraining. Tolerances: docs/calibration.md."""

import math

import numpy as np
import pytest
import yaml
from conftest_devices import fresh_sim_devices  # noqa: F401
from test_bench_fixture import fixture_bench
from typer.testing import CliRunner

from calibration.geometry import measure_geometry
from calibration.radiometry import measure_radiometry
from calibration.slm_response import measure_slm_response
from hil.bench.bench import Bench
from hil.bench.frame_log import FrameLog
from hil.benchmarks.calibration_fixture import hidden_camera_to_model, hidden_gamma
from hil.cli import app

RUNNER = CliRunner()
GEOMETRY_EXPOSURE_S = 0.001  # spots concentrate the light: the bench's 10 ms saturates them


@pytest.mark.parametrize("varied", [False, True])
def test_radiometry_recovers_the_sensor(tmp_path, varied, fresh_sim_devices):  # noqa: F811
    cfg = fixture_bench(tmp_path, varied)
    cam = yaml.safe_load(cfg.read_text())["camera"]["kwargs"]
    mask = np.random.default_rng(1).uniform(0, 2 * math.pi, (16, 16))
    with Bench.from_config(cfg) as bench, FrameLog(tmp_path / "r.h5", "radiometry", {}) as log:
        result = measure_radiometry(bench, log, [0.005, 0.01, 0.02], mask, pairs=2, dark_frames=4)
    assert result.gain_adu_per_e == pytest.approx(cam["gain_adu_per_e"], rel=0.03)
    assert result.dark_offset_adu == pytest.approx(cam["dark_offset_adu"], abs=0.5)
    assert result.read_noise_e == pytest.approx(cam["read_noise_e"], rel=0.08)


@pytest.mark.parametrize("varied", [False, True])
def test_geometry_recovers_the_hidden_affine(tmp_path, varied, fresh_sim_devices):  # noqa: F811
    cfg = fixture_bench(tmp_path, varied)
    with Bench.from_config(cfg) as bench, FrameLog(tmp_path / "g.h5", "geometry", {}) as log:
        bench.set_exposure(GEOMETRY_EXPOSURE_S)
        result = measure_geometry(bench, log, frames=1, dark_frames=2)
    truth = hidden_camera_to_model(cfg)
    found = result.registration.camera_to_model
    np.testing.assert_allclose(found[:, :2], truth[:, :2], atol=0.006)  # scale and rotation: < 0.7 %
    np.testing.assert_allclose(found[:, 2], truth[:, 2], atol=0.3)  # model pixels
    assert result.residual_model_px < 0.1


@pytest.mark.slow
@pytest.mark.parametrize("varied", [False, True])
def test_slm_response_recovers_the_hidden_gamma(tmp_path, varied, fresh_sim_devices):  # noqa: F811
    cfg = fixture_bench(tmp_path, varied)
    with Bench.from_config(cfg) as bench, FrameLog(tmp_path / "s.h5", "slm-response", {}) as log:
        bench.set_exposure(GEOMETRY_EXPOSURE_S)
        result = measure_slm_response(bench, log, levels=list(range(0, 256, 8)))
    error_rad = 2 * math.pi * (np.asarray(result.gamma) - hidden_gamma(cfg))
    assert np.abs(error_rad).max() < 0.15 and np.sqrt(np.mean(error_rad**2)) < 0.06
    truth = yaml.safe_load(cfg.read_text())["slm"]["kwargs"]["phase_range_rad"]
    assert result.phase_range_rad == pytest.approx(truth, rel=0.03)


def test_bad_frames_are_refused(tmp_path, fresh_sim_devices):  # noqa: F811
    mask = np.random.default_rng(1).uniform(0, 2 * math.pi, (16, 16))
    leaky = fixture_bench(tmp_path, camera={"shutter_leak": 0.02})
    with Bench.from_config(leaky) as bench, FrameLog(tmp_path / "r.h5", "radiometry", {}) as log:
        with pytest.raises(ValueError, match=r"dark frames are not dark: .* about 2(\.[0-2])? % of the light"):
            measure_radiometry(bench, log, [0.01], mask, pairs=1, dark_frames=2)
    result = RUNNER.invoke(app, ["check", "--bench", str(leaky)])
    assert result.exit_code == 0 and "light reaches the camera with the shutter closed" in result.output
    with Bench.from_config(fixture_bench(tmp_path)) as bench, FrameLog(tmp_path / "g.h5", "geometry", {}) as log:
        with pytest.raises(ValueError, match=r"geometry spot \(-4, -4\): \d+ saturated pixels"):
            measure_geometry(bench, log, frames=1, dark_frames=2)  # 10 ms: the spots clip
        bench.set_exposure(1e-5)
        with pytest.raises(ValueError, match=r"noise sigmas \(< 20\)"):
            measure_geometry(bench, log, frames=1, dark_frames=2)  # too little light
    with Bench.from_config(fixture_bench(tmp_path)) as bench, FrameLog(tmp_path / "s.h5", "slm-response", {}) as log:
        with pytest.raises(ValueError, match=r"slm-response level 0: \d+ saturated pixels"):
            measure_slm_response(bench, log, levels=list(range(0, 256, 32)))
        bench.set_exposure(1e-5)
        with pytest.raises(ValueError, match=r"interference modulation only .* x the noise"):
            measure_slm_response(bench, log, levels=list(range(0, 256, 32)))
    bright = fixture_bench(tmp_path, camera={"shutter_leak": 1.0, "total_photons": 1e8})
    result = RUNNER.invoke(app, ["check", "--bench", str(bright)])
    output = " ".join(result.output.split())
    assert "test frame with the light off: " in output and "saturated pixels at 4095 ADU" in output


@pytest.mark.slow
def test_deploy_through_a_changed_lut_without_retraining(tmp_path, fresh_sim_devices):  # noqa: F811
    from hil.learning.bundle import save_bundle
    from hil.learning.decoders import DecoderConfig
    from hil.learning.training import TrainConfig, build_model
    from hil.physics.system import load_system

    cfg = fixture_bench(tmp_path)
    system_yaml = tmp_path / "system_fixture.yaml"
    train = TrainConfig(role="student", decoder=DecoderConfig(stages=1, channels=4, hidden_layers=1, refine_steps=1))
    nominal = load_system(system_yaml)
    bundle = save_bundle(tmp_path / "bundle", build_model(train, nominal).system, train, nominal, metrics={})
    reg = tmp_path / "reg.json"
    geometry = ["calibrate", "geometry", "--bench", cfg, "--out", reg, "--exposure-s", GEOMETRY_EXPOSURE_S]
    assert RUNNER.invoke(app, [str(a) for a in geometry]).exit_code == 0
    deploy = ["deploy", str(bundle), "--bench", str(cfg), "--verify", "--registration", str(reg)]
    before = RUNNER.invoke(app, deploy)
    assert before.exit_code == 0, before.output
    response = [
        "calibrate", "slm-response", "--bench", cfg, "--out", tmp_path / "slm.yaml", "--level-step", 8,
        "--exposure-s", GEOMETRY_EXPOSURE_S, "--update-system", system_yaml,
    ]  # fmt: skip
    assert RUNNER.invoke(app, [str(a) for a in response]).exit_code == 0
    assert len(load_system(system_yaml).slm.gamma) == 256  # the system's LUT changed; the bundle did not
    after = RUNNER.invoke(app, deploy)
    assert after.exit_code == 0, after.output
    assert "through the measured response (256 levels)" in " ".join(after.output.split())

    def correlation(output: str) -> float:
        return float(" ".join(output.split()).split("camera pixels: correlation ")[1].split(" ")[0])

    assert correlation(after.output) > correlation(before.output) + 0.03
