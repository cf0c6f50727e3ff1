"""Simulated firmware of the serial accessories: one ``handle(line) -> reply`` state machine each.

The protocol (documented in docs/devices.md) is line-based ASCII: one command per line, one reply
line per command, ``OK [value]`` or ``ERR <code> <message>``. Error codes: 1 unknown command,
2 bad argument, 3 out of range, 4 not allowed in the current state.

The firmware can persist its state as JSON (``state_path``), written atomically after every
change, so a test can read the state a process left behind (e.g. after SIGTERM), and a device
reopened from the same file keeps its state like real hardware does.
"""

from __future__ import annotations

import json
import os
import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

VENDOR = "HIL-SIM"
FIRMWARE_VERSION = "1.0"


class CommandError(Exception):
    """An ``ERR`` reply: ``code`` and message."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def _number(arg: str | None, name: str) -> float:
    try:
        return float(arg or "")
    except ValueError:
        raise CommandError(2, f"{name} needs a number, got '{arg or ''}'") from None


def _choice(arg: str | None, options: tuple[str, ...], name: str) -> str:
    value = (arg or "").upper()
    if value not in options:
        raise CommandError(2, f"{name} takes {'|'.join(options)}, got '{arg or ''}'")
    return value


class Firmware:
    """Base class: parsing, ``*IDN?``, ``STATUS?``, error replies, persistence, fault injection.

    Subclasses set ``model`` and ``default_state`` and register handlers in ``_commands``.
    Fault injection for tests: ``mute_next`` commands get no reply at all (the host times out).
    """

    model = "GENERIC"
    default_state: dict[str, Any] = {}

    def __init__(self, serial_number: str = "0001", state_path: str | Path | None = None) -> None:
        self.serial_number = serial_number
        self.state_path = Path(state_path) if state_path else None
        self.state = dict(self.default_state)
        if self.state_path is not None and self.state_path.is_file():
            self.state.update(json.loads(self.state_path.read_text()))
        self.mute_next = 0
        self.executed: deque[str] = deque(maxlen=10_000)  # recent state-changing commands, for tests
        self._lock = threading.Lock()
        self._commands: dict[str, Callable[[str | None], str]] = {
            "*IDN?": lambda _: f"{VENDOR},{self.model},{self.serial_number},{FIRMWARE_VERSION}",
            "STATUS?": lambda _: " ".join(f"{k}={self._format(v)}" for k, v in self.state.items()),
        }
        self._persist()

    @staticmethod
    def _format(value: Any) -> str:
        return f"{value:.3f}" if isinstance(value, float) else str(value)

    def handle(self, line: str) -> str | None:
        """Reply (without newline) to one command line; None when muted."""
        with self._lock:
            if self.mute_next > 0:
                self.mute_next -= 1
                return None
            word, _, arg = line.strip().partition(" ")
            name = word.upper()
            handler = self._commands.get(name)
            if handler is None:
                return f"ERR 1 unknown command '{word}'"
            try:
                value = handler(arg.strip() or None)
            except CommandError as exc:
                return f"ERR {exc.code} {exc}"
            if not name.endswith("?"):
                self.executed.append(line.strip())
                self._persist()
            return f"OK {value}" if value else "OK"

    def _persist(self) -> None:
        if self.state_path is None:
            return
        tmp = self.state_path.with_name(self.state_path.name + ".tmp")
        tmp.write_text(json.dumps(self.state))
        os.replace(tmp, self.state_path)


class ShutterFirmware(Firmware):
    """Laser shutter and power controller ``LSC-1``: shutter, laser emission, power setpoint (mW)."""

    model = "LSC-1"
    default_state = {"shutter": "CLOSED", "laser": "OFF", "power_mw": 0.0}

    def __init__(self, max_power_mw: float = 50.0, **kwargs: Any) -> None:
        self.max_power_mw = max_power_mw
        super().__init__(**kwargs)
        self._commands.update(
            {
                "SHUTTER?": lambda _: self.state["shutter"],
                "SHUTTER": self._shutter,
                "LASER?": lambda _: self.state["laser"],
                "LASER": self._laser,
                "POWER?": lambda _: f"{self.state['power_mw']:.3f}",
                "POWER": self._power,
                "SAFE": self._safe,
            }
        )

    def _shutter(self, arg: str | None) -> str:
        self.state["shutter"] = {"OPEN": "OPEN", "CLOSE": "CLOSED"}[_choice(arg, ("OPEN", "CLOSE"), "SHUTTER")]
        return ""

    def _laser(self, arg: str | None) -> str:
        self.state["laser"] = _choice(arg, ("ON", "OFF"), "LASER")
        return ""

    def _power(self, arg: str | None) -> str:
        power = _number(arg, "POWER")
        if not 0 <= power <= self.max_power_mw:
            raise CommandError(3, f"POWER {power:g} outside [0, {self.max_power_mw:g}] mW")
        self.state["power_mw"] = power
        return ""

    def _safe(self, _: str | None) -> str:
        self.state.update(shutter="CLOSED", laser="OFF", power_mw=0.0)
        return ""


class TriggerFirmware(Firmware):
    """Trigger box ``TRG-1``: arm/disarm a pulse train (period in µs, count, 0 = endless), software FIRE."""

    model = "TRG-1"
    default_state = {"armed": 0, "period_us": 10000, "count": 1, "fired": 0}
    period_limits_us = (10, 10_000_000)
    count_limits = (0, 1_000_000)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._commands.update(
            {
                "ARM": lambda _: self._set("armed", 1),
                "DISARM": lambda _: self._set("armed", 0),
                "ARMED?": lambda _: str(self.state["armed"]),
                "PERIOD": lambda arg: self._integer("period_us", arg, "PERIOD", self.period_limits_us),
                "PERIOD?": lambda _: str(self.state["period_us"]),
                "COUNT": lambda arg: self._integer("count", arg, "COUNT", self.count_limits),
                "COUNT?": lambda _: str(self.state["count"]),
                "FIRE": self._fire,
                "FIRED?": lambda _: str(self.state["fired"]),
                "SAFE": lambda _: self._set("armed", 0),
            }
        )

    def _set(self, key: str, value: int) -> str:
        self.state[key] = value
        return ""

    def _integer(self, key: str, arg: str | None, name: str, limits: tuple[int, int]) -> str:
        value = _number(arg, name)
        if value != int(value):
            raise CommandError(2, f"{name} needs an integer, got '{arg}'")
        if not limits[0] <= value <= limits[1]:
            raise CommandError(3, f"{name} {int(value)} outside [{limits[0]}, {limits[1]}]")
        return self._set(key, int(value))

    def _fire(self, _: str | None) -> str:
        if not self.state["armed"]:
            raise CommandError(4, "FIRE needs ARM first")
        self.state["fired"] += 1
        return ""


FIRMWARE: dict[str, type[Firmware]] = {"shutter": ShutterFirmware, "trigger": TriggerFirmware}
