"""Live imaging on the simulated bench: counts, drops, storage, the drifting sample, safe exit on SIGINT."""

import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml
from conftest_devices import fresh_sim_devices  # noqa: F401
from test_calibrated_capture import nominal_bundle

from drivers.serial_sim import simulated_device
from drivers.sim_optics import DriftingSample
from hil.bench.bench import Bench
from hil.bench.live import LiveSettings, run_live
from hil.bench.reconstruct import reconstruct_classical, uniform_mask
from hil.benchmarks.calibrated_model import write_hidden_calibration

REPO = Path(__file__).resolve().parents[1]
LIVE_BENCH = REPO / "configs" / "bench_ideal_live.yaml"


def _mask_and_op(bench: Bench):
    mask = uniform_mask(bench.spec.system.optics.n, 0)
    return mask, bench.spec.model().operator(mask)


def _numbers(h5: h5py.File, group: str) -> list[int]:
    return [int(h5[group][k].attrs["frame_number"]) for k in sorted(h5[group])]


def test_every_trigger_gives_a_frame_and_a_phase_map_at_a_modest_rate(tmp_path):
    path = tmp_path / "live.h5"
    with Bench.from_config(LIVE_BENCH) as bench:
        mask, op = _mask_and_op(bench)
        decode = lambda y, _p: reconstruct_classical(op, y.double(), 2)  # noqa: E731 - a fast real decoder
        stats = run_live(bench, mask, op, decode, LiveSettings(fps=10, frames=15, dark_frames=1), path)
        assert simulated_device("sim-trigger://").firmware.state["armed"] == 0  # disarmed at the end
        assert simulated_device("sim-shutter://").firmware.state["shutter"] == "CLOSED"
    assert stats.triggers == stats.frames == stats.decoded == 15 and stats.dropped == []
    assert 8 < stats.fps <= 10.5 and stats.latency_ms() > 0
    with h5py.File(path) as h5:
        numbers = _numbers(h5, "phase_rad")
        assert numbers == list(range(numbers[0], numbers[0] + 15)) == _numbers(h5, "frames")
        stamps = np.array([h5["phase_rad"][k].attrs["camera_time_s"] for k in sorted(h5["phase_rad"])])
        assert np.median(np.diff(stamps)) == pytest.approx(0.1, abs=0.02)  # camera-side timestamps at 10 fps
        assert h5["phase_rad"]["00000"].shape == (64, 64)
        assert json.loads(h5.attrs["result_json"])["decoded"] == 15


def test_drops_are_counted_when_the_decoder_is_slower_than_the_camera(tmp_path):
    path = tmp_path / "live.h5"

    def slow(y, _photons):
        time.sleep(0.1 * y.shape[0])  # 10 frames per second against a 50 fps camera
        return torch.zeros(y.shape[0], 64, 64)

    settings = LiveSettings(fps=50, frames=30, queue_frames=2, max_batch=1, dark_frames=1, keep_frames=False)
    with Bench.from_config(LIVE_BENCH) as bench:
        mask, op = _mask_and_op(bench)
        stats = run_live(bench, mask, op, slow, settings, path)
    assert stats.triggers == stats.frames == 30
    assert len(stats.dropped) >= 15 and stats.decoded + len(stats.dropped) == 30
    with h5py.File(path) as h5:
        decoded = _numbers(h5, "phase_rad")
        dropped = json.loads(h5.attrs["dropped_frame_numbers"])
    assert dropped == stats.dropped and sorted(decoded + dropped) == list(range(decoded[0], decoded[0] + 30))


