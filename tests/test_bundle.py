"""Model bundle: bit-exact round trip, SLM gray image, corrupt or mismatched bundles rejected."""

import dataclasses
import json

import pytest
import torch
from safetensors.torch import load_file

from hil.learning.bundle import BundleError, load_bundle, manifest_sha256, save_bundle
from hil.learning.coded_system import CodedSystem
from hil.learning.decoders import DecoderConfig
from hil.learning.train_config import TrainConfig
from hil.physics.optics import phase_to_field
from hil.physics.slm import SLMModel

N = 16


@pytest.fixture()
def student_bundle(tmp_path):
    cfg = TrainConfig(role="student", n=N, decoder=DecoderConfig(stages=2, channels=4, refine_steps=1), seed=3)
    system_cfg = cfg.system_config()
    system = CodedSystem(system_cfg.geometry(), 1, cfg.decoder, slm=system_cfg.slm, seed=cfg.seed)
    with torch.no_grad():
        for p in system.decoder.parameters():
            p.add_(0.01 * torch.randn_like(p))
    path = save_bundle(tmp_path / "bundle", system, cfg, system_cfg, {"snr_20db": {"psnr_db": 30.0}})
    return path, system, cfg, system_cfg


def test_round_trip_is_bit_exact(student_bundle):
    path, system, cfg, system_cfg = student_bundle
    b = load_bundle(path, expect_system=system_cfg)
    assert b.mask_rad.dtype == torch.float32 and torch.equal(b.mask_rad, system.mask_rad.detach())
    for (k, v), w in zip(system.decoder.state_dict().items(), b.system.decoder.state_dict().values(), strict=True):
        assert torch.equal(v, w), k
    assert b.train_config == cfg and b.system_config == system_cfg
    gray = SLMModel(system_cfg.slm).phase_to_gray(system.mask_rad.detach())
    assert b.slm_gray.dtype == torch.int32 and torch.equal(b.slm_gray, gray.to(torch.int32))
    manifest = b.manifest
    assert manifest["provenance"]["seed"] == 3 and manifest["provenance"]["git_commit"]
    assert manifest["provenance"]["versions"]["torch"] and manifest["metrics"]["snr_20db"]["psnr_db"] == 30.0
    phase = torch.rand((2, N, N), generator=torch.Generator().manual_seed(0)) * 3
    op = system.operator()
    y = op.normalise_intensities(op.A(phase_to_field(phase)))
    with torch.no_grad():
        assert torch.equal(system.eval()(op, y, None).x, b.system(b.system.operator(), y, None).x)


def test_bundle_files_are_plain_safetensors_and_json(student_bundle):
    path = student_bundle[0]
    assert set(load_file(path / "masks.safetensors")) == {"mask_rad", "slm_gray"}
    assert json.loads((path / "bundle.json").read_text())["format"] == "hil-model-bundle"


def test_corrupted_tensor_file_is_rejected(student_bundle):
    path = student_bundle[0]
    data = bytearray((path / "decoder.safetensors").read_bytes())
    data[-3] ^= 0xFF
    (path / "decoder.safetensors").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="SHA-256"):
        load_bundle(path)


def test_truncated_manifest_and_missing_files_are_rejected(student_bundle, tmp_path):
    path = student_bundle[0]
    with pytest.raises(BundleError, match="no bundle.json"):
        load_bundle(tmp_path)
    text = (path / "bundle.json").read_text()
    (path / "bundle.json").write_text(text[: len(text) // 2])
    with pytest.raises(BundleError, match="not valid JSON"):
        load_bundle(path)
    (path / "bundle.json").write_text(text)
    (path / "masks.safetensors").unlink()
    with pytest.raises(BundleError, match="missing masks.safetensors"):
        load_bundle(path)


def _rewrite(path, manifest, rehash=True):
    if rehash:
        manifest["manifest_sha256"] = manifest_sha256(manifest)
    (path / "bundle.json").write_text(json.dumps(manifest))


def test_config_that_does_not_match_weights_is_rejected(student_bundle):
    path = student_bundle[0]
    manifest = json.loads((path / "bundle.json").read_text())
    manifest["train_config"]["decoder"]["channels"] = 8
    _rewrite(path, manifest, rehash=False)
    with pytest.raises(BundleError, match="manifest_sha256 is missing or does not match"):
        load_bundle(path)
    _rewrite(path, manifest)  # an edit that also fixes the hash is caught by the weights' shapes
    with pytest.raises(BundleError, match="do not belong together"):
        load_bundle(path)
    manifest["train_config"]["decoder"]["channels"] = 4
    manifest["system_config"]["slm"]["bitdepth"] = 6  # the stored gray image no longer matches this SLM
    _rewrite(path, manifest)
    with pytest.raises(BundleError, match="slm_gray"):
        load_bundle(path)


def test_an_absurd_decoder_size_is_refused_before_allocation(student_bundle):
    """channels 200000 would need ~1.4 TB of weights: refused before anything is built or allocated."""
    path = student_bundle[0]
    manifest = json.loads((path / "bundle.json").read_text())
    manifest["train_config"]["decoder"]["channels"] = 200_000
    _rewrite(path, manifest)
    with pytest.raises(BundleError, match="decoder.channels = 200000 exceeds the limit 1024"):
        load_bundle(path)
    manifest["train_config"]["decoder"]["channels"] = 1024  # within the limit, still not the stored weights
    _rewrite(path, manifest)
    with pytest.raises(BundleError, match=r"needs \d{8,} in .* do not belong together"):
        load_bundle(path)
    manifest["train_config"]["decoder"]["channels"] = 4
    manifest["train_config"]["decoder"]["stages"] = 10**9  # would build a billion modules
    _rewrite(path, manifest)
    with pytest.raises(BundleError, match="decoder.stages = 1000000000 exceeds the limit 64"):
        load_bundle(path)


def test_a_deeply_nested_manifest_is_refused(student_bundle, tmp_path):
    path = student_bundle[0]
    (path / "bundle.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(BundleError, match="not valid JSON|nested"):
        load_bundle(path)
    manifest = {"format": "hil-model-bundle", "x": json.loads("[" * 40 + "]" * 40)}
    _rewrite(path, manifest)
    with pytest.raises(BundleError, match="nested more than 32 levels"):
        load_bundle(path)


def test_bundle_for_another_system_is_rejected(student_bundle):
    path, _, _, system_cfg = student_bundle
    other = dataclasses.replace(system_cfg, slm=dataclasses.replace(system_cfg.slm, bitdepth=10))
    with pytest.raises(BundleError, match=r"made for another system than this one: slm.bitdepth is 8 in the bundle"):
        load_bundle(path, expect_system=other)
