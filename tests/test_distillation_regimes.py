"""Distillation benchmark pieces: every regime trains a few steps with and without a teacher; the
teacher is evaluated at the budget it names; the photon-gated handover to RAAR."""

import csv
import dataclasses
import math
from pathlib import Path

import pytest
import torch

from hil.benchmarks.distillation import (
    REGIMES,
    DistillationBenchmark,
    EvalSet,
    _student_variants,
    ablation_distillation,
    evaluate_all,
    learned_rows,
    regime_config,
    regime_name,
    teacher_config,
)
from hil.learning.coded_system import CodedSystem
from hil.learning.decoders import RESCUE_CHI2, DecoderConfig, data_misfit, hand_over, photon_level
from hil.learning.distillation import DistillConfig
from hil.learning.evaluation import calibrate_handover, choose_handover, evaluate_system
from hil.learning.train_config import TrainConfig
from hil.learning.training import train
from hil.physics.camera import CameraSpec
from hil.physics.optics import CDPGeometry, phase_to_field
from hil.solvers import ObjectConstraint
from hil.solvers.alternating import raar

STUDENT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "train_student.yaml"
TINY = dict(n=16, steps=3, batch_size=2, val_images=2, val_every=3, checkpoint_every=3, threads=1)
N = 16


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    cfg = TrainConfig(
        role="teacher", masks=2, decoder=DecoderConfig(stages=2, channels=4, refine_steps=1, warm_iterations=2), **TINY
    )
    return train(cfg, tmp_path_factory.mktemp("teacher"), progress=False).model.system


@pytest.mark.parametrize("regime", REGIMES)
def test_every_regime_trains_with_and_without_a_teacher(regime, teacher, tmp_path):
    bench = DistillationBenchmark(
        cnn_decoder=DecoderConfig(kind="unet", channels=4, warm_iterations=2), regime_steps=3, lowdata_fraction=0.1
    )
    base = TrainConfig(
        decoder=DecoderConfig(stages=2, channels=4, refine_steps=1, warm_iterations=2),
        distillation=DistillConfig(cpm_mode="auto", feature_weight=0.5),
        **TINY,
    )
    cfg = regime_config(bench, base, regime)
    for with_kd in (True, False):
        result = train(
            cfg, tmp_path / regime_name(regime, with_kd), progress=False, teacher=teacher if with_kd else None
        )
        assert result.steps == 3 and math.isfinite(result.best_val_psnr_db)
        assert float(result.model.system.mask_rad.grad.norm()) > 0  # the mask is being trained
        if with_kd:
            assert result.model.cpm_mode in ("informative", "gram", "none")
            assert ("est", "est") in result.model.adapters.pairs
    system = result.model.system
    if regime == "binary":  # 1-bit SLM: the realised mask takes two phases, π apart
        phases = torch.angle(system.operator().masks.detach()).flatten()
        levels = torch.unique(torch.round(torch.remainder(phases, 2 * math.pi), decimals=4))
        assert len(levels) == 2 and float(levels[1] - levels[0]) == pytest.approx(math.pi, abs=1e-3)
    if regime == "cnn":
        assert type(system.decoder).__name__ == "UNetDecoder" and system.decoder.cfg.warm_iterations == 2
    if regime == "lowdata":
        assert cfg.data_spec(cfg.system_config()).train_subset == 0.1


def test_teacher_rows_use_the_budget_they_name():
    geometry = CDPGeometry(N)
    system = CodedSystem(geometry, 4, DecoderConfig(stages=1, channels=4, refine_steps=1), seed=0).eval()
    phase = torch.rand((3, N, N), generator=torch.Generator().manual_seed(0)) * math.pi
    ts = EvalSet("in_distribution", phase, {20.0: 40.0}, ("a", "b", "a"))
    cfg = DistillationBenchmark(snrs_db=(20.0,))
    rows, per_image = learned_rows(
        "teacher", "teacher", system, ("per_snapshot", "equal_total"), [ts], cfg, CameraSpec()
    )
    by_budget = {r["budget"]: r["psnr_db"] for r in rows}
    for budget in ("per_snapshot", "equal_total"):
        expected = evaluate_system(system, phase, CameraSpec(), 40.0, budget, cfg.noise_seed)["psnr_db"]
        assert by_budget[budget] == pytest.approx(expected, abs=1e-9)
    assert by_budget["per_snapshot"] != by_budget["equal_total"]
    assert rows[0]["kinds"]["b"] == pytest.approx(float(per_image[("in_distribution", 20.0, "per_snapshot")][1]))


