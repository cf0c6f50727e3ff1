"""The README's main job runs end to end and records its provenance."""

import json

from typer.testing import CliRunner

from hil.cli import app


def test_demo_runs_the_chain_on_the_simulated_bench(tmp_path):
    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    (run,) = tmp_path.iterdir()
    record = json.loads((run / "provenance.json").read_text())
    assert record["command"] == "hil demo" and record["versions"]["torch"].startswith("2.")
    assert [r["method"] for r in record["results"]] == ["RAAR 20 it", "RAAR 50 it", "RAAR 200 it"]
    assert 45 < record["photons_per_pixel"] < 55  # system.yaml: 50 photons/pixel per frame
    assert record["results"][-1]["psnr_db"] > 28  # the bench's hidden sample from one captured CDP
    assert (run / "capture.h5").is_file() and (run / "demo.png").stat().st_size > 10_000


def test_demo_rejects_bad_config(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: 0\ncamera: {gain: 3}")
    result = CliRunner().invoke(app, ["demo", "--bench", str(bad), "--out", str(tmp_path)])
    assert result.exit_code != 0
    assert "camera.gain" in str(result.exception) and str(bad) in str(result.exception)


def test_entry_point_prints_one_line_and_exits_2(tmp_path, monkeypatch, capsys):
    import pytest

    from hil.cli import main

    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: sixty")
    monkeypatch.setattr("sys.argv", ["hil", "demo", "--bench", str(bad), "--out", str(tmp_path)])
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "key 'seed': expected an integer" in err and "Traceback" not in err
