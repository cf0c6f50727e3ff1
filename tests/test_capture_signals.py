"""Honest signals of a capture: integrated photon level, lit dark frames, empty frames, auto-exposure."""

import math
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from hil.bench.bench import Bench
from hil.bench.capture import CaptureSettings, capture_cdp
from hil.bench.reconstruct import load_capture
from hil.bench.signals import SaturationError, SignalError

REPO = Path(__file__).resolve().parents[1]


def _bench(tmp_path: Path, calibrated: dict | None = None, sensor: dict | None = None, always_lit=False) -> Path:
    """Simulated bench; ``sensor``: the camera's hidden truth, ``calibrated``: what the system config says."""
    system = yaml.safe_load((REPO / "configs" / "system.yaml").read_text())
    system["camera"] |= calibrated if calibrated is not None else (sensor or {})
    (tmp_path / "system.yaml").write_text(yaml.safe_dump(system))
    cfg = yaml.safe_load((REPO / "configs" / "bench_ideal.yaml").read_text())
    cfg["system"] = str(tmp_path / "system.yaml")
    cfg["camera"]["kwargs"]["sensor"] = sensor or {}
    if always_lit:  # the camera's light does not go through the shutter
        cfg["camera"]["kwargs"]["light_source"] = None
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _mask(n: int = 64) -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 2 * math.pi, (n, n))


def _capture(cfg: Path, path: Path, **settings) -> None:
    with Bench.from_config(cfg) as bench:
        capture_cdp(bench, _mask(), CaptureSettings(**settings), path)


def test_averaged_capture_reports_the_photons_it_integrated(tmp_path):
    cfg = _bench(tmp_path)
    _capture(cfg, tmp_path / "four.h5", frames=4, dark_frames=1)
    _capture(cfg, tmp_path / "one.h5", frames=1, dark_frames=1)
    four, one = load_capture(tmp_path / "four.h5"), load_capture(tmp_path / "one.h5")
    assert four.frames == 4 and one.frames == 1
    # system.yaml: 50 photons per pixel per frame at gain 1, QE 1; four frames integrate 200
    assert four.photons_per_pixel == pytest.approx(200.0, rel=0.03)
    assert four.photons_per_frame == pytest.approx(50.0, rel=0.03)
    assert one.photons_per_pixel == pytest.approx(50.0, rel=0.03)
    with h5py.File(tmp_path / "four.h5", "r+") as h5:  # a file from before the count was stored
        del h5.attrs["frames"]
    assert load_capture(tmp_path / "four.h5").frames == 4  # counted from the frames kept


def test_lit_dark_frames_are_refused_and_kept(tmp_path):
    cfg = _bench(tmp_path, always_lit=True)  # light never goes off
    with pytest.raises(SignalError, match=r"dark frame 0 is not dark: .*light reaches the camera"):
        _capture(cfg, tmp_path / "c.h5", frames=1, dark_frames=2)
    with h5py.File(tmp_path / "c.h5") as h5:
        assert len(h5["dark"]) == 2 and "cdp_adu" not in h5


def test_dark_offset_against_a_stale_calibration_is_refused(tmp_path):
    cfg = _bench(tmp_path, calibrated={}, sensor={"dark_offset_adu": 20.0, "read_noise_e": 1.0})
    with pytest.raises(SignalError, match=r"mean \+20 ADU from the calibrated offset 0 ADU.*radiometry"):
        _capture(cfg, tmp_path / "c.h5", frames=1, dark_frames=1)


def test_a_frame_without_signal_is_an_error(tmp_path):
    cfg = _dark_laser(tmp_path)
    with pytest.raises(SignalError, match="light frame 0 has no signal"):
        _capture(cfg, tmp_path / "c.h5", frames=2, dark_frames=1)


def _dark_laser(tmp_path: Path) -> Path:
    cfg_path = _bench(tmp_path)
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["serial"]["shutter"]["kwargs"]["power_mw"] = 0.0  # shutter opens, no light comes out
    cfg_path.write_text(yaml.safe_dump(cfg))
    return cfg_path


def test_reconstruction_refuses_a_cdp_without_signal(tmp_path):
    _capture(_bench(tmp_path), tmp_path / "c.h5", frames=1, dark_frames=1)
    with h5py.File(tmp_path / "c.h5", "r+") as h5:
        h5["cdp_adu"][...] = -0.0
    with pytest.raises(SignalError, match=r"c.h5: light frame 0 has no signal"):
        load_capture(tmp_path / "c.h5")