def test_handover_runs_raar_only_at_or_above_its_photon_level():
    geometry = CDPGeometry(N)
    op = geometry.operator(phase_to_field(torch.rand((1, N, N), generator=torch.Generator().manual_seed(2)) * 6.28))
    phase = torch.rand((2, N, N), generator=torch.Generator().manual_seed(3)) * math.pi
    y = op.A(phase_to_field(phase))
    x = phase_to_field(torch.full((2, N, N), 1.0))
    cfg = DecoderConfig(handover_photons=100.0, handover_iterations=5)
    level = photon_level(torch.tensor([10.0, 1000.0]), 2, torch.device("cpu"))
    out, iterations = hand_over(cfg, ObjectConstraint(), op, y, x, level, rescue=False)
    assert torch.equal(out[0], x[0])  # below the threshold: untouched
    assert torch.allclose(out[1], raar(op, y[1:], x[1:], ObjectConstraint(), iterations=5)[0])
    assert iterations.tolist() == [0, 5]
    out, iterations = hand_over(
        dataclasses.replace(cfg, handover_iterations=0), ObjectConstraint(), op, y, x, level, rescue=False
    )
    assert torch.equal(out, x) and iterations.tolist() == [0, 0]


@pytest.mark.parametrize("photons", [2.0, 50.0, 500.0])
def test_data_misfit_of_the_true_object_is_the_poisson_closed_form(photons):
    # Poisson counts of the true intensities give E[(y - λ)² / (λ + 1)] = λ / (λ + 1) per pixel
    op = CDPGeometry(N).operator(torch.rand((1, N, N), generator=torch.Generator().manual_seed(5)) * 6.28)
    phase = torch.rand((8, N, N), generator=torch.Generator().manual_seed(6)) * math.pi
    x = phase_to_field(phase)
    clean = op.A(x)
    scale = photons / clean.mean(dim=(-2, -1), keepdim=True)
    counts = torch.poisson(clean * scale, generator=torch.Generator().manual_seed(7))
    y = counts / scale  # model units, as measure() returns them
    lam = (clean * scale).double()
    expected = (lam / (lam + 1)).mean(dim=(1, 2, 3))
    level = photon_level(photons, 8, torch.device("cpu"))
    misfit = data_misfit(op, y, x, level)
    assert float(misfit.mean()) == pytest.approx(float(expected.mean()), rel=0.05)  # few pixels per frame: pooled
    assert bool((misfit < RESCUE_CHI2).all())
    wrong = data_misfit(op, y, phase_to_field(torch.zeros_like(phase)), level)
    assert bool((wrong > misfit).all())


def test_rescue_replaces_only_refuted_frames_and_only_when_raar_fits_better(monkeypatch):
    op = CDPGeometry(N).operator(torch.rand((1, N, N), generator=torch.Generator().manual_seed(8)) * 6.28)
    phase = torch.rand((2, N, N), generator=torch.Generator().manual_seed(9)) * math.pi
    y = op.A(phase_to_field(phase))  # noiseless frames, read at 1000 photons per pixel
    level = photon_level(1000.0, 2, torch.device("cpu"))
    x = torch.stack((phase_to_field(phase[0]), phase_to_field(torch.zeros_like(phase[1]))))  # frame 1 is wrong
    cfg = DecoderConfig(rescue_iterations=50)
    out, iterations = hand_over(cfg, ObjectConstraint(), op, y, x, level)
    assert iterations.tolist() == [0, 50]
    assert torch.equal(out[0], x[0])  # explained by its object: untouched
    tried = raar(op, y[1:], x[1:], ObjectConstraint(), iterations=50)
    assert torch.allclose(out[1], tried[0])
    assert float(data_misfit(op, y[1:], out[1:], level[1:])) < float(data_misfit(op, y[1:], x[1:], level[1:]))
    assert torch.equal(hand_over(cfg, ObjectConstraint(), op, y, x, level, rescue=False)[0], x)
    # RAAR that fits worse than the decoder is tried (and counted) but not kept
    monkeypatch.setattr("hil.learning.decoders.raar", lambda op_, y_, x_, c_, iterations: torch.flip(x_, (-1,)) * 1j)
    worse, iterations = hand_over(cfg, ObjectConstraint(), op, y, x, level)
    assert torch.equal(worse, x) and iterations.tolist() == [0, 50]


