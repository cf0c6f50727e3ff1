"""Bench calibration: camera radiometry, camera-to-model geometry, SLM phase response, and
fine-tuning a bundle's decoder on measured CDPs (``docs/calibration.md``)."""
