"""The default bench (configs/bench_sim.yaml) is the realistic one, calibrated; the ideal twin stays for tests;
each bench's default bundle is the shipped one made for its system."""

import shutil

import numpy as np
import pytest
from conftest_devices import REPO

from hil.bench.config import DEFAULT_BENCH, load_bench
from hil.learning.bundle import BundleError, default_bundle, load_bundle
from hil.physics.system import load_system

IDEAL_BENCH = REPO / "configs" / "bench_ideal.yaml"


def test_the_default_bench_has_every_imperfection_on():
    assert DEFAULT_BENCH == REPO / "configs" / "bench_sim.yaml"
    spec = load_bench(DEFAULT_BENCH)
    slm, camera, system = spec.slm.kwargs, spec.camera.kwargs, spec.system
    assert spec.slm.cls.__name__ == "FixtureSLM" and spec.camera.cls.__name__ == "FixtureCamera"  # not the twin
    assert system.slm.macro_pixel > 1
    width, height = camera["resolution"]
    model_side = system.optics.pad_factor * system.optics.n
    assert (height, width) != (model_side, model_side) and camera["rotation_deg"] != 0 and any(camera["offset_px"])
    assert slm["gamma_exponent"] != 1 and slm["phase_range_rad"] < 2 * np.pi  # nonlinear, short of a wave
    assert slm["crosstalk_sigma_px"] > 0 and np.isfinite(slm["beam_waist_px"]) and slm["iris_radius_px"] > 0
    assert np.abs(slm["aberration_rad"]).max() > 0
    assert camera["dark_offset_adu"] > 0 and camera["read_noise_e"] > 0


def test_the_default_bench_loads_its_stored_calibration():
    spec = load_bench(DEFAULT_BENCH)
    camera = spec.camera.kwargs
    width, height = camera["resolution"]
    model = spec.model()
    assert model.camera_shape == (height, width) and model.field is not None
    assert abs(model.registration.parameters()["rotation_deg"] + camera["rotation_deg"]) < 0.1  # measured, not set
    gamma = np.asarray(spec.system.slm.gamma)  # measured response in waves: nonlinear and short of one wave
    linear = np.linspace(0, gamma[-1], gamma.size)
    assert gamma.size == 256 and 0.8 < gamma[-1] < 0.95 and np.abs(gamma - linear).max() > 0.02
    assert spec.system.slm.crosstalk_sigma_px > 0 and spec.system.camera.dark_offset_adu > 0
    summary = spec.calibration_summary()
    assert "bench_sim/system.yaml (measured SLM response, 256 levels)" in summary
    assert "bench_sim/registration.json" in summary and "bench_sim/field.json" in summary


def test_the_ideal_bench_is_the_twin_with_every_imperfection_off():
    spec = load_bench(IDEAL_BENCH)
    slm = spec.slm.kwargs
    assert spec.slm.cls.__name__ == "SimulatedBenchSLM" and spec.system.slm.macro_pixel == 1
    assert slm["crosstalk_sigma_px"] == 0 and slm["phase_range_rad"] == pytest.approx(2 * np.pi)
    assert slm["illumination_waist_rel"] is None and len(slm["aberration_rad"]) == 0
    assert spec.calibration_files == {} and "no registration or field file" in spec.calibration_summary()


def test_default_bundle_is_the_shipped_one_made_for_the_bench():
    for bench, expected in ((DEFAULT_BENCH, "student_fixture"), (IDEAL_BENCH, "student")):
        system = load_bench(bench).system
        path = default_bundle(system)
        assert path == REPO / "models" / expected
        load_bundle(path, expect_system=system)  # it really fits


def test_default_bundle_prefers_student_then_name_order(tmp_path):
    for name in ("b", "a", "student"):
        shutil.copytree(REPO / "models" / "student_fixture", tmp_path / name)
    system = load_bench(DEFAULT_BENCH).system
    assert default_bundle(system, tmp_path) == tmp_path / "student"
    shutil.rmtree(tmp_path / "student")
    assert default_bundle(system, tmp_path) == tmp_path / "a"


def test_no_bundle_fits_is_one_clear_error(tmp_path):
    shutil.copytree(REPO / "models" / "student_fixture", tmp_path / "student_fixture")
    named = r"no student bundle in .* \(optics.n 64, pad_factor 2, propagator fraunhofer, slm.macro_pixel 1"
    with pytest.raises(BundleError, match=named):
        default_bundle(load_system(), tmp_path)