def test_rescue_continues_a_handover_the_data_still_refute_to_its_total():
    op = CDPGeometry(N).operator(torch.rand((1, N, N), generator=torch.Generator().manual_seed(8)) * 6.28)
    phase = torch.rand((2, N, N), generator=torch.Generator().manual_seed(9)) * math.pi
    y = op.A(phase_to_field(phase))  # noiseless frames, read at 1000 photons per pixel: both handed over
    level = photon_level(1000.0, 2, torch.device("cpu"))
    x = torch.stack((phase_to_field(phase[0]), phase_to_field(torch.zeros_like(phase[1]))))  # frame 1 is wrong
    cfg = DecoderConfig(handover_photons=100.0, handover_iterations=5, rescue_iterations=50)
    handed = raar(op, y[1:], x[1:], ObjectConstraint(), iterations=5)
    assert float(data_misfit(op, y[1:], handed, level[1:])) > RESCUE_CHI2  # 5 iterations leave it refuted
    out, iterations = hand_over(cfg, ObjectConstraint(), op, y, x, level)
    assert iterations.tolist() == [5, 50]  # the explained frame keeps its handover, the other goes on to 50
    assert torch.allclose(out[1], raar(op, y[1:], handed, ObjectConstraint(), iterations=45)[0])
    assert float(data_misfit(op, y[1:], out[1:], level[1:])) < float(data_misfit(op, y[1:], handed, level[1:]))
    assert hand_over(cfg, ObjectConstraint(), op, y, x, level, rescue=False)[1].tolist() == [5, 5]


def test_calibrated_handover_never_loses_where_it_runs():
    # an untrained decoder: RAAR from its output wins at high photon counts, so the handover switches on there
    system = CodedSystem(CDPGeometry(N), 1, DecoderConfig(stages=1, channels=4, refine_steps=0), seed=0)
    phase = torch.rand((4, N, N), generator=torch.Generator().manual_seed(4)) * math.pi
    photons, iterations, table = calibrate_handover(
        system, phase, CameraSpec(), "per_snapshot", (10, 40), seed=0, photon_levels=(5.0, 500.0, None)
    )
    assert iterations in (10, 40) and 0 < photons <= 5000
    active = [r for r in table if r["photons_per_frame"] is None or r["photons_per_frame"] >= photons]
    assert active and all(r["handover_psnr_db"][str(iterations)] >= r["decoder_psnr_db"] for r in active)
    assert system.decoder.cfg.handover_iterations == 0  # calibration leaves the decoder as it was


def test_handover_threshold_lies_between_the_levels_where_it_loses_and_wins():
    def row(photons, decoder, handover):  # PSNRs in dB; handover after 30 / 200 RAAR iterations
        return {"photons_per_frame": photons, "decoder_psnr_db": decoder,
                "handover_psnr_db": {"30": handover[0], "200": handover[1]}}  # fmt: skip

    table = [row(5.0, 26.0, (20.0, 18.0)), row(150.0, 40.0, (39.0, 39.5)), row(500.0, 44.0, (44.5, 45.0)),
             row(1500.0, 48.0, (49.0, 50.0)), row(None, 55.0, (56.0, 60.0))]  # fmt: skip
    photons, iterations = choose_handover(table, (30, 200))
    assert iterations == 200 and photons == pytest.approx(math.sqrt(150.0 * 500.0))  # 274: a 495-photon frame gets it
    never = [row(5.0, 26.0, (20.0, 18.0)), row(None, 55.0, (50.0, 51.0))]
    assert choose_handover(never, (30, 200)) == (0.0, 0)
    noiseless_only = [row(5.0, 26.0, (20.0, 18.0)), row(500.0, 44.0, (43.0, 43.5)), row(None, 55.0, (56.0, 60.0))]
    assert choose_handover(noiseless_only, (30, 200)) == (5000.0, 200)  # above every finite level


def test_ablations_force_their_cpm_mode_on_the_shipped_student_config():
    bench = DistillationBenchmark(
        student_config=str(STUDENT_CONFIG),
        seeds=(0,),
        regimes=("product",),
        ablations=("cpm_gram", "cpm_none", "feature_none"),
    )
    runs = _student_variants(bench)
    kd = runs["student_kd_s0"][1].distillation
    assert kd.cpm_mode == "auto" and kd.teacher  # the KD student itself chooses its CPM mode
    cpm_only = runs["ablation_feature_none"][1].distillation
    assert cpm_only.cpm_mode == "informative" and cpm_only.cpm_weight == kd.cpm_weight > 0
    assert cpm_only.feature_weight == 0 and cpm_only.teacher == kd.teacher
    feature_only = runs["ablation_cpm_none"][1].distillation
    assert feature_only.cpm_mode == "none" and feature_only.feature_weight == kd.feature_weight > 0
    assert runs["ablation_cpm_gram"][1].distillation.cpm_mode == "gram"


