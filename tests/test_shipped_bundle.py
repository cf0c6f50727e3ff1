"""The shipped student bundle (models/student) loads against the default system and keeps its numbers."""

from pathlib import Path

import pytest

from hil.data.datasets import batch
from hil.learning.bundle import load_bundle
from hil.learning.evaluation import evaluate_system
from hil.physics.system import load_system

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "models" / "student"


def test_shipped_bundle_is_small_and_records_its_provenance():
    assert sum(p.stat().st_size for p in BUNDLE.iterdir()) < 512 * 1024
    bundle = load_bundle(BUNDLE, expect_system=load_system(REPO / "configs" / "system.yaml"))
    manifest = bundle.manifest
    assert manifest["role"] == "student" and bundle.slm_gray is not None
    assert manifest["provenance"]["git_commit"] and manifest["provenance"]["versions"]["torch"].startswith("2.")
    # the best product student the distillation benchmark measured: trained alone (README, Design by distillation)
    assert not manifest["train_config"]["distillation"]["teacher"] and manifest["training"]["steps"] == 1200


@pytest.mark.slow  # 16 test objects through the student (~5 s on an idle CPU)
def test_shipped_bundle_reaches_its_recorded_psnr():
    system = load_system(REPO / "configs" / "system.yaml")
    bundle = load_bundle(BUNDLE, expect_system=system)
    cfg = bundle.train_config
    recorded = bundle.manifest["metrics"]["snr_20db"]
    # the test objects the bundle recorded its metrics on (its own data split, stored with it)
    phase, _ = batch(cfg.data_spec(bundle.system_config), "test", bundle.manifest["test_images"], cfg.seed)
    photons = recorded["photons_per_pixel"]
    scores = evaluate_system(bundle.system, phase, system.camera, photons, cfg.noise.budget, cfg.seed)
    assert scores["psnr_db"] == pytest.approx(recorded["psnr_db"], abs=0.3)
    assert scores["psnr_db"] > 30  # 20 dB measurement SNR: far from random (about 5 dB)
