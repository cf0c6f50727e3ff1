"""pyserial URL handlers of the simulated accessories (``protocol_<scheme>`` modules)."""