def test_no_dark_frames_subtracts_the_calibrated_offset(tmp_path):
    sensor = {"dark_offset_adu": 100.0, "read_noise_e": 1.0}
    _capture(_bench(tmp_path, sensor=sensor), tmp_path / "c.h5", frames=2, dark_frames=0)
    with h5py.File(tmp_path / "c.h5") as h5:
        assert "dark" not in h5 and h5.attrs["dark_frames"] == 0
        assert h5["cdp_adu"][()].mean() == pytest.approx(50.0, rel=0.03)  # 150 ADU frames minus 100


@pytest.mark.parametrize("exposure_s", [0.01, 1e-4])  # saturating start, dim start
def test_auto_exposure_reaches_its_target_without_saturating(tmp_path, exposure_s):
    sensor = {"adc_bits": 8, "gain_adu_per_e": 4.0}  # 0.01 s saturates (test_capture)
    path = tmp_path / "c.h5"
    _capture(_bench(tmp_path, sensor=sensor), path, frames=2, dark_frames=1, exposure_s=exposure_s, auto_exposure=0.5)
    with h5py.File(path) as h5:
        steps = [h5["auto_exposure"][k].attrs["exposure_s"] for k in sorted(h5["auto_exposure"])]
        peaks = np.array([h5["frames"][k][()].max() for k in sorted(h5["frames"])])
        assert steps[0] == exposure_s and h5.attrs["exposure_s"] != exposure_s
        assert h5.attrs["saturated_fraction"] == 0.0
    assert np.all(peaks < 255) and np.all(peaks > 0.3 * 255)


def test_auto_exposure_gives_up_when_even_the_shortest_exposure_saturates(tmp_path):
    cfg = _bench(tmp_path, sensor={"adc_bits": 8, "gain_adu_per_e": 4.0, "photons_per_pixel": 1e7})
    with pytest.raises(SaturationError, match="auto-exposure: saturated even at 1e-05 s"):
        _capture(cfg, tmp_path / "c.h5", frames=1, dark_frames=1, exposure_s=1e-4, auto_exposure=0.5)


def test_decoder_photon_level_of_an_averaged_capture(tmp_path, monkeypatch):
    """reconstruct --bundle and finetune give the decoder the photons the four frames integrated."""
    from typer.testing import CliRunner

    import hil.bench.reconstruct as reconstruct
    from calibration.finetune import load_measured
    from hil.cli import app
    from hil.learning.bundle import load_bundle, save_bundle
    from hil.learning.decoders import DecoderConfig
    from hil.learning.training import TrainConfig, build_model
    from hil.physics.system import load_system

    cfg = TrainConfig(role="student", decoder=DecoderConfig(stages=1, channels=4, hidden_layers=1, refine_steps=1))
    system = load_system()
    path = save_bundle(tmp_path / "bundle", build_model(cfg, system).system, cfg, system, metrics={})
    bundle = load_bundle(path)
    with Bench.from_config(_bench(tmp_path)) as bench:
        mask = bundle.mask_rad[0].double().numpy()
        capture_cdp(bench, mask, CaptureSettings(frames=4, dark_frames=1), tmp_path / "c.h5")
    assert load_measured([tmp_path / "c.h5"], bundle).photons.item() == pytest.approx(200.0, rel=0.03)
    levels = []
    real_decode = reconstruct.decode
    monkeypatch.setattr(reconstruct, "decode", lambda s, op, y, p: levels.append(p) or real_decode(s, op, y, p))
    result = CliRunner().invoke(app, ["reconstruct", str(tmp_path / "c.h5"), "--bundle", str(path)])
    assert result.exit_code == 0, result.output
    assert levels == [pytest.approx(200.0, rel=0.03)]


def test_a_dim_frame_is_signal_and_a_dark_one_is_not():
    """5 photons per pixel (10 dB) under 3 e- read noise: 3 ADU mean against 1.8 ADU of noise per pixel is plainly
    signal over 1920 pixels (the old per-pixel tolerance refused it); the same sensor with the light off is not."""
    from hil.bench.signals import has_signal, signal_tolerance_adu
    from hil.physics.camera import CameraSpec

    camera = CameraSpec(gain_adu_per_e=0.6, read_noise_e=3.0, dark_offset_adu=100.0)
    rng = np.random.default_rng(0)
    shape = (40, 48)
    dark = np.rint(100 + 0.6 * rng.normal(0, 3, (2, *shape))).mean(axis=0)
    lit = np.rint(100 + 0.6 * (rng.poisson(5.0, shape) + rng.normal(0, 3, shape)))
    unlit = np.rint(100 + 0.6 * rng.normal(0, 3, shape))
    assert signal_tolerance_adu(camera, lit.size) < 0.25
    assert has_signal(lit, dark, camera) and not has_signal(unlit, dark, camera)
