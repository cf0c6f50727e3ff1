"""The bench context manager ends in the safe state on every exit path, within a second."""

import json
import os
import signal
import subprocess
import sys
import time
import weakref

import numpy as np
import pytest
from conftest_devices import fresh_sim_devices, sim_bench_document, write_bench  # noqa: F401

from drivers.errors import DeviceDisconnected, LimitError
from drivers.io_guard import atomic_io
from drivers.serial_sim import simulated_device
from hil.bench.bench import Bench


@pytest.fixture
def bench_file(tmp_path, fresh_sim_devices):  # noqa: F811
    state = tmp_path / "shutter.json"
    return write_bench(tmp_path, sim_bench_document(shutter_state=state)), state


def _shutter_state(path):
    return json.loads(path.read_text())


def _assert_safe(bench_state, slm):
    assert _shutter_state(bench_state) == {"shutter": "CLOSED", "laser": "OFF", "power_mw": 0.0}
    assert simulated_device("sim-trigger://").firmware.state["armed"] == 0
    assert np.all(slm.display == slm.display.flat[0])  # blank: one gray level everywhere


def _run(bench):
    bench.light_on()
    bench.serial["trigger"].arm()
    bench.show_mask(np.random.default_rng(0).uniform(0, 2 * np.pi, (16, 16)))
    return bench.slm.slm


def test_normal_exit(bench_file):
    path, state = bench_file
    with Bench.from_config(path) as bench:
        assert bench.capture().max() == 0  # the simulated camera is lit by the simulated shutter
        slm = _run(bench)
        assert _shutter_state(state) == {"shutter": "OPEN", "laser": "ON", "power_mw": 1.0}
        lit = bench.capture()
        assert lit.shape == (32, 32) and lit.mean() == pytest.approx(50, rel=0.05)  # system: 50 photons/pixel
        bench.serial["shutter"].set_power(2.0)
        assert bench.capture().mean() == pytest.approx(100, rel=0.05)
        bench.safe_state()
        assert bench.capture().max() == 0
    _assert_safe(state, slm)
    assert bench.serial == {} and bench.slm is None and bench.safe_state_problems == []


def test_exception_exit(bench_file):
    path, state = bench_file
    with pytest.raises(RuntimeError, match="analysis failed"), Bench.from_config(path) as bench:
        slm = _run(bench)
        raise RuntimeError("analysis failed")
    _assert_safe(state, slm)


def test_device_error_exit_still_secures_the_other_devices(bench_file):
    path, state = bench_file
    with pytest.raises(DeviceDisconnected), Bench.from_config(path) as bench:
        slm = _run(bench)
        simulated_device("sim-trigger://").unplug()
        bench.serial["trigger"].fire()
    assert _shutter_state(state)["shutter"] == "CLOSED" and _shutter_state(state)["laser"] == "OFF"
    assert np.all(slm.display == slm.display.flat[0])
    assert len(bench.safe_state_problems) == 1 and bench.safe_state_problems[0].startswith("serial.trigger:")


def test_safe_state_is_idempotent_and_bounded_even_with_a_silent_device(bench_file):
    path, state = bench_file
    with Bench.from_config(path) as bench:
        slm = _run(bench)
        assert bench.safe_state() == [] and bench.safe_state() == []
        simulated_device("sim-trigger://").firmware.mute_next = 100
        start = time.perf_counter()
        problems = bench.safe_state()
        assert time.perf_counter() - start < 1.0
        assert len(problems) == 1 and "no reply to 'SAFE'" in problems[0]
        simulated_device("sim-trigger://").firmware.mute_next = 0
    _assert_safe(state, slm)
    bench.close()  # closing twice is harmless


def test_limits_checked_before_io(bench_file):
    path, _ = bench_file
    with Bench.from_config(path) as bench:
        before = bench.camera.exposure_s
        with pytest.raises(LimitError, match=r"camera.exposure_s = 5 is outside the allowed range \[1e-05, 1\] s"):
            bench.set_exposure(5)
        assert bench.camera.exposure_s == before
        with pytest.raises(LimitError, match=r"power_mw = 9 is outside"):
            bench.serial["shutter"].set_power(9)


def test_failed_open_leaves_nothing_on(bench_file):
    path, state = bench_file
    before = signal.getsignal(signal.SIGINT)  # default_int_handler, or SIG_IGN in a background job
    simulated_device("sim-trigger://").unplug()
    with pytest.raises(DeviceDisconnected, match="cannot open port"), Bench.from_config(path):
        pass
    assert _shutter_state(state)["shutter"] == "CLOSED"
    assert signal.getsignal(signal.SIGINT) is before  # handlers restored


