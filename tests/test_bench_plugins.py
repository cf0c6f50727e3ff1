"""Any slmsuite-compatible class plugs in by import path; the bench passes the SLM to cameras that take one."""

import numpy as np
from conftest_devices import fresh_sim_devices, sim_bench_document, write_bench  # noqa: F401

from hil.bench.bench import Bench


def test_slmsuite_simulators_by_import_path(tmp_path, fresh_sim_devices):  # noqa: F811
    doc = sim_bench_document()
    doc["slm"] = {
        "driver": "slmsuite.hardware.slms.simulated:SimulatedSLM",
        "kwargs": {"resolution": [64, 48], "bitdepth": 8},
        "shape_px": [48, 64],
        "bitdepth": 8,
    }
    doc["camera"] = {"driver": "slmsuite.hardware.cameras.simulated:SimulatedCamera", "kwargs": {"gain": 1000.0}}
    with Bench.from_config(write_bench(tmp_path, doc)) as bench:
        camera, slm = bench.camera, bench.slm.slm
        assert camera._slm is slm  # injected: SimulatedCamera(slm, ...)
        assert bench.slm.roi == (slice(16, 32), slice(24, 40))  # n = 16 mask centred on (48, 64)
        bench.show_mask(np.full((16, 16), np.pi))
        assert np.allclose(bench.slm.realised_phase(), np.pi, atol=0.03)
        assert camera.get_image().shape == (48, 64)
    assert np.all(slm.display == slm.display.flat[0])  # blanked on exit
