"""Transports for the simulated firmware: a pyserial URL scheme and a real pseudo-terminal.

* ``sim-shutter://`` and ``sim-trigger://`` (after :func:`register_url_schemes`) open an in-memory
  port whose firmware runs on every line written; options ``?state=PATH`` (persist the state as
  JSON), ``serial=SN``, ``delay_s=SECONDS`` (reply latency). Ports opened with the same URL
  share one simulated device, so a reopened port finds the state it left, like real hardware.
  :func:`simulated_device` returns it for fault injection (``unplug``/``replug``).
* :class:`PtyFirmware` serves a firmware behind ``pty.openpty()``: clients open the slave path
  with plain ``serial.Serial``; ``unplug`` closes the master (the client's next read raises
  ``SerialException``), ``replug`` starts a new pty, re-pointing an optional symlink.
  ``python -m drivers.serial_sim shutter`` serves one from the command line.
"""

from __future__ import annotations

import argparse
import os
import pty
import select
import signal
import threading
import time
import tty
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import serial
from serial.serialutil import PortNotOpenError, SerialBase, SerialException

from drivers.serial_firmware import FIRMWARE, Firmware

URL_PACKAGE = "drivers.sim_urls"
SCHEMES = {"sim-shutter": "shutter", "sim-trigger": "trigger"}


def register_url_schemes() -> None:
    """Make ``sim-shutter://`` and ``sim-trigger://`` known to ``serial.serial_for_url`` (idempotent)."""
    if URL_PACKAGE not in serial.protocol_handler_packages:
        serial.protocol_handler_packages.append(URL_PACKAGE)


class SimulatedDevice:
    """A firmware plus a cable: ``connected`` False makes reads and opens fail like an unplugged device."""

    def __init__(self, firmware: Firmware, delay_s: float = 0.0) -> None:
        self.firmware = firmware
        self.delay_s = delay_s
        self.connected = True

    def unplug(self) -> None:
        self.connected = False

    def replug(self) -> None:
        self.connected = True


_devices: dict[str, SimulatedDevice] = {}
_devices_lock = threading.Lock()


def simulated_device(url: str) -> SimulatedDevice:
    """The simulated device behind ``url`` (created on first use; options parsed from the query)."""
    parts = urlsplit(url)
    kind = SCHEMES.get(parts.scheme.lower())
    if kind is None:
        raise SerialException(f"not a simulator URL: {url!r} (schemes: {', '.join(s + '://' for s in SCHEMES)})")
    with _devices_lock:
        if url not in _devices:
            options = {k: v[-1] for k, v in parse_qs(parts.query).items()}
            unknown = sorted(set(options) - {"state", "serial", "delay_s"})
            if unknown:
                raise SerialException(f"{url!r}: unknown option(s) {unknown}; allowed: state, serial, delay_s")
            try:
                delay_s = float(options.get("delay_s", 0.0))
            except ValueError:
                raise SerialException(f"{url!r}: option delay_s must be a number of seconds") from None
            if not 0 <= delay_s <= 60:
                raise SerialException(f"{url!r}: option delay_s must lie in [0, 60] s, got {delay_s}")
            firmware = FIRMWARE[kind](serial_number=options.get("serial", "0001"), state_path=options.get("state"))
            _devices[url] = SimulatedDevice(firmware, delay_s)
        return _devices[url]


def forget_simulated_devices() -> None:
    """Drop every in-memory simulated device (tests start from a fresh state)."""
    with _devices_lock:
        _devices.clear()