def test_frames_without_signal_are_kept_and_counted_not_decoded(tmp_path):
    doc = yaml.safe_load(LIVE_BENCH.read_text())
    doc["system"] = str(REPO / "configs" / "system.yaml")
    doc["serial"]["shutter"]["kwargs"]["power_mw"] = 0.0  # the shutter opens, no light comes out
    bench_path = tmp_path / "bench.yaml"
    bench_path.write_text(yaml.safe_dump(doc))
    path = tmp_path / "live.h5"
    with Bench.from_config(bench_path) as bench:
        mask, op = _mask_and_op(bench)
        stats = run_live(bench, mask, op, lambda y, _p: 1 / 0, LiveSettings(fps=20, frames=5, dark_frames=1), path)
    assert stats.decoded == 0 and len(stats.rejected) == stats.frames == 5
    with h5py.File(path) as h5:
        assert {h5["rejected"][k].attrs["reason"] for k in h5["rejected"]} == {"no signal"} and "phase_rad" not in h5


def test_the_live_sample_drifts_back_and_forth():
    sample = DriftingSample("phase_screen", 16, np.random.default_rng(0), math.pi, speed_px_per_s=4.0)
    assert [sample.offset_px(t) for t in (0, 0.5, 1.0, 2.0, 3.0, 4.0)] == [0, 2, 4, 8, 4, 0]  # travel 8 px
    np.testing.assert_array_equal(sample.at(1.0), sample.phase_rad[4:20, 4:20])


CHILD = """
import sys
from hil.cli import main
sys.argv = ["hil", "live", "--bench", sys.argv[1], "--random-mask", "--raar", "2", "--frames", "100000",
            "--out", sys.argv[2], "--fps", "20"]
main()
"""


@pytest.mark.slow
def test_sigint_during_live_imaging_leaves_the_bench_safe_and_the_file_complete(tmp_path):
    doc = yaml.safe_load(LIVE_BENCH.read_text())
    doc["system"] = str(REPO / "configs" / "system.yaml")
    shutter, trigger = (
        f"sim-shutter://?state={tmp_path / 'shutter.json'}",
        f"sim-trigger://?state={tmp_path / 'trigger.json'}",
    )
    doc["serial"]["shutter"]["port"] = doc["camera"]["kwargs"]["light_source"] = shutter
    doc["serial"]["trigger"]["port"] = trigger
    bench = tmp_path / "bench.yaml"
    bench.write_text(yaml.safe_dump(doc))
    script, out = tmp_path / "live.py", tmp_path / "live.h5"
    script.write_text(CHILD)
    with open(tmp_path / "err.txt", "w") as err:
        child = subprocess.Popen([sys.executable, str(script), str(bench), str(out)], stdout=err, stderr=err)
    try:
        deadline = time.monotonic() + 120
        while (
            not (tmp_path / "trigger.json").exists()
            or json.loads((tmp_path / "trigger.json").read_text())["fired"] < 10
        ):
            assert time.monotonic() < deadline and child.poll() is None, (tmp_path / "err.txt").read_text()
            time.sleep(0.1)
        assert json.loads((tmp_path / "shutter.json").read_text())["shutter"] == "OPEN"  # streaming
        child.send_signal(signal.SIGINT)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode != 0
    assert json.loads((tmp_path / "shutter.json").read_text()) == {"shutter": "CLOSED", "laser": "OFF", "power_mw": 0.0}
    assert json.loads((tmp_path / "trigger.json").read_text())["armed"] == 0
    with h5py.File(out) as h5:
        result = json.loads(h5.attrs["result_json"])
        assert result["decoded"] == len(h5["phase_rad"]) >= 1  # how many depends on the machine's load
        assert result["decoded"] + result["dropped"] + result["rejected"] == result["frames"] == result["triggers"]


