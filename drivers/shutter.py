"""Laser shutter / power controller on a serial port (protocol ``LSC-1``, see docs/devices.md)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from drivers.limits import check_limits_pair, check_range
from drivers.serial_device import SerialLineDevice


@dataclass(frozen=True)
class ShutterSettings:
    """Laser power setpoint and the lab's limits for it (config ``kwargs`` of a ``shutter``)."""

    power_mw: float = 0.0
    power_limits_mw: tuple[float, float] = (0.0, 5.0)

    def __post_init__(self) -> None:
        check_limits_pair("power_limits_mw", self.power_limits_mw)
        check_range("power_mw", self.power_mw, self.power_limits_mw, "mW")


class LaserShutter(SerialLineDevice):
    """Shutter (open/closed), laser emission (on/off) and power setpoint (mW), limits checked before I/O.

    Safe state (``SAFE``): shutter closed, laser off, power 0.
    """

    kind = "laser shutter"
    model = "LSC-1"
    Settings = ShutterSettings

    def __init__(
        self,
        port: str = "sim-shutter://",
        power_mw: float = 0.0,
        power_limits_mw: tuple[float, float] = (0.0, 5.0),
        **serial_options: Any,
    ) -> None:
        self.settings = ShutterSettings(float(power_mw), tuple(power_limits_mw))
        super().__init__(port, **serial_options)

    def set_power(self, power_mw: float) -> None:
        power = check_range("power_mw", power_mw, self.settings.power_limits_mw, "mW")
        self.query(f"POWER {power:.3f}", idempotent=False)

    def power_mw(self) -> float:
        return float(self.query("POWER?", idempotent=True))

    def open_shutter(self) -> None:
        self.query("SHUTTER OPEN", idempotent=False)

    def close_shutter(self) -> None:
        self.query("SHUTTER CLOSE", idempotent=False)

    def shutter_is_open(self) -> bool:
        return self.query("SHUTTER?", idempotent=True) == "OPEN"

    def laser_on(self) -> None:
        self.query("LASER ON", idempotent=False)

    def laser_off(self) -> None:
        self.query("LASER OFF", idempotent=False)

    def laser_is_on(self) -> bool:
        return self.query("LASER?", idempotent=True) == "ON"

    def emit(self) -> None:
        """Configured power, laser on, shutter open: light on the sample."""
        self.set_power(self.settings.power_mw)
        self.laser_on()
        self.open_shutter()
