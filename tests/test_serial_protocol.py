"""The LSC-1 and TRG-1 line protocols: expected (command, reply) pairs through the real pyserial stack."""

import json
import signal
import subprocess
import sys

import pytest
import serial
from conftest_devices import fresh_sim_devices  # noqa: F401

from drivers.errors import DeviceReplyError, LimitError
from drivers.serial_firmware import ShutterFirmware, TriggerFirmware
from drivers.serial_sim import PtyFirmware, register_url_schemes, simulated_device
from drivers.shutter import LaserShutter
from drivers.trigger import TriggerBox

SHUTTER_EXCHANGES = [
    ("*IDN?", "OK HIL-SIM,LSC-1,0001,1.0"),
    ("STATUS?", "OK shutter=CLOSED laser=OFF power_mw=0.000"),
    ("SHUTTER OPEN", "OK"),
    ("SHUTTER?", "OK OPEN"),
    ("shutter close", "OK"),
    ("SHUTTER?", "OK CLOSED"),
    ("SHUTTER HALF", "ERR 2 SHUTTER takes OPEN|CLOSE, got 'HALF'"),
    ("LASER ON", "OK"),
    ("LASER?", "OK ON"),
    ("POWER 12.5", "OK"),
    ("POWER?", "OK 12.500"),
    ("POWER 51", "ERR 3 POWER 51 outside [0, 50] mW"),
    ("POWER lots", "ERR 2 POWER needs a number, got 'lots'"),
    ("POWER?", "OK 12.500"),
    ("STATUS?", "OK shutter=CLOSED laser=ON power_mw=12.500"),
    ("SAFE", "OK"),
    ("STATUS?", "OK shutter=CLOSED laser=OFF power_mw=0.000"),
    ("JUMP", "ERR 1 unknown command 'JUMP'"),
]

TRIGGER_EXCHANGES = [
    ("*IDN?", "OK HIL-SIM,TRG-1,0001,1.0"),
    ("STATUS?", "OK armed=0 period_us=10000 count=1 fired=0"),
    ("FIRE", "ERR 4 FIRE needs ARM first"),
    ("PERIOD 250", "OK"),
    ("PERIOD?", "OK 250"),
    ("PERIOD 5", "ERR 3 PERIOD 5 outside [10, 10000000]"),
    ("PERIOD 2.5", "ERR 2 PERIOD needs an integer, got '2.5'"),
    ("COUNT 3", "OK"),
    ("ARM", "OK"),
    ("ARMED?", "OK 1"),
    ("FIRE", "OK"),
    ("FIRE", "OK"),
    ("FIRED?", "OK 2"),
    ("SAFE", "OK"),
    ("ARMED?", "OK 0"),
    ("STATUS?", "OK armed=0 period_us=250 count=3 fired=2"),
]


def _exchange(port: serial.SerialBase, command: str) -> str:
    port.write(command.encode() + b"\n")
    return port.read_until(b"\n").decode().rstrip("\n")


@pytest.mark.parametrize(
    ("url", "exchanges"), [("sim-shutter://", SHUTTER_EXCHANGES), ("sim-trigger://", TRIGGER_EXCHANGES)]
)
def test_url_scheme_speaks_the_protocol(fresh_sim_devices, url, exchanges):  # noqa: F811
    register_url_schemes()
    with serial.serial_for_url(url, timeout=1) as port:
        assert [_exchange(port, cmd) for cmd, _ in exchanges] == [reply for _, reply in exchanges]


@pytest.mark.parametrize(
    ("firmware", "exchanges"), [(ShutterFirmware, SHUTTER_EXCHANGES), (TriggerFirmware, TRIGGER_EXCHANGES)]
)
def test_pty_speaks_the_protocol(firmware, exchanges):
    with PtyFirmware(firmware()) as server, serial.Serial(server.port, 115200, timeout=1) as port:
        assert [_exchange(port, cmd) for cmd, _ in exchanges] == [reply for _, reply in exchanges]


def test_state_survives_reopen_and_persists_to_file(fresh_sim_devices, tmp_path):  # noqa: F811
    state = tmp_path / "shutter.json"
    url = f"sim-shutter://?state={state}"
    with LaserShutter(url) as shutter:
        shutter.set_power(2.0)
        shutter.laser_on()
        shutter.open_shutter()
    assert json.loads(state.read_text()) == {"shutter": "OPEN", "laser": "ON", "power_mw": 2.0}
    with LaserShutter(url) as shutter:
        assert shutter.shutter_is_open() and shutter.laser_is_on() and shutter.power_mw() == 2.0
        shutter.safe()
    assert json.loads(state.read_text()) == {"shutter": "CLOSED", "laser": "OFF", "power_mw": 0.0}
    forget_and_reload = ShutterFirmware(state_path=state)
    assert forget_and_reload.state["shutter"] == "CLOSED"


def test_client_classes(fresh_sim_devices):  # noqa: F811
    with LaserShutter("sim-shutter://", power_mw=1.5) as shutter:
        assert shutter.identify() == "HIL-SIM,LSC-1,0001,1.0"
        shutter.emit()
        assert shutter.status() == {"shutter": "OPEN", "laser": "ON", "power_mw": "1.500"}
    with TriggerBox("sim-trigger://", period_us=500, count=2) as trigger:
        trigger.configure()
        with pytest.raises(DeviceReplyError, match=r"FIRE needs ARM first \(ERR 4\)") as info:
            trigger.fire()
        assert info.value.code == 4
        trigger.arm()
        trigger.fire()
        assert trigger.is_armed() and trigger.fired() == 1
        assert trigger.status()["period_us"] == "500"


def test_limits_are_checked_before_any_io(fresh_sim_devices):  # noqa: F811
    with pytest.raises(LimitError, match=r"power_mw = 7 is outside the allowed range \[0, 5\] mW"):
        LaserShutter("sim-shutter://", power_mw=7)
    with pytest.raises(LimitError, match=r"period_us = 5 is outside the allowed range \[10, 10000000\] µs"):
        TriggerBox("sim-trigger://", period_us=5)
    with LaserShutter("sim-shutter://", power_limits_mw=(0, 2)) as shutter:
        with pytest.raises(LimitError, match=r"power_mw = 3 is outside the allowed range \[0, 2\] mW"):
            shutter.set_power(3)
        with pytest.raises(LimitError, match=r"power_mw must be a number"):
            shutter.set_power(float("nan"))
    assert len(simulated_device("sim-shutter://").firmware.executed) == 0  # nothing reached the device


def test_command_line_pty_server(tmp_path):
    link = tmp_path / "ttyTRG"
    server = subprocess.Popen(
        [sys.executable, "-m", "drivers.serial_sim", "trigger", "--link", str(link)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout.readline().strip() == f"TRG-1 serving on {link}"
        with TriggerBox(str(link)) as trigger:
            assert trigger.identify() == "HIL-SIM,TRG-1,0001,1.0"
        server.send_signal(signal.SIGINT)
        assert server.wait(timeout=10) == 0
        assert not link.exists()
    finally:
        if server.poll() is None:
            server.kill()
