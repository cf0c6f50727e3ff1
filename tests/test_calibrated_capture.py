"""The calibrated model applied automatically: on the independent fixture bench (drivers/slmsuite_bench.py) with
its hidden registration, phase response, radiometry and SLM-plane field written into its calibration files,
capture records the model, reconstruction stays on the camera's own 40 x 48 pixels (nothing resampled), deploy
--verify compares a capture with the model's prediction, and a bundle made before the LUT was measured deploys,
captures and fine-tunes without retraining."""

import dataclasses
import json
import math
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml
from conftest_devices import fresh_sim_devices  # noqa: F401
from typer.testing import CliRunner

from drivers.sim_optics import sample_phase
from hil.bench.bench import Bench
from hil.bench.capture import CaptureSettings, capture_cdp
from hil.bench.config import load_bench
from hil.bench.reconstruct import load_capture, reconstruct_classical
from hil.benchmarks.calibrated_model import write_hidden_calibration, wrong_registration
from hil.benchmarks.calibration_fixture import hidden_camera_to_model, hidden_gamma
from hil.cli import app
from hil.common.metrics import phase_psnr
from hil.learning.bundle import BundleError, load_bundle, save_bundle
from hil.learning.decoders import DecoderConfig
from hil.learning.training import TrainConfig, build_model
from hil.physics.registration import Registration, load_registration
from hil.physics.slm_field import load_slm_field
from hil.physics.system import load_system

RUNNER = CliRunner()
KINDS = ("cells", "phase_screen")


pytestmark = pytest.mark.usefixtures("one_thread")


def _invoke(*args):
    return RUNNER.invoke(app, [str(a) for a in args])


def calibrated_fixture(tmp_path: Path) -> Path:
    """``configs/bench_fixture.yaml`` in ``tmp_path`` calibrated with its hidden values (radiometry, gamma and
    crosstalk in the system file; registration and SLM-plane field named in the bench config)."""
    return write_hidden_calibration(tmp_path, "default")


def wrong_registration_file(tmp_path: Path) -> Path:
    """The hidden registration turned by 4 degrees and shifted by 1.5 model pixels, as a file."""
    return wrong_registration(load_registration(tmp_path / "reg.json")).save(tmp_path / "wrong.json")


def nominal_bundle(tmp_path: Path) -> Path:
    """An untrained student for the fixture's nominal system: made before any calibration."""
    system = load_system(Path(__file__).resolve().parents[1] / "configs" / "system_fixture.yaml")
    train = TrainConfig(role="student", decoder=DecoderConfig(stages=1, channels=4, hidden_layers=1, refine_steps=1))
    torch.manual_seed(0)
    return save_bundle(tmp_path / "bundle", build_model(train, system).system, train, system, metrics={})


@pytest.fixture(scope="module")
def captured(tmp_path_factory):
    """Two captures of known samples (cells, phase screen) through one random mask on the calibrated fixture."""
    from drivers.serial_sim import forget_simulated_devices

    forget_simulated_devices()
    tmp = tmp_path_factory.mktemp("calibrated")
    cfg = calibrated_fixture(tmp)
    rng = np.random.default_rng(0)
    mask = rng.uniform(0, 2 * math.pi, (16, 16))
    paths, truths = [], []
    with Bench.from_config(cfg) as bench:
        for index, kind in enumerate(KINDS):
            truths.append(sample_phase(kind, 16, rng, math.pi))
            bench.slm.slm.set_sample(truths[-1])
            path = tmp / f"capture{index}.h5"
            paths.append(capture_cdp(bench, mask, CaptureSettings(frames=4, dark_frames=2), path).path)
    forget_simulated_devices()
    return tmp, cfg, paths, truths