def test_live_command_runs_the_shipped_student(tmp_path):
    from typer.testing import CliRunner

    from hil.cli import app

    out = tmp_path / "live.h5"
    result = CliRunner().invoke(app, ["live", "--frames", "6", "--fps", "5", "--dark-frames", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "6 of 6 frames decoded (6 triggers, 0 dropped, 0 saturated or without signal)" in " ".join(
        result.output.split()
    )
    with h5py.File(out) as h5:
        assert len(h5["phase_rad"]) == len(h5["frames"]) == 6 and h5.attrs["procedure"] == "live"
        assert json.loads(h5.attrs["provenance_json"])["config"]["decoder"].endswith("models/student)")


def test_live_rate_comes_from_the_trigger_period():
    from hil.bench.config import load_bench
    from hil.bench.live import trigger_rate_fps

    assert trigger_rate_fps(load_bench(LIVE_BENCH)) == pytest.approx(20.0)  # period_us: 50000
    assert trigger_rate_fps(load_bench(REPO / "configs" / "bench_ideal.yaml")) == pytest.approx(100.0)


def test_live_decodes_the_cameras_own_pixels_through_the_benchs_calibrated_model(tmp_path, fresh_sim_devices):  # noqa: F811
    """On the fixture bench calibrated with its hidden values (40 x 48 camera registered to the 32 x 32 model
    detector, SLM-plane field, measured LUT), each live phase map is the bundle's decoder on its raw frame
    through ``spec.model()``, exactly as reconstruct decodes a capture; nothing is resampled."""
    from typer.testing import CliRunner

    from hil.bench.config import load_bench
    from hil.bench.reconstruct import (
        detector_pixels_per_camera_pixel,
        frame_to_photons,
        reconstruct_bundle,
        to_model_units,
    )
    from hil.cli import app
    from hil.learning.bundle import load_bundle
    from hil.physics.registration import Registration

    cfg, bundle, out = write_hidden_calibration(tmp_path), nominal_bundle(tmp_path), tmp_path / "live.h5"
    args = ["live", "--bench", cfg, "--bundle", bundle, "--frames", 3, "--fps", 10, "--dark-frames", 0, "--out", out]
    forbidden = lambda *a, **k: pytest.fail("a camera frame was resampled onto the model grid")  # noqa: E731
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Registration, "resample", forbidden)
        result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    spec = load_bench(cfg)
    model, camera, loaded = spec.model(), spec.system.camera, load_bundle(bundle, expect_system=spec.system)
    op = model.operator(loaded.mask_rad[0].double())
    with h5py.File(out) as h5:
        assert json.loads(h5.attrs["registration_json"])["camera_shape"] == [40, 48] and "field" in h5
        frames = [h5["frames"][k][()] for k in sorted(h5["frames"])]
        phases = [h5["phase_rad"][k][()] for k in sorted(h5["phase_rad"])]
    assert len(frames) == len(phases) == 3 and frames[0].shape == (40, 48) and phases[0].shape == (16, 16)
    for frame, phase in zip(frames, phases, strict=True):
        photons = frame_to_photons(frame - camera.dark_offset_adu, camera)
        level = float(photons.mean()) / detector_pixels_per_camera_pixel(model)
        expected = reconstruct_bundle(loaded, op, to_model_units(op, photons), level)
        # 1e-4 rad: the decoder's rescue (500 RAAR iterations) carries the float rounding of the two paths
        np.testing.assert_allclose(phase, expected[0].double().numpy(), atol=1e-4)


def test_live_refuses_a_camera_the_model_does_not_predict(tmp_path, fresh_sim_devices):  # noqa: F811
    from typer.testing import CliRunner

    from hil.cli import app

    cfg, bundle, out = write_hidden_calibration(tmp_path), nominal_bundle(tmp_path), tmp_path / "live.h5"
    doc = yaml.safe_load(cfg.read_text())
    doc["calibration"].pop("registration")  # the 40 x 48 camera without its registration
    cfg.write_text(yaml.safe_dump(doc))
    result = CliRunner().invoke(app, ["live", "--bench", str(cfg), "--bundle", str(bundle), "--out", str(out)])
    assert "the camera gives frames of (40, 48) (height, width) but the model predicts (32, 32)" in str(
        result.exception
    )
    assert not out.exists() and simulated_device("sim-shutter://").firmware.state["shutter"] == "CLOSED"
