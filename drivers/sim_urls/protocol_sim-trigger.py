"""``sim-trigger://``: the simulated trigger box (see drivers.serial_sim)."""

from drivers.serial_sim import SimulatedPort as Serial

__all__ = ["Serial"]
