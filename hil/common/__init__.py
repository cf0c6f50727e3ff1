"""Shared foundations with no project dependencies: strict YAML configs, provenance, phase metrics."""
