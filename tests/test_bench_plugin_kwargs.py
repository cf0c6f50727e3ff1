"""Plugin drivers taking ``**kwargs`` get their keys; named keys are still type-checked; the bench seed reaches them."""

import numpy as np
import pytest
from conftest_devices import fresh_sim_devices, sim_bench_document, write_bench  # noqa: F401
from slmsuite.hardware.cameras.simulated import SimulatedCamera
from slmsuite.hardware.slms.simulated import SimulatedSLM

from hil.bench.bench import Bench
from hil.bench.config import load_bench
from hil.common.config import ConfigError


class PopSLM(SimulatedSLM):
    """Reads ``sample_file`` out of ``**kwargs`` by name and forwards the rest to slmsuite."""

    def __init__(self, gain: float = 1.0, **kwargs):
        self.sample_file = kwargs.pop("sample_file", None)
        self.gain = gain
        super().__init__(**kwargs)


class OpaqueSLM(SimulatedSLM):
    """Keeps whatever it is given: no signature can list its keys."""

    def __init__(self, resolution=(32, 32), **options):
        self.options = options
        super().__init__(resolution)


class SeededCamera(SimulatedCamera):
    def __init__(self, slm, seed: int = -1, **kwargs):
        self.seed = seed
        super().__init__(slm, **kwargs)


def _doc(slm: dict) -> dict:
    doc = sim_bench_document()
    doc["seed"] = 11
    doc["slm"] = {"shape_px": [32, 32], **slm}
    doc["camera"] = {"driver": "test_bench_plugin_kwargs:SeededCamera", "kwargs": {"gain": 1000.0}}
    return doc


def test_kwargs_reach_plugins_and_the_seed_reaches_the_camera(tmp_path, fresh_sim_devices):  # noqa: F811
    doc = _doc(
        {"driver": "test_bench_plugin_kwargs:PopSLM", "kwargs": {"sample_file": "s.npy", "resolution": [32, 32]}}
    )
    with Bench.from_config(write_bench(tmp_path, doc)) as bench:
        assert bench.slm.slm.sample_file == "s.npy" and bench.slm.slm.shape == (32, 32)
        assert bench.camera.seed == 11
    doc = _doc({"driver": "test_bench_plugin_kwargs:OpaqueSLM", "kwargs": {"anything": [1, 2], "colour": "red"}})
    with Bench.from_config(write_bench(tmp_path, doc)) as bench:
        assert bench.slm.slm.options == {"anything": [1, 2], "colour": "red"}


def test_named_keys_are_still_checked(tmp_path):
    doc = _doc({"driver": "test_bench_plugin_kwargs:PopSLM", "kwargs": {"resolution": [32, 32], "gain": "high"}})
    with pytest.raises(ConfigError, match=r"key 'slm.kwargs.gain': expected a number, got 'high'"):
        load_bench(write_bench(tmp_path, doc))
    doc["slm"]["kwargs"] = {"resolution": [32, 32], "sample_fiel": "s.npy"}  # a typo: PopSLM reads only known keys
    with pytest.raises(ConfigError, match=r"unknown key 'slm.kwargs.sample_fiel'; PopSLM accepts: \[.*'sample_file'"):
        load_bench(write_bench(tmp_path, doc))


def test_the_fixture_camera_takes_the_bench_seed(tmp_path, fresh_sim_devices):  # noqa: F811
    from test_bench_fixture import fixture_bench

    frames = []
    for seed in (3, 3, 4):
        with Bench.from_config(fixture_bench(tmp_path, seed=seed)) as bench:
            frames.append(bench.capture().astype(float))
    assert np.array_equal(frames[0], frames[1]) and not np.array_equal(frames[0], frames[2])
