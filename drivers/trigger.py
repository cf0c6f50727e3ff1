"""Trigger box on a serial port (protocol ``TRG-1``, see docs/devices.md)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from drivers.limits import check_limits_pair, check_range
from drivers.serial_device import SerialLineDevice


@dataclass(frozen=True)
class TriggerSettings:
    """Pulse train (config ``kwargs`` of a ``trigger``): period in µs, pulses per arm (0 = endless)."""

    period_us: int = 10000
    count: int = 1
    period_limits_us: tuple[int, int] = (10, 10_000_000)

    def __post_init__(self) -> None:
        check_limits_pair("period_limits_us", self.period_limits_us)
        check_range("period_us", self.period_us, self.period_limits_us, "µs")
        check_range("count", self.count, (0, 1_000_000))


class TriggerBox(SerialLineDevice):
    """Arms a pulse train for the camera, fires software triggers; safe state: disarmed."""

    kind = "trigger box"
    model = "TRG-1"
    Settings = TriggerSettings

    def __init__(
        self,
        port: str = "sim-trigger://",
        period_us: int = 10000,
        count: int = 1,
        period_limits_us: tuple[int, int] = (10, 10_000_000),
        **serial_options: Any,
    ) -> None:
        self.settings = TriggerSettings(period_us, count, tuple(period_limits_us))
        super().__init__(port, **serial_options)

    def configure(self, period_us: int | None = None, count: int | None = None) -> None:
        """Send period and count (defaults: the configured ones), both checked before any I/O."""
        period = self.settings.period_us if period_us is None else period_us
        pulses = self.settings.count if count is None else count
        check_range("period_us", period, self.settings.period_limits_us, "µs")
        check_range("count", pulses, (0, 1_000_000))
        self.query(f"PERIOD {int(period)}", idempotent=False)
        self.query(f"COUNT {int(pulses)}", idempotent=False)

    def arm(self) -> None:
        self.query("ARM", idempotent=False)

    def disarm(self) -> None:
        self.query("DISARM", idempotent=False)

    def is_armed(self) -> bool:
        return self.query("ARMED?", idempotent=True) == "1"

    def fire(self) -> None:
        """One software trigger (the box must be armed)."""
        self.query("FIRE", idempotent=False)

    def fired(self) -> int:
        return int(self.query("FIRED?", idempotent=True))
