"""Small simulated benches for the calibration tests, and the in-place YAML key update."""

import math
from pathlib import Path

import pytest
import yaml

from calibration.yaml_keys import update_section_keys
from hil.physics.system import load_system

REPO = Path(__file__).resolve().parents[1]


def small_bench(tmp_path: Path, n: int = 16, bitdepth: int = 8, slm: dict | None = None, **sensor) -> Path:
    """A bench yaml (and its system.yaml) in ``tmp_path``: an ``n x n`` system, no sample unless
    ``slm`` says so, hidden SLM truths from ``slm``, sensor overrides from ``sensor``."""
    system = yaml.safe_load((REPO / "configs" / "system.yaml").read_text())
    system["optics"]["n"] = system["data"]["n"] = n
    system["slm"]["bitdepth"] = bitdepth
    (tmp_path / "system.yaml").write_text(yaml.safe_dump(system))
    cfg = yaml.safe_load((REPO / "configs" / "bench_ideal.yaml").read_text())
    cfg["system"] = "system.yaml"
    cfg["slm"]["kwargs"].update({"sample": "none", "settle_time_s": 0.0, **(slm or {})})
    cfg["camera"]["kwargs"]["sensor"] = sensor
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_update_section_keys_keeps_comments_and_validates(tmp_path):
    path = tmp_path / "system.yaml"
    path.write_text((REPO / "configs" / "system.yaml").read_text())
    update_section_keys(path, "camera", {"gain_adu_per_e": 2.5, "full_well_e": 9000.0}, validate=load_system)
    text = path.read_text()
    assert "  gain_adu_per_e: 2.5\n" in text and "full_well_e: 9000.0" in text
    assert "# mean photons per detector pixel per frame" in text  # other lines untouched
    assert load_system(path).camera.gain_adu_per_e == 2.5
    assert load_system(path).slm.phase_range_rad == pytest.approx(2 * math.pi)
    with pytest.raises(ValueError, match="has no keys \\['gain'\\]"):
        update_section_keys(path, "camera", {"gain": 1.0})
    with pytest.raises(ValueError, match="must be > 0"):
        update_section_keys(path, "camera", {"gain_adu_per_e": -1.0}, validate=load_system)
    assert load_system(path).camera.gain_adu_per_e == 2.5 and not (tmp_path / "system.yaml.new").exists()
