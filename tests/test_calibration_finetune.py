"""Fine-tuning a student on captures from a bench with an aberration it never saw."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from test_calibration_setup import small_bench

from calibration.finetune import FinetuneSettings, finetune_bundle
from hil.bench.bench import Bench
from hil.bench.capture import CaptureSettings, capture_cdp
from hil.bench.config import load_bench
from hil.data import objects
from hil.learning.bundle import load_bundle, save_bundle
from hil.learning.decoders import DecoderConfig
from hil.learning.training import TrainConfig, build_model

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def captured(tmp_path_factory) -> tuple[Path, list[Path]]:
    """A student bundle for a 16 x 16 system and 8 captures of different samples through defocus and astigmatism."""
    torch.manual_seed(0)  # the decoder's initial weights come from the global generator: same in any test order
    tmp = tmp_path_factory.mktemp("ft")
    bench_cfg = small_bench(tmp, n=16, slm={"aberration_rad": [0.8, 0.3]})
    spec_system = load_bench(bench_cfg).system
    cfg = TrainConfig(role="student", decoder=DecoderConfig(stages=2, channels=8, refine_steps=1, warm_iterations=30))
    bundle = save_bundle(tmp / "bundle", build_model(cfg, spec_system).system, cfg, spec_system, metrics={})
    mask = load_bundle(bundle).mask_rad[0].double().numpy()
    rng = np.random.default_rng(0)
    paths = []
    with Bench.from_config(bench_cfg) as bench:
        for i in range(8):
            make = objects.phase_screen if i % 2 else objects.cells
            bench.slm.slm.set_sample(np.pi * make(16, rng).astype(np.float64))
            paths.append(capture_cdp(bench, mask, CaptureSettings(frames=2, dark_frames=1), tmp / f"c{i}.h5").path)
    return bundle, paths


def test_heldout_consistency_improves_and_a_new_bundle_is_written(captured, tmp_path):
    bundle, paths = captured
    before = (bundle / "decoder.safetensors").read_bytes()
    result = finetune_bundle(bundle, paths, tmp_path / "tuned", FinetuneSettings(steps=40, lr=1e-3, holdout=2))
    assert result.heldout_loss_after < 0.97 * result.heldout_loss_before
    assert result.best_step > 0  # the kept decoder is a fine-tuned one (selected on the held-out captures)
    assert len(result.train_captures) == 6 and len(result.heldout_captures) == 2
    assert (bundle / "decoder.safetensors").read_bytes() == before  # the source is untouched
    tuned = load_bundle(tmp_path / "tuned")
    assert np.array_equal(tuned.mask_rad.numpy(), load_bundle(bundle).mask_rad.numpy())
    manifest = json.loads((tmp_path / "tuned" / "bundle.json").read_text())
    assert manifest["finetune"]["source_bundle"] == str(bundle.resolve())
    assert len(manifest["finetune"]["captures_sha256"]) == 8
    assert manifest["finetune"]["result"]["heldout_loss_after"] == pytest.approx(result.heldout_loss_after)


def test_refuses_to_overwrite_and_names_bad_captures(captured, tmp_path):
    bundle, paths = captured
    with pytest.raises(ValueError, match="never overwrites"):
        finetune_bundle(bundle, paths, bundle, FinetuneSettings(steps=1))
    with pytest.raises(FileNotFoundError, match="capture file does not exist"):
        finetune_bundle(bundle, [tmp_path / "missing.h5"], tmp_path / "t", FinetuneSettings(steps=1))
    with pytest.raises(ValueError, match="leaves no training capture"):
        finetune_bundle(bundle, paths[:2], tmp_path / "t", FinetuneSettings(steps=1, holdout=2))


def test_simulated_pairs_raise_the_phase_psnr_of_the_validation_pairs(captured, tmp_path):
    """With simulated pairs through the captures' model the weights are chosen on phase, not consistency."""
    bundle, paths = captured
    settings = FinetuneSettings(steps=6, lr=2e-3, holdout=2, simulated=4)
    result = finetune_bundle(bundle, paths, tmp_path / "tuned", settings)
    assert result.best_step > 0
    assert result.simulated_psnr_db_after > result.simulated_psnr_db_before  # chosen on phase: never worse
    manifest = json.loads((tmp_path / "tuned" / "bundle.json").read_text())
    assert manifest["metrics"]["simulated_psnr_db"] == pytest.approx(result.simulated_psnr_db_after)
    assert manifest["finetune"]["settings"]["simulated"] == 4
    source, tuned = load_bundle(bundle), load_bundle(tmp_path / "tuned")
    assert tuned.system.decoder.cfg == source.system.decoder.cfg  # the hand-over is back after training
    with pytest.raises(ValueError, match="simulated >= 0"):
        FinetuneSettings(simulated=-1)