class SimulatedPort(SerialBase):
    """pyserial port whose other end is a :class:`SimulatedDevice` (see the URL options above)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        self._device: SimulatedDevice | None = None
        self._incoming = bytearray()
        self._outgoing: list[tuple[float, bytes]] = []
        self._ready = threading.Condition()
        super().__init__(*args, **kwargs)

    def open(self) -> None:
        if self.is_open:
            raise SerialException("Port is already open.")
        if self._port is None:
            raise SerialException("Port must be configured before it can be used.")
        device = simulated_device(self.portstr)
        if not device.connected:
            raise SerialException(f"could not open port {self.portstr}: no such device")
        self._device = device
        self._incoming.clear()
        self._outgoing.clear()
        self.is_open = True

    def close(self) -> None:
        self.is_open = False
        with self._ready:
            self._ready.notify_all()

    def _reconfigure_port(self, *args: object) -> None:
        """Baud rate, parity, etc. have no effect on the simulator."""

    def _check(self) -> SimulatedDevice:
        if not self.is_open or self._device is None:
            raise PortNotOpenError()
        if not self._device.connected:
            raise SerialException("device disconnected (simulated unplug)")
        return self._device

    @property
    def in_waiting(self) -> int:
        self._check()
        now = time.monotonic()
        return sum(len(data) for ready, data in self._outgoing if ready <= now)

    def write(self, data: bytes) -> int:
        device = self._check()
        self._incoming += bytes(data)
        while b"\n" in self._incoming:
            line, _, rest = bytes(self._incoming).partition(b"\n")
            self._incoming = bytearray(rest)
            reply = device.firmware.handle(line.decode("ascii", errors="replace"))
            if reply is not None:
                with self._ready:
                    self._outgoing.append((time.monotonic() + device.delay_s, reply.encode("ascii") + b"\n"))
                    self._ready.notify_all()
        return len(data)

    def read(self, size: int = 1) -> bytes:
        self._check()
        deadline = None if self._timeout is None else time.monotonic() + self._timeout
        out = bytearray()
        with self._ready:
            while len(out) < size:
                self._check()
                now = time.monotonic()
                if self._outgoing and self._outgoing[0][0] <= now:
                    ready, data = self._outgoing[0]
                    take = data[: size - len(out)]
                    out += take
                    if len(take) < len(data):
                        self._outgoing[0] = (ready, data[len(take) :])
                    else:
                        self._outgoing.pop(0)
                    continue
                waits = [t - now for t in (deadline, self._outgoing[0][0] if self._outgoing else None) if t]
                if deadline is not None and now >= deadline:
                    break
                self._ready.wait(min(waits) if waits else None)
        return bytes(out)

    def reset_input_buffer(self) -> None:
        self._check()
        with self._ready:
            self._outgoing.clear()

    def reset_output_buffer(self) -> None:
        self._check()

    @property
    def out_waiting(self) -> int:
        return 0

    def _update_break_state(self) -> None:
        pass

    def _update_rts_state(self) -> None:
        pass

    def _update_dtr_state(self) -> None:
        pass


class PtyFirmware:
    """Serve ``firmware`` behind a pseudo-terminal; ``port`` is the path a client opens."""

    def __init__(self, firmware: Firmware, link: str | Path | None = None, delay_s: float = 0.0) -> None:
        self.firmware = firmware
        self.link = Path(link) if link else None
        self.delay_s = delay_s
        self.port = ""
        self._fds: tuple[int, int] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> PtyFirmware:
        master, slave = pty.openpty()
        tty.setraw(slave)
        self._fds = (master, slave)
        self.port = os.ttyname(slave)
        if self.link is not None:
            tmp = self.link.with_name(self.link.name + ".tmp")
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(self.port)
            os.replace(tmp, self.link)
        self._stop.clear()
        self._thread = threading.Thread(target=self._serve, args=(master,), daemon=True)
        self._thread.start()
        return self

    def _serve(self, master: int) -> None:
        buffer = b""
        while not self._stop.is_set():
            ready, _, _ = select.select([master], [], [], 0.02)
            if not ready:
                continue
            try:
                chunk = os.read(master, 1024)
            except OSError:
                return
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                reply = self.firmware.handle(line.decode("ascii", errors="replace"))
                if reply is None or self._stop.wait(self.delay_s):
                    continue
                os.write(master, reply.encode("ascii") + b"\n")

    def unplug(self) -> None:
        """Stop serving and close both ends: the client sees a vanished device (thread-safe, idempotent)."""
        with self._lock:
            thread, self._thread = self._thread, None
            fds, self._fds = self._fds, None
        self._stop.set()
        if thread is not None:
            thread.join()
        for fd in fds or ():
            os.close(fd)

    def replug(self) -> PtyFirmware:
        """Come back on a fresh pty (the symlink, if any, follows)."""
        self.unplug()
        return self.start()

    def close(self) -> None:
        self.unplug()
        if self.link is not None:
            self.link.unlink(missing_ok=True)

    def __enter__(self) -> PtyFirmware:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def _stop_on_signals() -> None:
    """Ctrl-C and SIGTERM end the server cleanly (pty closed, link removed), even when the process
    was started with SIGINT ignored, as background jobs and nohup start it."""

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)


def main(argv: list[str] | None = None) -> None:
    """Serve a simulated accessory on a pty until Ctrl-C (prints the port to open)."""
    parser = argparse.ArgumentParser(prog="python -m drivers.serial_sim", description=main.__doc__)
    parser.add_argument("device", choices=sorted(FIRMWARE))
    parser.add_argument("--link", help="symlink to create pointing at the pty (a stable port name)")
    parser.add_argument("--state", help="JSON file holding the device state")
    parser.add_argument("--delay-s", type=float, default=0.0, help="reply latency")
    args = parser.parse_args(argv)
    _stop_on_signals()
    firmware = FIRMWARE[args.device](state_path=args.state)
    try:
        with PtyFirmware(firmware, link=args.link, delay_s=args.delay_s) as server:
            print(f"{firmware.model} serving on {server.link or server.port}", flush=True)
            threading.Event().wait()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
