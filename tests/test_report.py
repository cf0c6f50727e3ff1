"""The run report: files, numbers, and every image loading in a real headless browser."""

import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest_devices import IDEAL_BENCH

from hil.bench.report import SampleResult, gray_image, write_report
from hil.physics.system import load_system

REPO = Path(__file__).resolve().parents[1]
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
CHECK_SCRIPT = """<script>window.addEventListener('load', () => {
  const images = [...document.images];
  const broken = images.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.getAttribute('src'));
  document.body.setAttribute('data-images', images.length);
  document.body.setAttribute('data-broken', broken.join(' ') || 'none');
  document.body.setAttribute('data-rows', document.querySelectorAll('#metrics tbody tr').length);
});</script>"""


def _report(folder: Path) -> tuple[Path, float]:
    """A two-sample report (one with truth) with a calibration file; returns it and the expected PSNR."""
    rng = np.random.default_rng(0)
    truth = rng.uniform(0, math.pi, (64, 64))
    noise = rng.normal(0, 0.05, (64, 64))
    noise -= noise.mean()
    estimate = truth + 1.0 + noise  # a global offset does not count
    expected_psnr_db = 10 * math.log10(math.pi**2 / np.mean(noise**2))
    cdp = rng.exponential(1.0, (128, 128))
    estimates, ms = {"student": estimate, "RAAR 50 it": truth}, {"student": 2.0, "RAAR 50 it": 9.0}
    samples = [
        SampleResult("cells", cdp, estimates, ms, truth, 50.0),
        SampleResult("bench sample", cdp, {"student": estimate}, {"student": 2.5}),
    ]
    calibration = folder / "slm_response.yaml"
    calibration.write_text(yaml.safe_dump({"gamma": [i / 256 for i in range(256)], "rms_residual": 0.01}))
    system = load_system(REPO / "configs" / "system.yaml")
    mask = rng.uniform(0, 2 * math.pi, (64, 64))
    page = write_report(folder / "report", "test report", samples, mask, gray_image(system, mask), math.pi, system,
                        [calibration], {"command": "pytest", "git_commit": "abc"})  # fmt: skip
    return page, expected_psnr_db


def test_report_holds_every_figure_and_the_scores(tmp_path):
    page, expected_psnr_db = _report(tmp_path)
    names = sorted(p.name for p in page.parent.iterdir())
    assert names == sorted(
        ["index.html", "metrics.json", "provenance.json", "mask.png", "calibration0.png"]
        + ["sample0_cdp.png", "sample0_phase.png", "sample0_error.png", "sample1_cdp.png", "sample1_phase.png"]
    )
    rows = json.loads((page.parent / "metrics.json").read_text())
    assert [(r["sample"], r["method"]) for r in rows] == [
        ("cells", "student"),
        ("cells", "RAAR 50 it"),
        ("bench sample", "student"),
    ]
    assert rows[0]["psnr_db"] == pytest.approx(expected_psnr_db, abs=0.05)
    assert rows[1]["psnr_db"] > 150 and rows[1]["ssim"] == pytest.approx(1.0)
    assert "psnr_db" not in rows[2]  # no truth on a real bench: no score, only the time
    text = page.read_text()
    assert f"{rows[0]['psnr_db']:.1f}" in text and "2.5" in text


def test_gray_image_is_what_slmsuite_shows():
    from slmsuite.hardware.slms.simulated import SimulatedSLM

    system = load_system(REPO / "configs" / "system.yaml")
    phase = np.random.default_rng(1).uniform(-3, 9, (64, 64))
    slm = SimulatedSLM((64, 64), bitdepth=8, pitch_um=8, wav_um=1.0, wav_design_um=1.0)
    np.testing.assert_array_equal(gray_image(system, phase), slm._phase2gray(phase.copy()))


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs chromium (apt-get install chromium)")
def test_every_image_loads_in_headless_chromium(tmp_path):
    page, _ = _report(tmp_path)
    checked = page.with_name("check.html")
    checked.write_text(page.read_text().replace("</body>", CHECK_SCRIPT + "</body>"))
    profile = tmp_path / "chromium-profile"
    done = subprocess.run(
        ["chromium", *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=5000", "--dump-dom",
         checked.as_uri()],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    body = re.search(r"<body([^>]*)>", done.stdout).group(1)
    attrs = dict(re.findall(r'data-(\w+)="([^"]*)"', body))
    assert attrs == {"images": "7", "broken": "none", "rows": "3"}


def test_reconstruct_writes_a_report_on_request(tmp_path):
    from typer.testing import CliRunner

    from hil.cli import app

    mask = tmp_path / "mask.npy"
    np.save(mask, np.random.default_rng(0).uniform(0, 2 * math.pi, (64, 64)))
    capture = tmp_path / "c.h5"
    runner = CliRunner()
    args = ["capture", "--bench", str(IDEAL_BENCH), "--out", str(capture), "--mask", str(mask), "--frames", "2"]
    assert runner.invoke(app, args).exit_code == 0
    result = runner.invoke(app, ["reconstruct", str(capture), "--iterations", "5", "--report", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    (row,) = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert row["method"] == "RAAR 5 it" and row["ms_per_frame"] > 0 and "psnr_db" not in row
    assert "100 photons/pixel" in (tmp_path / "r" / "index.html").read_text()  # 2 frames of 50 integrated
