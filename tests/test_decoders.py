"""Unrolled and U-Net decoders, coded systems: shapes, range, gradients through the quantised mask."""

import math

import pytest
import torch

from hil.learning.coded_system import CodedSystem, photons_per_frame, point_antisymmetry, twin
from hil.learning.decoders import DecoderConfig, UnrolledDecoder, build_decoder, feature_pairs, parameter_count
from hil.physics.camera import CameraSpec
from hil.physics.optics import CDPGeometry, phase_to_field
from hil.physics.slm import SLMSpec

N = 16


def _student(kind: str = "unrolled") -> CodedSystem:
    cfg = DecoderConfig(kind=kind, stages=3, channels=8, refine_steps=2)
    return CodedSystem(CDPGeometry(N), 1, cfg, slm=SLMSpec(bitdepth=4), seed=0)


def system_camera() -> CameraSpec:
    return CameraSpec()


def _objects(batch: int = 3) -> torch.Tensor:
    return torch.rand((batch, N, N), generator=torch.Generator().manual_seed(1)) * math.pi


@pytest.mark.parametrize("kind", ["unrolled", "unet"])
def test_shapes_range_and_taps(kind):
    system = _student(kind)
    op = system.operator()
    y = system.measure(op, _objects(), None, torch.full((3,), 50.0), system_camera())
    out = system(op, y, torch.full((3,), 50.0))
    assert out.x.shape == (3, N, N) and out.x.is_complex()
    assert torch.allclose(out.x.abs(), torch.ones(3, N, N), atol=1e-5)
    assert float(torch.sin(out.phase_rad.detach()).min()) >= -1e-5  # phase in the [0, π] range
    expected = (
        ["stage0", "stage1", "stage2", "est"] if kind == "unrolled" else ["unet.enc0", "unet.enc1", "unet.mid", "est"]
    )
    assert list(out.features) == expected
    assert out.features[expected[0]].shape == (3, 8, N, N)


def test_gradient_reaches_mask_through_quantised_slm():
    system = _student()
    levels = torch.from_numpy(system.slm.spec.level_phases()).float()
    realised = torch.angle(system.transmittance().detach()).remainder(2 * math.pi)
    gap = (realised.reshape(-1, 1) - levels.reshape(1, -1)).abs()
    assert float(torch.minimum(gap, 2 * math.pi - gap).min(dim=1).values.max()) < 1e-4  # only the 16 levels
    op = system.operator()
    phase = _objects()
    y = system.measure(op, phase, None, torch.full((3,), 50.0), system_camera(), torch.Generator().manual_seed(0))
    loss = (system(op, y, torch.full((3,), 50.0)).phase_rad - phase).square().mean()
    loss.backward()
    grad = system.mask_rad.grad
    assert grad is not None and torch.isfinite(grad).all() and float(grad.abs().sum()) > 0
    assert all(p.grad is not None for p in system.decoder.parameters())


def test_teacher_has_continuous_masks_and_more_parameters():
    teacher = CodedSystem(CDPGeometry(N), 4, DecoderConfig(stages=4, channels=12), slm=None, seed=0)
    student = _student()
    assert teacher.transmittance().shape == (4, N, N)
    assert torch.allclose(torch.angle(teacher.transmittance()).remainder(2 * math.pi), teacher.mask_rad.detach(),
                          atol=1e-5)  # fmt: skip
    assert parameter_count(teacher.decoder) > 2 * parameter_count(student.decoder)


def test_gates_follow_photon_level_at_init():
    dec = UnrolledDecoder(N, DecoderConfig(stages=2, refine_steps=1)).requires_grad_(False)
    low, high = torch.tensor([-1.0]), torch.tensor([2.0])
    assert float(dec.residual_gate(0, low)) > float(dec.residual_gate(0, high))  # CNN shrinks as photons rise
    assert float(dec.refine_gate(0, low)) < float(dec.refine_gate(0, high))  # data consistency grows


def test_noiseless_and_budget_helpers():
    system = _student()
    op = system.operator()
    y = op.A(phase_to_field(_objects()))
    assert system(op, op.normalise_intensities(y), None).x.shape == (3, N, N)
    p = torch.tensor([40.0])
    assert float(photons_per_frame(p, 4, "equal_total")) == 10.0
    assert float(photons_per_frame(p, 4, "per_snapshot")) == 40.0


def test_feature_pairs_match_stage_semantics():
    # stage k after the same warm start pairs with stage k; the output estimate with the output estimate;
    # taps without a counterpart (extra teacher stages, U-Net encoder levels) stay unpaired
    student = ["stage0", "stage1", "est"]
    teacher = ["stage0", "stage1", "stage2", "stage3", "est"]
    assert feature_pairs(student, teacher) == [("stage0", "stage0"), ("stage1", "stage1"), ("est", "est")]
    assert feature_pairs(["unet.enc0", "unet.mid", "est"], teacher) == [("est", "est")]
    assert feature_pairs(["s0", "s1"], ["t0", "t1"]) == []  # unlike names never pair by position


def test_twin_gives_same_intensities_and_antisymmetry_score():
    g = torch.Generator().manual_seed(3)
    mask = torch.polar(torch.ones(N, N), torch.rand((N, N), generator=g) * 2 * math.pi)
    op = CDPGeometry(N).operator(mask[None])
    x = phase_to_field(_objects(2))
    assert torch.allclose(op.A(twin(x, mask)), op.A(x), rtol=1e-4, atol=1e-4)
    theta = torch.rand((1, N, N), generator=g) * 2 * math.pi
    antisymmetric = (theta - torch.flip(theta, dims=(-2, -1))) / 2 + 0.15  # θ(n) + θ(N-1-n) = 0.3
    assert float(point_antisymmetry(antisymmetric)) == pytest.approx(1.0, abs=1e-5)
    assert float(point_antisymmetry(theta)) < 0.2


def test_build_decoder_rejects_unet_size():
    with pytest.raises(ValueError, match="divisible by 4"):
        build_decoder(18, DecoderConfig(kind="unet"))