def test_step_budgets_per_group_and_the_teacher_has_no_wall_clock_cap():
    bench = DistillationBenchmark(
        student_config=str(STUDENT_CONFIG),
        teacher_config=str(STUDENT_CONFIG.with_name("train_teacher.yaml")),
        seeds=(0,),
        regimes=("product", "cnn"),
        ablations=("cpm_gram", "unet_backprojection"),
        student_steps=50,
        regime_steps=20,
        ablation_steps=7,
    )
    steps = {name: run_cfg.steps for name, (_, run_cfg) in _student_variants(bench).items()}
    assert steps == {"student_kd_s0": 50, "student_nokd_s0": 50, "cnn_kd_s0": 20, "cnn_nokd_s0": 20,
                     "ablation_cpm_gram": 7, "ablation_unet_backprojection": 7}  # fmt: skip
    unset = dataclasses.replace(bench, ablation_steps=None)
    assert _student_variants(unset)["ablation_cpm_gram"][1].steps == 50  # as the product students
    teacher_cfg = teacher_config(bench)
    assert teacher_cfg.time_budget_s is None and teacher_cfg.steps == 1000  # the config's steps, all of them


def test_an_ablation_without_the_term_it_keeps_is_refused():
    with pytest.raises(ValueError, match="cpm_weight > 0"):
        ablation_distillation(DistillConfig(teacher="t", cpm_weight=0.0), "feature_none")
    with pytest.raises(ValueError, match="feature_weight > 0"):
        ablation_distillation(DistillConfig(teacher="t", feature_weight=0.0), "cpm_none")
    with pytest.raises(ValueError, match="unknown ablation 'cpm_all'"):
        ablation_distillation(DistillConfig(teacher="t"), "cpm_all")


def test_cpm_only_ablation_trains_on_the_informative_cpm_term(teacher, tmp_path):
    distill = ablation_distillation(DistillConfig(cpm_mode="auto", cpm_weight=10.0, feature_weight=0.5), "feature_none")
    cfg = TrainConfig(
        decoder=DecoderConfig(stages=2, channels=4, refine_steps=1, warm_iterations=2), distillation=distill, **TINY
    )
    result = train(cfg, tmp_path, progress=False, teacher=teacher)
    assert result.model.cpm_mode == "informative"  # not re-chosen from the teacher's masks
    with open(tmp_path / "log.csv") as fh:
        rows = [r for r in csv.DictReader(fh) if r["cpm"]]
    assert rows and all(0 < float(r["cpm"]) <= 1 for r in rows)  # 1 - |<μ_s, μ_t>| / N of two distinct masks


def test_evaluation_in_worker_processes_gives_the_rows_it_gives_here(tmp_path):
    from hil.learning.train_bundle import train_to_bundle

    cfg = TrainConfig(decoder=DecoderConfig(stages=1, channels=4, refine_steps=1, warm_iterations=2), **TINY)
    _, path = train_to_bundle(cfg, tmp_path / "student_nokd_s0", progress=False, test_images=2)
    g = torch.Generator().manual_seed(0)
    sets = [EvalSet("unseen_kind", torch.rand((2, N, N), generator=g) * math.pi, {20.0: 50.0}, ("cells", "cells"))]
    bench, camera = DistillationBenchmark(snrs_db=(20.0,), jobs=1), CameraSpec()
    paths, regimes = {"student_nokd_s0": str(path)}, {"student_nokd_s0": "product"}
    here = evaluate_all(bench, paths, regimes, sets, camera)["student_nokd_s0"]
    calls = []
    pooled = evaluate_all(
        dataclasses.replace(bench, jobs=2), paths, regimes, sets, camera, meanwhile=lambda: calls.append(1)
    )["student_nokd_s0"]
    assert calls == [1]  # the classical rows' slot runs while the workers evaluate
    assert [(r["method"], r["regime"], r["budget"]) for r in here[0]] == [("student_nokd_s0", "product", "equal_total")]
    assert [r["psnr_db"] for r in pooled[0]] == [r["psnr_db"] for r in here[0]]
    assert all(torch.equal(pooled[1][k], here[1][k]) for k in here[1])
