"""The README's main job runs end to end and records its provenance."""

import json

from typer.testing import CliRunner

from hil.cli import app


def test_demo_writes_figure_and_provenance(tmp_path):
    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path), "--images", "2"])
    assert result.exit_code == 0, result.output
    (run,) = tmp_path.iterdir()
    record = json.loads((run / "provenance.json").read_text())
    assert record["command"] == "hil demo" and record["versions"]["torch"].startswith("2.")
    assert [r["iterations"] for r in record["results"]] == [20, 50, 200]
    assert record["results"][-1]["psnr_db"] > 25  # 50 photons/pixel (~20 dB SNR), RAAR with the range prior
    assert (run / "demo.png").stat().st_size > 10_000


def test_demo_rejects_bad_config(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("camera: {gain: 3}")
    result = CliRunner().invoke(app, ["demo", "--config", str(bad), "--out", str(tmp_path)])
    assert result.exit_code != 0
    assert "unknown key 'camera.gain'" in str(result.exception)


def test_entry_point_prints_one_line_and_exits_2(tmp_path, monkeypatch, capsys):
    import pytest

    from hil.cli import main

    bad = tmp_path / "bad.yaml"
    bad.write_text("optics: {n: sixty}")
    monkeypatch.setattr("sys.argv", ["hil", "demo", "--config", str(bad), "--out", str(tmp_path)])
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "key 'optics.n': expected an integer" in err and "Traceback" not in err