def test_a_capture_carries_the_calibrated_model(captured):
    tmp, cfg, paths, _ = captured
    registration = json.loads((tmp / "reg.json").read_text())
    field = load_slm_field(tmp / "field.json")
    with h5py.File(paths[0]) as h5:
        recorded = json.loads(h5.attrs["registration_json"])
        amplitude, phase = h5["field/amplitude"][()], h5["field/phase_rad"][()]
        files = json.loads(h5.attrs["calibration_files_json"])
        system = json.loads(h5.attrs["system_json"])
        assert h5["field/amplitude"].fletcher32 and h5["field/phase_rad"].fletcher32
    np.testing.assert_allclose(recorded["camera_to_model"], registration["camera_to_model"], rtol=0, atol=1e-15)
    assert recorded["camera_shape"] == [40, 48] and recorded["model_shape"] == [32, 32]
    np.testing.assert_allclose(amplitude * np.exp(1j * phase), field.complex, atol=1e-12)
    assert set(files) == {"registration", "field"} and len(files["field"]["sha256"]) == 64
    assert system["slm"]["gamma"] == pytest.approx(list(hidden_gamma(cfg)), abs=1e-6)
    # the model is read back from the file alone: the calibration files can go
    (tmp / "moved").mkdir(exist_ok=True)
    for name in ("reg.json", "field.json"):
        (tmp / name).rename(tmp / "moved" / name)
    try:
        loaded = load_capture(paths[0])
    finally:
        for name in ("reg.json", "field.json"):
            (tmp / "moved" / name).rename(tmp / name)
    np.testing.assert_allclose(loaded.model.field, field.complex, atol=1e-12)
    assert loaded.model.registration.camera_shape == (40, 48)


def test_an_edited_registration_is_named(captured, tmp_path):
    from hil.bench.frame_log import CaptureError

    _, _, paths, _ = captured
    edited = tmp_path / "edited.h5"
    edited.write_bytes(paths[0].read_bytes())
    with h5py.File(edited, "r+") as h5:
        text = json.loads(h5.attrs["registration_json"])
        text["camera_to_model"][0][2] += 1.0
        h5.attrs["registration_json"] = json.dumps(text)
    with pytest.raises(CaptureError, match="registration_json: SHA-256 missing or does not match"):
        load_capture(edited)


def test_reconstruction_stays_on_camera_pixels(captured, monkeypatch):
    """RAAR through the recorded model on the 40 x 48 camera frame, never resampled; against the same frames
    through a registration 4 degrees and 1.5 model pixels off."""
    tmp, cfg, paths, truths = captured

    def forbidden(*args, **kwargs):
        raise AssertionError("a camera frame was resampled onto the model grid")

    monkeypatch.setattr(Registration, "resample", forbidden)
    wrong = load_registration(wrong_registration_file(tmp))
    torch.manual_seed(0)
    right_db, wrong_db = [], []
    for path, truth in zip(paths, truths, strict=True):
        loaded = load_capture(path)
        assert loaded.y.shape == (1, 1, 40, 48) and loaded.op.camera_shape == (40, 48)
        x = torch.polar(torch.ones(1, 16, 16, dtype=torch.float64), torch.from_numpy(truth))
        predicted = loaded.op.A(x.to(torch.complex128))
        assert float(loaded.y.sum() / predicted.sum()) == pytest.approx(1.0, abs=0.03)  # normalised on camera pixels
        truth_t = torch.from_numpy(truth)[None]
        right_db.append(float(phase_psnr(reconstruct_classical(loaded.op, loaded.y, 100), truth_t)))
        off = load_capture(path, wrong)
        wrong_db.append(float(phase_psnr(reconstruct_classical(off.op, off.y, 100), truth_t)))
    print(f"phase PSNR (dB) with the recorded model {right_db}, with a wrong registration {wrong_db}")
    assert np.mean(right_db) > np.mean(wrong_db) + 1.0


def test_cli_reconstructs_the_capture_at_the_cameras_size(captured, tmp_path):
    _, _, paths, _ = captured
    out = tmp_path / "raar.npy"
    result = _invoke("reconstruct", paths[0], "--iterations", 10, "--out", out)
    assert result.exit_code == 0, result.output
    assert np.load(out).shape == (16, 16) and np.isfinite(np.load(out)).all()


@pytest.mark.parametrize("wrong", [False, True])
def test_deploy_verify_measures_against_the_calibrated_model(tmp_path, wrong, fresh_sim_devices):  # noqa: F811
    cfg = calibrated_fixture(tmp_path)
    bundle = nominal_bundle(tmp_path)
    extra = ["--registration", wrong_registration_file(tmp_path)] if wrong else []
    result = _invoke("deploy", bundle, "--bench", cfg, "--verify", *extra)
    output = " ".join(result.output.split())
    correlation = float(output.split("camera pixels: correlation ")[1].split(" ")[0])
    chance = float(output.split("not deployed: up to ")[1].split(")")[0])
    print(f"wrong registration {wrong}: correlation {correlation}, chance {chance}")
    if wrong:
        assert result.exit_code == 1 and correlation < 0.5
    else:
        assert result.exit_code == 0, result.output
        assert correlation > 0.75 and correlation > 4 * chance


