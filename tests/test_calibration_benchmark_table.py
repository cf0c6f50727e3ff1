"""The calibration benchmark's table: differences from the ideal are paired per sample."""

import pytest

from hil.benchmarks.calibration import markdown


def _row(stage: str, values: list[float]) -> dict:
    mean = sum(values) / len(values)
    return {"bench": "default", "method": "raar", "snr_db": 30, "stage": stage, "psnr_db": mean, "psnr_ci95_db": 9.9,
            "captures": 0, "seconds": 1.0, "psnr_samples_db": values}  # fmt: skip


def test_differences_from_the_ideal_are_paired():
    """Samples that differ by 10 dB from each other but by exactly -1 dB from their own ideal: the paired
    difference is -1.0 with a zero interval (a difference of means would carry the 10 dB spread)."""
    rows = [
        _row("ideal", [10.0, 20.0, 30.0]),
        _row("uncalibrated", [5.0, 5.0, 5.0]),
        _row("calibrated", [9.0, 19.0, 29.0]),
    ]
    table = markdown(rows)
    # differences -5, -15, -25 dB: mean -15, 95 % interval 1.96 * 10 / sqrt(3) = 11.3
    assert "| default | raar | 30 | -15.0 ± 11.3 | -1.0 ± 0.0 | — |" in table
    assert "| default | raar | 30 | 20.0 ± 9.9 | 5.0 ± 9.9 | 19.0 ± 9.9 | — | 0 / 0 | 1 |" in table


def test_a_missing_stage_is_a_dash():
    table = markdown([_row("ideal", [1.0, 2.0]), _row("calibrated", [1.5, 2.5])])
    assert "| default | raar | 30 | — | +0.5 ± 0.0 | — |" in table
    with pytest.raises(KeyError):
        markdown([_row("calibrated", [1.0, 2.0])])  # without the ideal there is nothing to compare with
