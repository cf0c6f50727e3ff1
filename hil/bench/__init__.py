"""The bench: devices from a config with safe state on every exit, capture, frame log, reconstruction."""
