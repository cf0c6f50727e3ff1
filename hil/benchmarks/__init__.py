"""Benchmarks behind the figures in the README and docs (each run by ``hil benchmark NAME``)."""
