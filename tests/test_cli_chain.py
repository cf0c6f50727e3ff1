"""deploy -> capture -> reconstruct on the ideal simulated bench, through the CLI; --dry-run touches nothing."""

from pathlib import Path

import numpy as np
import pytest
from conftest_devices import IDEAL_BENCH
from typer.testing import CliRunner

from hil.bench.bench import Bench
from hil.cli import app
from hil.learning.bundle import save_bundle
from hil.learning.decoders import DecoderConfig
from hil.learning.training import TrainConfig, build_model
from hil.physics.system import load_system

RUNNER = CliRunner()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    """An untrained student bundle for the default system (64 x 64, 8-bit): the chain, not its quality."""
    cfg = TrainConfig(role="student", decoder=DecoderConfig(stages=1, channels=4, hidden_layers=1, refine_steps=1))
    system_cfg = load_system()
    path = tmp_path_factory.mktemp("b") / "bundle"
    return save_bundle(path, build_model(cfg, system_cfg).system, cfg, system_cfg, metrics={})


def _invoke(*args: str):
    result = RUNNER.invoke(app, [str(a) for a in args])
    return result


def _on_ideal(command: str, *args: str):
    """``command`` on the ideal twin (the default bench is the realistic 16 x 16 one)."""
    return _invoke(command, "--bench", IDEAL_BENCH, *args)


def test_dry_runs_touch_no_device(bundle, tmp_path, monkeypatch):
    def forbidden(self):
        raise AssertionError("a dry run opened the bench")

    monkeypatch.setattr(Bench, "__enter__", forbidden)
    result = _on_ideal("deploy", bundle, "--dry-run")
    assert result.exit_code == 0, result.output
    assert "nothing was sent to any device" in result.output
    result = _on_ideal("capture", "--out", tmp_path / "c.h5", "--bundle", bundle, "--dry-run")
    assert result.exit_code == 0 and not (tmp_path / "c.h5").exists()


def test_deploy_capture_reconstruct(bundle, tmp_path):
    result = _on_ideal("deploy", bundle)
    assert result.exit_code == 0, result.output
    assert "deployed (not measured" in result.output
    capture = tmp_path / "c.h5"
    result = _on_ideal("capture", "--out", capture, "--bundle", bundle, "--frames", 2, "--dark-frames", 1)
    assert result.exit_code == 0, result.output
    result = _invoke("reconstruct", capture, "--iterations", 20)
    assert result.exit_code == 0, result.output
    phase = np.load(capture.with_suffix(".phase.npy"))
    assert phase.shape == (64, 64) and np.isfinite(phase).all()
    out = tmp_path / "student.npy"
    result = _invoke("reconstruct", capture, "--bundle", bundle, "--out", out)
    assert result.exit_code == 0, result.output
    assert np.load(out).shape == (64, 64)


def test_bad_inputs_are_named(bundle, tmp_path):
    np.save(tmp_path / "m.npy", np.zeros((32, 32)))
    result = _on_ideal("capture", "--out", tmp_path / "c.h5", "--mask", tmp_path / "m.npy")
    assert "mask must have shape (64, 64) (height, width), got (32, 32)" in str(result.exception)
    result = _on_ideal("capture", "--out", tmp_path / "c.h5")
    assert "give exactly one of --bundle or --mask" in str(result.exception)
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    result = _invoke("reconstruct", tmp_path / "junk.h5")
    assert "not a readable HDF5 file" in str(result.exception)
    result = _on_ideal("deploy", tmp_path)
    assert "not a model bundle" in str(result.exception)


def test_reconstruct_with_a_registration_override(bundle, tmp_path):
    """--registration replaces the capture's (here: absent) registration; the operator then predicts the
    camera's pixels through the registered camera (pad 8), and a registration for another camera is named."""
    from hil.physics.registration import Registration

    capture = tmp_path / "c.h5"
    assert _on_ideal("capture", "--out", capture, "--bundle", bundle, "--frames", 1, "--dark-frames", 0).exit_code == 0
    identity = Registration(np.array([[1.0, 0, 0], [0, 1.0, 0]]), (128, 128), (128, 128), 1.0).save(tmp_path / "r.json")
    registered = tmp_path / "b.npy"
    result = _invoke("reconstruct", capture, "--iterations", 5, "--out", registered, "--registration", identity)
    assert result.exit_code == 0, result.output
    assert np.load(registered).shape == (64, 64) and np.isfinite(np.load(registered)).all()
    wrong = Registration(np.array([[1.0, 0, 0], [0, 1.0, 0]]), (128, 128), (100, 100), 1.0).save(tmp_path / "w.json")
    result = _invoke("reconstruct", capture, "--registration", wrong)
    assert "captured CDP has shape (128, 128) (height, width) but the model predicts (100, 100)" in str(
        result.exception
    )
