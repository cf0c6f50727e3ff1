"""``hil check``: identity and status of each device; ``--dry-run`` touches nothing."""

import pytest
from conftest_devices import fresh_sim_devices, sim_bench_document, write_bench  # noqa: F401
from typer.testing import CliRunner

from hil.cli import app, main

CONSTRUCTED = []
WIDE = {"COLUMNS": "250"}  # no wrapping in the tables


class RecordingSLM:
    """A stand-in SLM class that records any attempt to construct it."""

    def __init__(self, resolution: tuple[int, int] = (16, 16)) -> None:
        CONSTRUCTED.append(resolution)


def test_check_reports_every_device(tmp_path, fresh_sim_devices):  # noqa: F811
    result = CliRunner().invoke(app, ["check", "--bench", str(write_bench(tmp_path, sim_bench_document()))], env=WIDE)
    assert result.exit_code == 0, result.output
    for text in ("SimulatedBenchSLM", "SimulatedBenchCamera", "HIL-SIM,LSC-1,0001,1.0", "HIL-SIM,TRG-1", "left in"):
        assert text in result.output


def test_dry_run_validates_without_constructing_devices(tmp_path):
    doc = sim_bench_document()
    doc["slm"] = {"driver": "test_bench_cli:RecordingSLM", "kwargs": {"resolution": [8, 8]}}
    doc["serial"]["shutter"]["port"] = "/dev/does-not-exist"
    result = CliRunner().invoke(app, ["check", "--dry-run", "--bench", str(write_bench(tmp_path, doc))], env=WIDE)
    assert result.exit_code == 0, result.output
    assert "RecordingSLM" in result.output and "/dev/does-not-exist" in result.output
    assert CONSTRUCTED == []


def test_invalid_config_and_device_failure_exit_2(tmp_path, fresh_sim_devices, capsys):  # noqa: F811
    doc = sim_bench_document()
    doc["camera"]["exposure_s"] = -1
    code, err = _check(capsys, write_bench(tmp_path, doc))
    assert code == 2 and err.startswith("error: ") and "exposure_s" in err
    doc = sim_bench_document()
    doc["serial"]["shutter"]["port"] = str(tmp_path / "no-such-tty")
    code, err = _check(capsys, write_bench(tmp_path, doc))
    assert code == 2 and "cannot open port" in err and "Traceback" not in err


def _check(capsys, bench):
    """``hil check --bench BENCH`` through the entry point; (exit status, stderr)."""
    with pytest.raises(SystemExit) as info:
        main(["check", "--bench", str(bench)])
    return info.value.code, capsys.readouterr().err
