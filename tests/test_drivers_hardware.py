"""Real devices (opt-in): ``pytest --hardware`` with ``HIL_BENCH_CONFIG=path/to/bench.yaml``."""

import os

import numpy as np
import pytest

from hil.bench.bench import Bench
from hil.bench.config import load_bench

pytestmark = pytest.mark.hardware


@pytest.fixture
def bench_config():
    path = os.environ.get("HIL_BENCH_CONFIG")
    if not path:
        pytest.skip("set HIL_BENCH_CONFIG to the real bench's config")
    return load_bench(path)


def test_every_device_answers_and_ends_safe(bench_config):
    with Bench(bench_config) as bench:
        rows = bench.describe()
        assert [row["device"] for row in rows][:2] == ["slm", "camera"]
        assert all(row["identity"] for row in rows)
        assert bench.safe_state() == []


def test_serial_accessories_speak_the_protocol(bench_config):
    with Bench(bench_config) as bench:
        for accessory in bench.serial.values():
            vendor, model, serial_number, firmware = accessory.identify().split(",")
            assert model and serial_number and firmware
            assert accessory.status()


def test_mask_reaches_the_camera(bench_config):
    with Bench(bench_config) as bench:
        n = bench_config.system.optics.n
        bench.light_on()
        bench.show_mask(np.zeros((n, n)))
        flat = bench.capture().astype(float)
        bench.show_mask(np.random.default_rng(0).uniform(0, 2 * np.pi, (n, n)))
        random = bench.capture().astype(float)
        assert flat.max() > random.max()  # a flat mask focuses light; a random one spreads it
