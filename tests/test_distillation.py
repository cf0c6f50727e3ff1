"""Distillation losses: global-phase insensitivity, zero when student equals teacher, CPM criteria."""

import math

import pytest
import torch

from hil.common.metrics import phase_psnr
from hil.learning.coded_system import CodedSystem
from hil.learning.decoders import DecoderConfig
from hil.learning.distillation import (
    FeatureAdapters,
    build_adapters,
    choose_cpm_mode,
    cpm_loss,
    gram_loss,
    leave_one_out_importance,
    mask_overlap_loss,
    mask_structure,
    reconstruction_loss,
)
from hil.physics.optics import CDPGeometry, phase_to_field

N = 16


def _masks(count: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return phase_to_field(torch.rand((count, N, N), generator=g) * 2 * math.pi)


def test_reconstruction_loss_ignores_global_phase_and_is_minus_psnr_over_10():
    phase = torch.rand((2, N, N), generator=torch.Generator().manual_seed(0)) * math.pi
    assert float(reconstruction_loss(phase_to_field(phase + 1.234), phase)) < -9.0  # the 100 dB floor
    bumped = phase.clone()
    bumped[:, : N // 2] += 0.1  # half the pixels off by 0.1 rad: after the offset, error ±0.05
    loss = float(reconstruction_loss(phase_to_field(bumped), phase))
    assert loss == pytest.approx(math.log10(0.05**2 / math.pi**2), abs=1e-3)
    assert -10 * loss == pytest.approx(float(phase_psnr(torch.angle(phase_to_field(bumped)), phase).mean()), abs=1e-2)


def test_cpm_losses_zero_when_student_equals_teacher():
    teacher = _masks(4)
    for index in range(4):
        student = teacher[index : index + 1] * complex(math.cos(0.7), math.sin(0.7))  # global phase only
        assert float(cpm_loss(student, teacher, "informative", index)) < 1e-6
    same = teacher[:1].expand(4, -1, -1)
    assert float(gram_loss(teacher[:1], same)) < 1e-12
    assert float(cpm_loss(teacher[:1], teacher, "none", 0)) == 0.0


def test_cpm_losses_separate_unlike_masks():
    random = _masks(1, seed=1)
    smooth = phase_to_field(torch.linspace(0, 1, N).view(1, 1, N).expand(1, N, N))  # a gentle ramp
    assert float(mask_overlap_loss(random[0], _masks(1, seed=2)[0])) > 0.8
    assert float(gram_loss(random, smooth)) > 10 * float(gram_loss(random, _masks(4, seed=3)))


def test_feature_loss_zero_for_equal_features_and_adapts_widths():
    f = {"stage0": torch.randn(2, 8, N, N), "stage1": torch.randn(2, 8, N, N)}
    same = build_adapters(f, f)
    assert len(same.adapters) == 0
    assert float(same(f, f)) == 0.0
    wide = {f"stage{k}": torch.randn(2, 12, N, N) for k in range(4)}
    adapters = build_adapters(f, wide)
    assert isinstance(adapters, FeatureAdapters)
    assert adapters.pairs == [("stage0", "stage0"), ("stage1", "stage1")]
    assert set(adapters.adapters) == {"stage0", "stage1"}
    loss = adapters(f, wide)
    loss.backward()
    assert adapters.adapters["stage0"].weight.grad is not None


def test_leave_one_out_importance_per_mask():
    teacher = CodedSystem(CDPGeometry(N), 3, DecoderConfig(stages=2, channels=4, refine_steps=1), seed=0).eval()
    phase = torch.rand((2, N, N), generator=torch.Generator().manual_seed(0)) * math.pi
    op = teacher.operator()
    y = op.normalise_intensities(op.A(phase_to_field(phase)))
    drops = leave_one_out_importance(teacher, y, None, phase)
    assert drops.shape == (3,) and torch.isfinite(drops).all()


def test_feature_loss_on_known_tensors():
    # student stage0 = teacher stage0 + 0.5 everywhere, teacher all ones: relative error 0.25;
    # est equal: 0; stage1 of the teacher has no student counterpart and is ignored
    teacher = {"stage0": torch.ones(1, 3, N, N), "stage1": torch.randn(1, 3, N, N), "est": torch.ones(1, 2, N, N)}
    student = {"stage0": torch.full((1, 3, N, N), 1.5), "est": torch.ones(1, 2, N, N)}
    adapters = build_adapters(student, teacher)
    assert adapters.pairs == [("stage0", "stage0"), ("est", "est")] and len(adapters.adapters) == 0
    assert float(adapters(student, teacher)) == pytest.approx((0.25 + 0.0) / 2)


def test_cpm_mode_follows_what_the_teacher_masks_carry():
    random = _masks(4)
    assert mask_structure(random) == pytest.approx(1.0, abs=0.6)  # i.i.d. masks: about one unit
    ramp = phase_to_field(torch.linspace(0, 2, N).view(1, 1, N).expand(4, N, N))
    assert mask_structure(ramp) > 100
    assert choose_cpm_mode(ramp, torch.zeros(4))[0] == "gram"
    assert choose_cpm_mode(random, torch.tensor([0.1, 2.0, 0.2, 0.1]))[0] == "informative"
    mode, stats = choose_cpm_mode(random, torch.tensor([0.1, 0.2, 0.2, 0.1]))
    assert mode == "none" and stats["importance_spread_db"] == pytest.approx(0.0)
