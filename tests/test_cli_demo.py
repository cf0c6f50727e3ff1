"""The README's main job runs end to end and records its provenance (on the ideal twin: fast; the default
realistic bench in a slow test)."""

import json

import pytest
from conftest_devices import IDEAL_BENCH
from typer.testing import CliRunner

from hil.cli import app


def test_demo_runs_the_shipped_student_on_the_simulated_bench(tmp_path):
    args = ["demo", "--bench", str(IDEAL_BENCH), "--out", str(tmp_path), "--samples", "phase_screen,cells"]
    args += ["--raar-iterations", "50"]
    result = CliRunner().invoke(app, [*args, "--repeats", "1"])
    assert result.exit_code == 0, result.output
    (run,) = tmp_path.iterdir()
    record = json.loads((run / "provenance.json").read_text())
    assert record["command"] == "hil demo" and record["versions"]["torch"].startswith("2.")
    assert record["bundle"].endswith("models/student") and record["samples"] == ["phase_screen", "cells"]
    rows = json.loads((run / "metrics.json").read_text())
    assert [(r["sample"], r["method"]) for r in rows] == [
        ("phase_screen", "student"), ("phase_screen", "RAAR 50 it"), ("cells", "student"), ("cells", "RAAR 50 it")
    ]  # fmt: skip
    assert all(r["psnr_db"] > 25 for r in rows)  # each hidden sample from one captured CDP (random: ~5 dB)
    assert (run / "capture0_phase_screen.h5").is_file() and (run / "capture1_cells.h5").is_file()
    assert (run / "index.html").is_file() and (run / "sample1_error.png").stat().st_size > 10_000


def test_demo_without_a_bundle_uses_a_random_mask_and_raar(tmp_path):
    args = ["demo", "--bench", str(IDEAL_BENCH), "--random-mask", "--out", str(tmp_path), "--samples", "natural"]
    args += ["--raar-iterations", "20"]
    result = CliRunner().invoke(app, [*args, "--repeats", "1", "--frames", "2"])
    assert result.exit_code == 0, result.output
    (run,) = tmp_path.iterdir()
    rows = json.loads((run / "metrics.json").read_text())
    assert [r["method"] for r in rows] == ["RAAR 20 it"] and rows[0]["psnr_db"] > 25
    assert "100 " in result.output  # photons/pixel column: two frames of 50 integrate 100


def test_demo_rejects_bad_config(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: 0\ncamera: {gain: 3}")
    result = CliRunner().invoke(app, ["demo", "--bench", str(bad), "--out", str(tmp_path)])
    assert result.exit_code != 0
    assert "camera.gain" in str(result.exception) and str(bad) in str(result.exception)


def test_entry_point_prints_one_line_and_exits_2(tmp_path, monkeypatch, capsys):
    from hil.cli import main

    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: sixty")
    monkeypatch.setattr("sys.argv", ["hil", "demo", "--bench", str(bad), "--out", str(tmp_path)])
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "key 'seed': expected an integer" in err and "Traceback" not in err


@pytest.mark.slow
def test_demo_on_the_default_bench_loads_its_calibration_and_the_bundle_for_its_system(tmp_path):
    """``make demo``: the realistic default bench through its stored calibration, with models/student_fixture."""
    args = ["demo", "--out", str(tmp_path), "--samples", "phase_screen", "--raar-iterations", "20", "--repeats", "1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())  # rich wraps long lines
    assert "configs/bench_sim/registration.json" in said and "configs/bench_sim/field.json" in said
    assert "(measured SLM response, 256 levels)" in said and "models/student_fixture" in said
    (run,) = tmp_path.iterdir()
    record = json.loads((run / "provenance.json").read_text())
    assert record["bundle"].endswith("models/student_fixture")
    assert record["system_file"].endswith("configs/bench_sim/system.yaml")
    assert sorted(record["calibration_files"]) == ["field", "registration"]
    rows = json.loads((run / "metrics.json").read_text())
    assert [r["method"] for r in rows] == ["student", "RAAR 20 it"] and all(r["psnr_db"] > 10 for r in rows)
