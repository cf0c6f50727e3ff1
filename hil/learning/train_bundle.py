"""Train one config, measure it on the test split, and write its model bundle (CLI and benchmark)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from hil.data.datasets import batch
from hil.learning.bundle import save_bundle
from hil.learning.distributed import DistContext, setup
from hil.learning.evaluation import calibrate_handover, evaluate_system, photons_for_snr, reference_mask
from hil.learning.train_config import TrainConfig
from hil.learning.training import TrainResult, train

TEST_SNRS_DB = (10.0, 20.0, 30.0)
HANDOVER_IMAGES = 8  # validation objects for the handover calibration


def train_to_bundle(
    cfg: TrainConfig,
    out: Path,
    resume: bool = True,
    progress: bool = True,
    test_images: int = 16,
    log: Callable[[str], None] = print,
    ctx: DistContext | None = None,
) -> tuple[TrainResult, Path | None]:
    """Train ``cfg`` in ``out``, evaluate at 10/20/30 dB on ``test_images`` test objects, save ``out/bundle``.

    Under torchrun every rank trains; rank 0 alone evaluates and writes (others return no path).
    """
    ctx = ctx or setup(cfg.device)
    result = train(cfg, out, resume=resume, progress=progress, ctx=ctx)
    if not ctx.is_main:
        return result, None
    log(
        f"{cfg.role} seed {cfg.seed}: {result.steps} steps in {result.elapsed_s:.0f} s ({result.stopped}), "
        f"best val {result.best_val_psnr_db:.2f} dB"
    )
    system_cfg = cfg.system_config()
    system = result.model.system.cpu()
    handover: dict = {}
    if cfg.handover_iterations:
        val, _ = batch(cfg.data_spec(system_cfg), "val", min(cfg.val_images, HANDOVER_IMAGES), cfg.seed)
        photons, iterations, table = calibrate_handover(
            system, val, system_cfg.camera, cfg.noise.budget, cfg.handover_iterations, cfg.seed
        )
        decoder_cfg = dataclasses.replace(cfg.decoder, handover_photons=photons, handover_iterations=iterations)
        system.decoder.cfg = decoder_cfg
        cfg = dataclasses.replace(cfg, decoder=decoder_cfg)
        handover = {"photons_per_frame": photons, "iterations": iterations, "validation": table}
        log(f"handover to RAAR: {iterations} iterations from {photons:.0f} photons/px per frame (0: none)")
    phase, _ = batch(cfg.data_spec(system_cfg), "test", test_images, cfg.seed)
    ref = system_cfg.geometry().operator(reference_mask(system_cfg.geometry(), system_cfg.slm))
    metrics = {}
    for snr in TEST_SNRS_DB:
        photons = photons_for_snr(ref, phase, snr)
        m = evaluate_system(system, phase, system_cfg.camera, photons, cfg.noise.budget, cfg.seed)
        metrics[f"snr_{snr:.0f}db"] = {"photons_per_pixel": photons, **m}
        log(f"test {snr:.0f} dB ({photons:.1f} photons/px): {m['psnr_db']:.2f} dB, SSIM {m['ssim']:.3f}")
    teacher = result.model.teacher
    path = save_bundle(
        out / "bundle",
        system,
        cfg,
        system_cfg,
        metrics,
        test_images=test_images,
        training={
            "steps": result.steps,
            "elapsed_s": result.elapsed_s,
            "stopped": result.stopped,
            "best_val_psnr_db": result.best_val_psnr_db,
            "teacher_mask_importance_db": result.model.teacher_importance_db,
            "teacher_mask_index": None if teacher is None else result.model.teacher_index,
            "cpm_mode": None if teacher is None else result.model.cpm_mode,
            "teacher_mask_stats": result.model.teacher_mask_stats,
            "handover": handover,
        },
    )
    return result, path
