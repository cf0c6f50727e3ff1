"""Training: configs, a tiny teacher -> student run whose every loss decreases, exact resume."""

import csv
import dataclasses
from pathlib import Path

import pytest
import torch

import hil.learning.training as training
from hil.common.config import ConfigError, from_mapping
from hil.learning.decoders import DecoderConfig
from hil.learning.distillation import DistillConfig
from hil.learning.train_config import TrainConfig, load_train_config
from hil.learning.training import build_model, loss_terms, make_batch, train

CONFIGS = sorted(Path(__file__).resolve().parents[1].glob("configs/train_*.yaml"))
TINY = dict(n=16, steps=6, batch_size=4, val_images=4, val_every=3, checkpoint_every=3, threads=1)


def _teacher_cfg() -> TrainConfig:
    return TrainConfig(role="teacher", masks=2, decoder=DecoderConfig(stages=3, channels=8, refine_steps=1), **TINY)


def _student_cfg(**kd) -> TrainConfig:
    return TrainConfig(
        role="student",
        decoder=DecoderConfig(stages=2, channels=4, refine_steps=1),
        distillation=DistillConfig(cpm_weight=5.0, feature_weight=0.5, **kd),
        **TINY,
    )


def test_configs_load_strictly(tmp_path):
    assert {p.name for p in CONFIGS} >= {"train_teacher.yaml", "train_student.yaml", "train_student_nokd.yaml"}
    roles = {p.name: load_train_config(p).role for p in CONFIGS}
    assert roles["train_teacher.yaml"] == "teacher" and roles["train_student.yaml"] == "student"
    assert load_train_config(CONFIGS[0], seed=7).seed == 7
    bad = tmp_path / "bad.yaml"
    bad.write_text("role: student\nstepz: 3\n")
    with pytest.raises(ConfigError, match="stepz"):
        load_train_config(bad)
    with pytest.raises(ConfigError, match="one mask"):
        from_mapping(TrainConfig, {"role": "student", "masks": 2})


def test_batches_are_a_pure_function_of_seed_and_step():
    cfg = _student_cfg()
    spec = cfg.data_spec(cfg.system_config())
    a, b, c = make_batch(spec, cfg, 2), make_batch(spec, cfg, 2), make_batch(spec, cfg, 3)
    assert torch.equal(a.phase_rad, b.phase_rad) and a.noise_seed == b.noise_seed
    assert not torch.equal(a.phase_rad, c.phase_rad)
    assert a.phase_rad.shape == (4, 16, 16) and a.photons_per_pixel.min() >= cfg.noise.photons_min


def test_tiny_teacher_to_student_run_decreases_every_loss(tmp_path):
    teacher = train(_teacher_cfg(), tmp_path / "teacher", progress=False).model.system
    cfg = _student_cfg()
    system_cfg = cfg.system_config()
    model = build_model(cfg, system_cfg, teacher=teacher)
    spec = cfg.data_spec(system_cfg)
    fixed = make_batch(spec, cfg, 0)
    model.attach_adapters(fixed)
    assert len(model.teacher_importance_db) == 2 and model.teacher_index in (0, 1)
    params = [p for p in model.parameters() if p.requires_grad]
    assert not any(p is q for p in params for q in teacher.parameters())
    others = [p for p in params if p is not model.system.mask_rad]
    optimizer = torch.optim.Adam([{"params": [model.system.mask_rad], "lr": 5e-2}, {"params": others, "lr": 1e-2}])
    history = []
    for _ in range(30):
        terms = loss_terms(model, fixed)
        optimizer.zero_grad()
        terms["total"].backward()
        optimizer.step()
        history.append({k: float(v.detach()) for k, v in terms.items()})
    assert set(history[0]) == {"recon", "cpm", "feature", "total"}
    assert history[-1]["recon"] < history[0]["recon"] - 0.05  # recon = -PSNR/10: at least 0.5 dB better
    for key in ("cpm", "feature"):
        assert history[-1][key] < 0.9 * history[0][key], key
    assert history[-1]["total"] < history[0]["total"] - 0.05


