"""Device layer of the bench: SLM and camera helpers on slmsuite, serial accessories, simulators.

See docs/devices.md for the serial protocols, the bench configuration and the safety behaviour.
"""
