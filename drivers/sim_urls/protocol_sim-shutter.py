"""``sim-shutter://``: the simulated laser shutter/power controller (see drivers.serial_sim)."""

from drivers.serial_sim import SimulatedPort as Serial

__all__ = ["Serial"]