def test_a_bundle_survives_a_measured_lut(tmp_path, fresh_sim_devices):  # noqa: F811
    """deploy, capture --bundle and finetune accept a bundle made for the nominal system after the bench's
    gamma, crosstalk and radiometry were measured; a real mismatch is one line naming the key."""
    cfg = calibrated_fixture(tmp_path)
    bundle = nominal_bundle(tmp_path)
    assert load_bundle(bundle).system_config.slm.gamma == ()
    assert len(load_bench(cfg).system.slm.gamma) == 256
    result = _invoke("deploy", bundle, "--bench", cfg)
    assert result.exit_code == 0, result.output
    assert "through the measured response (256 levels)" in " ".join(result.output.split())
    paths = [tmp_path / "c0.h5", tmp_path / "c1.h5"]  # the beam without a sample: the chain, not a sample
    for path in paths:
        result = _invoke("capture", "--out", path, "--bundle", bundle, "--bench", cfg, "--frames", 2)
        assert result.exit_code == 0, result.output
    result = _invoke("reconstruct", paths[0], "--bundle", bundle, "--out", tmp_path / "p.npy")
    assert result.exit_code == 0, result.output
    assert np.isfinite(np.load(tmp_path / "p.npy")).all()
    result = _invoke("finetune", bundle, *paths, "--out", tmp_path / "tuned", "--steps", 2, "--simulated", 2)
    assert result.exit_code == 0, result.output
    assert "simulated validation phase PSNR" in " ".join(result.output.split())
    record = load_bundle(tmp_path / "tuned").manifest["finetune"]
    assert len(record["captures_sha256"]) == 2
    model = load_capture(paths[0]).model  # the calibration the decoder was tuned to, in the new bundle
    assert record["calibrated_model"]["registration"] == model.registration.to_dict()
    assert record["calibrated_model"]["system"]["slm"]["gamma"] == list(model.system.slm.gamma)
    assert record["calibrated_model"]["field_shape"] == list(np.asarray(model.field).shape)
    doc = yaml.safe_load(cfg.read_text())
    doc["calibration"].pop("field")  # the same bench, another calibration
    cfg.write_text(yaml.safe_dump(doc))
    other_model = tmp_path / "c2.h5"
    assert _invoke("capture", "--out", other_model, "--bundle", bundle, "--bench", cfg, "--frames", 1).exit_code == 0
    result = _invoke("finetune", bundle, *paths, other_model, "--out", tmp_path / "tuned2", "--steps", 1)
    assert "c2.h5: recorded with another calibrated model (system, registration or field)" in str(result.exception)

    system = load_bench(cfg).system
    other = dataclasses.replace(system, optics=dataclasses.replace(system.optics, pad_factor=4))
    with pytest.raises(BundleError) as error:
        load_bundle(bundle, expect_system=other)
    message = str(error.value)
    assert "optics.pad_factor is 2 in the bundle, 4 here" in message
    assert "gamma" not in message and "\n" not in message and len(message) < 300


def test_demo_captures_and_reconstructs_through_the_bench_configs_model(tmp_path, fresh_sim_devices):  # noqa: F811
    cfg = calibrated_fixture(tmp_path)
    args = ["demo", "--bench", cfg, "--random-mask", "--out", tmp_path / "runs", "--samples", "phase_screen"]
    result = _invoke(*args, "--raar-iterations", 50, "--repeats", 1)
    assert result.exit_code == 0, result.output
    (run,) = (tmp_path / "runs").iterdir()
    rows = json.loads((run / "metrics.json").read_text())
    assert [r["method"] for r in rows] == ["RAAR 50 it"]
    loaded = load_capture(run / "capture0_phase_screen.h5")
    assert loaded.y.shape == (1, 1, 40, 48) and loaded.model.field is not None
    np.testing.assert_allclose(loaded.model.registration.camera_to_model, hidden_camera_to_model(cfg), atol=1e-12)
    assert rows[0]["psnr_db"] > 12.0  # 15.3 measured; a random phase map scores about 5 dB


def test_a_broken_calibration_file_is_named_before_any_device(tmp_path, monkeypatch):
    def forbidden(self):
        raise AssertionError("the bench was opened")

    monkeypatch.setattr(Bench, "__enter__", forbidden)
    cfg = calibrated_fixture(tmp_path)
    np.save(tmp_path / "m.npy", np.zeros((16, 16)))
    (tmp_path / "reg.json").write_text("{}")
    result = _invoke("capture", "--out", tmp_path / "c.h5", "--mask", tmp_path / "m.npy", "--bench", cfg)
    assert "reg.json: not a registration file" in str(result.exception)
    assert not (tmp_path / "c.h5").exists()
