"""The independent fixture bench (drivers/slmsuite_bench.py) does what its keywords say, checked
against closed forms: spot positions from the grating equation, the sensor's offset and noise,
the phase response, the shutter leak."""

import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest_devices import fresh_sim_devices  # noqa: F401

from drivers.slmsuite_bench import FixtureCamera, FixtureSLM

REPO = Path(__file__).resolve().parents[1]


def fixture_bench(tmp_path: Path, varied: bool = False, seed: int | None = None, slm=None, camera=None, **top) -> Path:
    """``configs/bench_fixture[_varied].yaml`` (and its system file) copied into ``tmp_path``, keys overridden."""
    name = "bench_fixture_varied.yaml" if varied else "bench_fixture.yaml"
    doc = yaml.safe_load((REPO / "configs" / name).read_text())
    (tmp_path / "system_fixture.yaml").write_text((REPO / "configs" / "system_fixture.yaml").read_text())
    if seed is not None:
        doc["seed"] = seed
    doc["slm"]["kwargs"].update(slm or {})
    doc["camera"]["kwargs"].update(camera or {})
    doc.update(top)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc))
    return path


def _grating(slm: FixtureSLM, cycles_x: float, cycles_y: float, side: int = 64) -> np.ndarray:
    rows, cols = np.indices(slm.shape)
    return 2 * math.pi * (cycles_x * cols + cycles_y * rows) / side


def test_spots_land_where_the_grating_equation_and_the_affine_put_them():
    slm = FixtureSLM(crosstalk_sigma_px=0.0, aberration_rad=(), phase_range_rad=2 * math.pi, gamma_exponent=1.0)
    cam = FixtureCamera(slm, read_noise_e=0.0, rotation_deg=2.0, offset_px=(1.5, -2.5), total_photons=1e6)
    theta = math.radians(2.0)
    pitch_wav = 8.0 / 0.633
    for cx, cy in ((5, 0), (0, -4), (-3, 3)):
        slm.set_phase(_grating(slm, cx, cy), settle=False)
        image = cam.photons()
        image = np.where(image > 0.2 * image.max(), image, 0)
        rows, cols = np.indices(image.shape)
        found = np.array([(image * cols).sum(), (image * rows).sum()]) / image.sum()
        kx, ky = cx / (64 * pitch_wav), cy / (64 * pitch_wav)
        expected = np.array([24 + 1.5, 20 - 2.5]) + 2265.0 * np.array(
            [math.cos(theta) * kx - math.sin(theta) * ky, math.sin(theta) * kx + math.cos(theta) * ky]
        )
        np.testing.assert_allclose(found, expected, atol=0.15)


def test_sensor_offset_read_noise_gain_and_shot_noise():
    slm = FixtureSLM()
    cam = FixtureCamera(slm, gain_adu_per_e=0.5, dark_offset_adu=80.0, read_noise_e=4.0, light_source=None, seed=1)
    cam.light = lambda: 0.0  # no light at all
    dark = np.stack([cam.get_image().astype(float) for _ in range(20)])
    assert dark.mean() == pytest.approx(80.0, abs=0.1)
    assert dark.std() == pytest.approx(0.5 * 4.0, rel=0.05)  # read noise in ADU (rounding adds 1/12 ADU²)
    del cam.light
    slm.set_phase(np.random.default_rng(0).uniform(0, 2 * math.pi, slm.shape), settle=False)
    mean_e = cam.photons()
    frames = np.stack([cam.get_image().astype(float) for _ in range(40)])
    bright = (mean_e > 200) & (mean_e < 6000)  # below the 12-bit ceiling
    signal = frames[:, bright].mean(axis=0) - 80.0
    np.testing.assert_allclose(signal, 0.5 * mean_e[bright], rtol=0.05)
    variance = frames[:, bright].var(axis=0, ddof=1)
    ratio = np.median(variance / (0.25 * mean_e[bright] + 4.0 + 1 / 12))
    assert ratio == pytest.approx(1.0, abs=0.1)  # Poisson: var = gain² (photons + read²)


def test_phase_response_is_the_hidden_gamma():
    slm = FixtureSLM(phase_range_rad=0.8 * 2 * math.pi, gamma_exponent=1.3)
    g = np.arange(256)
    expected = -0.8 * 2 * math.pi * (g / 256) ** 1.3
    np.testing.assert_allclose(slm.true_phase(g), expected, atol=1e-12)
    np.testing.assert_allclose(slm._display2phase(g[None].astype(np.uint8), np.float64)[0], expected, atol=1e-6)


def test_shutter_leak_lights_the_dark(tmp_path, fresh_sim_devices):  # noqa: F811
    from hil.bench.bench import Bench

    for leak, lit in ((0.0, False), (0.05, True)):
        with Bench.from_config(fixture_bench(tmp_path, camera={"shutter_leak": leak})) as bench:
            bench.show_mask(np.random.default_rng(0).uniform(0, 2 * math.pi, (16, 16)))
            photons = bench.camera.photons()
            with bench.lit():  # at the reference power
                lit_photons = bench.camera.photons()
        assert (photons.sum() > 0) == lit
        np.testing.assert_allclose(photons, leak * lit_photons)


def test_a_placed_sample_meets_the_mask_on_an_offset_roi(fresh_sim_devices):  # noqa: F811
    """The varied bench's ROI sits (2, -3) SLM px from the panel's centre: the sample follows it, each sample pixel
    on one macro-pixel, so the truth on the mask grid is the sample the light passes."""
    from hil.bench.bench import Bench

    sample = np.random.default_rng(1).uniform(0.1, math.pi, (16, 16))
    with Bench.from_config(REPO / "configs" / "bench_fixture_varied.yaml") as bench:
        bench.place_sample(sample)
        rows, cols = bench.slm.roi
        placed = bench.slm.slm.sample_rad
        np.testing.assert_array_equal(placed[rows, cols], np.kron(sample, np.ones((4, 4))))
        assert placed.sum() == pytest.approx(placed[rows, cols].sum())  # nothing beside the ROI
        bench.place_sample(None)
        assert not bench.slm.slm.sample_rad.any()