def test_resume_is_exact_and_log_has_each_step_once(tmp_path, monkeypatch):
    cfg = _student_cfg(teacher="")
    straight = train(cfg, tmp_path / "a", progress=False)
    calls = {"n": 0}
    real = training.loss_terms

    def interrupted(model, batch):
        calls["n"] += 1
        if calls["n"] > 3:
            raise KeyboardInterrupt
        return real(model, batch)

    monkeypatch.setattr(training, "loss_terms", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "b", progress=False)
    monkeypatch.setattr(training, "loss_terms", real)
    resumed = train(cfg, tmp_path / "b", progress=False)
    assert resumed.steps == straight.steps == 6
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    with (tmp_path / "b" / "log.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    assert all(float(r["mask_grad_norm"]) > 0 for r in rows)
    assert rows[2]["val_psnr_db"] and rows[5]["val_psnr_db"]


def test_time_budget_stops_early(tmp_path):
    cfg = dataclasses.replace(_student_cfg(teacher=""), time_budget_s=0.0)
    result = train(cfg, tmp_path, progress=False)
    assert result.stopped == "time_budget" and result.steps == 0


def test_distillation_runs_the_teacher_without_its_handover(tmp_path):
    """The frozen teacher's RAAR handover comes after the `est` tap and carries no gradient: KD skips
    it (it cost most of a KD step) and leaves the caller's teacher as it was."""
    teacher = train(_teacher_cfg(), tmp_path / "teacher", progress=False).model.system
    teacher.decoder.cfg = dataclasses.replace(teacher.decoder.cfg, handover_photons=1.0, handover_iterations=50)
    cfg = _student_cfg()
    model = build_model(cfg, cfg.system_config(), teacher=teacher)
    assert model.teacher.decoder.cfg.handover_iterations == 0 and model.teacher.decoder.cfg.rescue_iterations == 0
    assert teacher.decoder.cfg.handover_iterations == 50  # the caller's teacher is untouched
    batch = make_batch(cfg.data_spec(cfg.system_config()), cfg, 0)
    op = teacher.operator()
    y = teacher.measure(op, batch.phase_rad, None, torch.full((4,), 500.0), cfg.system_config().camera)
    with torch.no_grad():
        full, bare = teacher(op, y, torch.full((4,), 500.0)), model.teacher(op, y, torch.full((4,), 500.0))
    assert torch.equal(full.features["est"], bare.features["est"])  # the features KD uses are the same
    assert not torch.equal(full.x, bare.x)  # only the (unused) output differs


def test_validation_scores_the_decoder_without_its_rescue():
    """Best-model selection in training scores the network, not the RAAR rescue deployment adds."""
    cfg = _student_cfg()
    system_cfg = cfg.system_config()
    model = build_model(cfg, system_cfg)
    system = model.system
    val = make_batch(cfg.data_spec(system_cfg), cfg, 0)
    score = training.validation_psnr(system, model.camera, model.budget, val)
    op = system.operator()
    y, photons = training._measure(system, op, val, model.camera, model.budget, 0)
    system.eval()
    with torch.no_grad():
        rescued = system(op, y, photons)
        assert int(rescued.raar_iterations.max()) == system.decoder.cfg.rescue_iterations  # untrained: refuted
        rescued_psnr = float(training.phase_psnr(rescued.phase_rad, val.phase_rad).mean())
        system.decoder.cfg = dataclasses.replace(system.decoder.cfg, rescue_iterations=0)
        bare_psnr = float(training.phase_psnr(system(op, y, photons).phase_rad, val.phase_rad).mean())
    assert score == pytest.approx(bare_psnr, abs=1e-9) and score != pytest.approx(rescued_psnr, abs=1e-3)
