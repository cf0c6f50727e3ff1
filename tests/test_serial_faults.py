"""Timeouts, unplugged devices and retries: idempotent queries are retried, state changes never."""

import threading
import time

import pytest
from conftest_devices import fresh_sim_devices  # noqa: F401

from drivers.errors import DeviceDisconnected, DeviceTimeout
from drivers.serial_device import SerialLineDevice
from drivers.serial_firmware import ShutterFirmware, TriggerFirmware
from drivers.serial_sim import PtyFirmware, simulated_device
from drivers.trigger import TriggerBox


def test_silent_device_raises_a_clear_timeout_after_bounded_retries(fresh_sim_devices):  # noqa: F811
    device = SerialLineDevice("sim-shutter://", timeout_s=0.1, retries=2, backoff_s=0.01)
    device.open()
    simulated_device("sim-shutter://").firmware.mute_next = 10
    start = time.perf_counter()
    with pytest.raises(DeviceTimeout, match=r"no reply to 'STATUS\?' within 0.1 s \(gave up after 3 attempts\)"):
        device.status()
    assert 0.3 <= time.perf_counter() - start < 1.5  # three reads of 0.1 s plus 0.01 + 0.02 s backoff
    assert simulated_device("sim-shutter://").firmware.mute_next == 7


def test_idempotent_query_recovers_after_one_lost_reply(fresh_sim_devices):  # noqa: F811
    with SerialLineDevice("sim-shutter://", timeout_s=0.1, backoff_s=0.0) as device:
        simulated_device("sim-shutter://").firmware.mute_next = 1
        assert device.identify() == "HIL-SIM,LSC-1,0001,1.0"


def test_state_change_is_never_resent(fresh_sim_devices):  # noqa: F811
    with TriggerBox("sim-trigger://", timeout_s=0.1, retries=3) as trigger:
        trigger.arm()
        firmware = simulated_device("sim-trigger://").firmware
        firmware.mute_next = 1  # the command is lost before the firmware acts on it
        with pytest.raises(DeviceTimeout, match=r"'FIRE' changes state and was not resent: query the device's status"):
            trigger.fire()
        assert firmware.executed.count("FIRE") == 0
        assert trigger.fired() == 0  # the caller decides after querying


def test_lost_reply_of_executed_command_is_reported_not_repeated(fresh_sim_devices):  # noqa: F811
    url = "sim-trigger://"
    with TriggerBox(url, timeout_s=0.1, retries=3) as trigger:
        trigger.arm()
        simulated_device(url).delay_s = 0.3  # replies now arrive after the timeout
        with pytest.raises(DeviceTimeout, match="was not resent"):
            trigger.fire()
        assert simulated_device(url).firmware.executed.count("FIRE") == 1
        simulated_device(url).delay_s = 0.0
        assert trigger.fired() == 1  # the late reply of FIRE is flushed, not taken as this answer


def test_unplugged_url_device_raises_disconnected_and_reconnects(fresh_sim_devices):  # noqa: F811
    with SerialLineDevice("sim-shutter://", timeout_s=0.1, retries=1, backoff_s=0.01) as device:
        cable = simulated_device("sim-shutter://")
        cable.unplug()
        with pytest.raises(DeviceDisconnected, match=r"cannot open port: .*no such device \(gave up after 2 attempts"):
            device.status()
        with pytest.raises(DeviceDisconnected, match="'SAFE' changes state and was not resent"):
            device.safe()
        cable.replug()
        assert device.status()["shutter"] == "CLOSED"  # the retry path reopened the port


def test_pty_unplug_mid_query_is_reported(tmp_path):
    server = PtyFirmware(TriggerFirmware(), delay_s=0.5).start()
    try:
        device = SerialLineDevice(server.port, timeout_s=2.0, retries=0)
        device.open()
        threading.Timer(0.1, server.unplug).start()
        start = time.perf_counter()
        with pytest.raises(DeviceDisconnected, match="device disconnected during 'ARMED\\?'"):
            device.query("ARMED?", idempotent=True)
        assert time.perf_counter() - start < 1.5  # reported at once, not after the 2 s timeout
        device.close()
    finally:
        server.close()


def test_pty_replug_behind_a_stable_link_is_recovered_by_retry(tmp_path):
    link = tmp_path / "ttyLSC"
    server = PtyFirmware(ShutterFirmware(), link=link).start()
    try:
        device = SerialLineDevice(str(link), timeout_s=0.3, retries=3, backoff_s=0.05)
        device.open()
        assert device.identify().startswith("HIL-SIM,LSC-1")
        first_port = server.port
        server.unplug()
        threading.Timer(0.02, server.replug).start()
        assert device.status()["shutter"] == "CLOSED"
        assert server.port != first_port  # a new pty, found again through the link
        device.close()
    finally:
        server.close()
