"""Client side of the line-based ASCII protocol spoken by the bench's serial accessories.

One command per line (``\\n``-terminated ASCII), exactly one reply line per command: ``OK`` or
``OK <value>`` on success, ``ERR <code> <message>`` on failure (see docs/devices.md). The port is
any pyserial URL: a device node (``/dev/ttyUSB0``, ``COM3``), a pty, or a simulator
(``sim-shutter://``, ``sim-trigger://``).

Failure handling: a reply that does not arrive within ``timeout_s`` raises :class:`DeviceTimeout`
(pyserial returns short data silently); ``SerialException``/``OSError`` (device unplugged)
raises :class:`DeviceDisconnected`. Only idempotent queries are retried, at most ``retries``
times with exponential backoff, after flushing and reopening the port; a command that changes
state is never resent, since its effect is unknown once the reply is lost.
"""

from __future__ import annotations

import logging
import time

import serial

try:
    from termios import error as TermiosError
except ImportError:  # Windows
    TermiosError = OSError

from drivers.errors import DeviceDisconnected, DeviceError, DeviceReplyError, DeviceTimeout
from drivers.io_guard import atomic_io
from drivers.serial_sim import register_url_schemes

log = logging.getLogger(__name__)
MAX_LINE_BYTES = 256
PORT_ERRORS = (serial.SerialException, OSError, TermiosError)


class SerialLineDevice:
    """A serial accessory: open/close, :meth:`query` with timeouts and bounded retries, :meth:`safe`."""

    kind = "serial device"
    model: str | None = None  # the model field of ``*IDN?`` a device of this class must report

    def __init__(
        self,
        port: str,
        baudrate: int = 115200,
        timeout_s: float = 0.5,
        retries: int = 2,
        backoff_s: float = 0.05,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        self.port = port
        self.baudrate = baudrate
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self._serial: serial.SerialBase | None = None
        self._open_error = ""

    @property
    def label(self) -> str:
        return f"{self.kind} on {self.port}"

    @property
    def is_open(self) -> bool:
        return self._serial is not None and self._serial.is_open

    def open(self) -> None:
        """Open the port (a ``DeviceDisconnected`` if it cannot be opened); reopens if open."""
        self.close()
        register_url_schemes()
        try:
            self._serial = serial.serial_for_url(
                self.port, baudrate=self.baudrate, timeout=self.timeout_s, write_timeout=self.timeout_s
            )
        except PORT_ERRORS as exc:
            self._serial = None
            self._open_error = f"cannot open port: {exc}"
            raise DeviceDisconnected(f"{self.label}: {self._open_error}") from exc
        self._open_error = ""

    def close(self) -> None:
        """Close the port; safe to call twice."""
        if self._serial is not None:
            try:
                self._serial.close()
            except PORT_ERRORS:
                pass
            self._serial = None

    def __enter__(self) -> SerialLineDevice:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def query(self, command: str, idempotent: bool) -> str:
        """Send ``command``, return the reply's value (text after ``OK``, may be empty).

        Idempotent queries are retried after a timeout or disconnection (reopening the port);
        state-changing commands raise at once, saying their effect is unknown.
        """
        attempts = 1 + (self.retries if idempotent else 0)
        failures = 0
        while True:
            try:
                return self._exchange(command)
            except (DeviceTimeout, DeviceDisconnected) as exc:
                if not idempotent:
                    raise type(exc)(
                        f"{exc}; '{command}' changes state and was not resent: query the device's status"
                    ) from exc
                failures += 1
                if failures == attempts:
                    raise type(exc)(f"{exc} (gave up after {attempts} attempts)") from exc
                delay = self.backoff_s * 2 ** (failures - 1)
                log.warning("%s: %s; retrying '%s' in %.2f s", self.label, exc, command, delay)
                time.sleep(delay)
                self._reopen()

    def _reopen(self) -> None:
        self.close()
        try:
            self.open()
        except DeviceDisconnected as exc:
            log.warning("%s", exc)

    def _exchange(self, command: str) -> str:
        if "\n" in command or "\r" in command or not command.isascii():
            raise ValueError(f"{self.label}: command must be one line of ASCII, got {command!r}")
        if self._serial is None:
            raise DeviceDisconnected(f"{self.label}: {self._open_error or 'port is not open'}")
        with atomic_io():
            try:
                self._serial.reset_input_buffer()
                self._serial.write(command.encode("ascii") + b"\n")
                raw = self._serial.read_until(b"\n", MAX_LINE_BYTES)
            except serial.SerialTimeoutException as exc:
                raise DeviceTimeout(f"{self.label}: writing '{command}' timed out after {self.timeout_s} s") from exc
            except PORT_ERRORS as exc:
                raise DeviceDisconnected(f"{self.label}: device disconnected during '{command}': {exc}") from exc
        if not raw.endswith(b"\n"):
            got = f" (partial reply {raw!r})" if raw else ""
            raise DeviceTimeout(f"{self.label}: no reply to '{command}' within {self.timeout_s} s{got}")
        return self._parse(command, raw.decode("ascii", errors="replace").strip())

    def _parse(self, command: str, reply: str) -> str:
        if reply == "OK" or reply.startswith("OK "):
            return reply[3:]
        if reply.startswith("ERR "):
            code, _, message = reply[4:].partition(" ")
            try:
                number = int(code)
            except ValueError:
                number = -1
            raise DeviceReplyError(f"{self.label}: '{command}' refused: {message} (ERR {code})", number)
        raise DeviceError(f"{self.label}: unexpected reply to '{command}': {reply!r}")

    def identify(self) -> str:
        """The ``*IDN?`` string (vendor, model, serial, firmware)."""
        return self.query("*IDN?", idempotent=True)

    def check_identity(self) -> str:
        """``*IDN?`` (``vendor,model,serial,firmware``), checked against :attr:`model`: a device of
        another kind on this port (e.g. swapped cables) is a ``DeviceError`` before any command is sent."""
        identity = self.identify()
        fields = [f.strip() for f in identity.split(",")]
        if self.model is not None and (len(fields) < 2 or fields[1] != self.model):
            raise DeviceError(
                f"{self.label}: the device identifies as {identity!r}, expected model {self.model} "
                "(a different device on this port: are two ports swapped?)"
            )
        return identity

    def status(self) -> dict[str, str]:
        """``STATUS?`` as a mapping of ``key=value`` fields."""
        fields = self.query("STATUS?", idempotent=True).split()
        return dict(f.partition("=")[::2] for f in fields)

    def safe(self, timeout_s: float | None = None) -> None:
        """Put the device in its safe state (``SAFE``): one attempt, within ``timeout_s`` if given."""
        if timeout_s is None or self._serial is None:
            self.query("SAFE", idempotent=False)
            return
        previous = self._serial.timeout
        self._serial.timeout = min(timeout_s, self.timeout_s)
        try:
            self.query("SAFE", idempotent=False)
        finally:
            self._serial.timeout = previous
