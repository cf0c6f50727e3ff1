"""Errors raised by the device layer; each message names the device, its port and what to do."""

from __future__ import annotations


class DeviceError(RuntimeError):
    """A device did not do what was asked."""


class DeviceTimeout(DeviceError):
    """No complete reply arrived within the read timeout (pyserial itself returns ``b''`` silently)."""


class DeviceDisconnected(DeviceError):
    """The port went away (unplugged, powered off, pty closed): pyserial raised ``SerialException``."""


class DeviceReplyError(DeviceError):
    """The device answered ``ERR <code> <message>``."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class LimitError(ValueError):
    """A requested setting lies outside the limits from the config; raised before any I/O."""