def test_first_ctrl_c_waits_for_the_exchange_second_one_does_not(bench_file):
    path, _ = bench_file
    with Bench.from_config(path):
        finished = False
        with pytest.raises(KeyboardInterrupt), atomic_io():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.01)
            finished = True  # the exchange was not cut
        assert finished
        reached = False
        with pytest.raises(KeyboardInterrupt), atomic_io():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.01)
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.01)
            reached = True
        assert not reached


def test_a_signal_whose_exception_python_swallowed_still_ends_the_session(bench_file, capfd):
    """A handler that runs inside a weakref callback has its exception dropped by Python ("Exception
    ignored in ..."); the bench keeps that quiet and the next operation raises it (it made a CI run hang)."""
    path, state = bench_file
    with pytest.raises(SystemExit) as stop, Bench.from_config(path) as bench:
        bench.light_on()

        class Owner:
            pass

        owner = Owner()
        watcher = weakref.ref(owner, lambda _: bench._on_signal(signal.SIGHUP, None))  # noqa: F841
        del owner  # the callback runs here; Python drops the SystemExit it raises
        bench.capture()
        pytest.fail("the swallowed SIGHUP let the capture go on")
    assert stop.value.code == 128 + signal.SIGHUP
    assert _shutter_state(state)["shutter"] == "CLOSED"
    assert "Exception ignored" not in capfd.readouterr().err


def test_an_interrupt_inside_a_device_exchange_lets_the_exchange_finish(bench_file):
    """Ctrl-C between a trigger and the frame it starts: the frame is still read (live imaging counts every
    triggered frame), and the interrupt is raised when the exchange ends; outside an exchange at once."""
    path, _ = bench_file
    frames = []
    with pytest.raises(KeyboardInterrupt), Bench.from_config(path) as bench:
        with pytest.raises(KeyboardInterrupt), atomic_io():
            bench._on_signal(signal.SIGINT, None)  # deferred: the exchange is in progress
            frames.append(bench.capture())
        assert len(frames) == 1
        bench.capture()  # the bench still remembers it: the next operation outside an exchange raises it
        pytest.fail("the interrupt was forgotten")


CHILD = """
import sys
import numpy as np
from hil.bench.bench import Bench

slm = None
try:
    with Bench.from_config(sys.argv[1]) as bench:
        slm = bench.slm.slm
        bench.light_on()
        print("READY", flush=True)
        rng = np.random.default_rng(0)
        while True:
            bench.show_mask(rng.uniform(0, 6.28, (16, 16)))
            bench.capture()
            bench.serial["shutter"].status()
finally:
    if slm is not None:
        print("BLANK", bool((slm.display == slm.display.flat[0]).all()), flush=True)
"""


def _wait_for(path, text, timeout_s=60.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text():
            return
        time.sleep(0.05)
    raise AssertionError(f"{text!r} never appeared in {path}")


@pytest.mark.slow
def test_signals_during_a_capture_loop_leave_the_bench_safe(tmp_path):
    script = tmp_path / "loop.py"
    script.write_text(CHILD)
    cases = {"sigint": [signal.SIGINT], "sigint_twice": [signal.SIGINT, signal.SIGINT], "sigterm": [signal.SIGTERM]}
    children = {}
    for name in cases:
        folder = tmp_path / name
        folder.mkdir()
        bench = write_bench(folder, sim_bench_document(shutter_state=folder / "shutter.json"))
        with open(folder / "out.txt", "w") as out, open(folder / "err.txt", "w") as err:
            children[name] = subprocess.Popen([sys.executable, str(script), str(bench)], stdout=out, stderr=err)
    try:
        for name, signals in cases.items():
            folder = tmp_path / name
            _wait_for(folder / "out.txt", "READY")
            time.sleep(0.2)  # inside the capture loop
            assert _shutter_state(folder / "shutter.json")["shutter"] == "OPEN"
            for signum in signals:
                children[name].send_signal(signum)
                time.sleep(0.005)
        for name, child in children.items():
            child.wait(timeout=20)
            folder = tmp_path / name
            out, err = (folder / "out.txt").read_text(), (folder / "err.txt").read_text()
            assert _shutter_state(folder / "shutter.json") == {"shutter": "CLOSED", "laser": "OFF", "power_mw": 0.0}
            if name == "sigterm":
                assert child.returncode == 128 + signal.SIGTERM and "BLANK True" in out, err
            elif name == "sigint":
                assert child.returncode == -signal.SIGINT and "BLANK True" in out and "KeyboardInterrupt" in err
            else:
                assert child.returncode != 0
    finally:
        for child in children.values():
            if child.poll() is None:
                child.kill()
