"""Bundles written before the handover, train-subset and SLM-override fields load unchanged."""

import json

import torch

from hil.learning.bundle import load_bundle, manifest_sha256, save_bundle
from hil.learning.coded_system import CodedSystem
from hil.learning.decoders import DecoderConfig
from hil.learning.train_config import TrainConfig

NEW_TRAIN_KEYS = ("slm_bitdepth", "train_subset", "handover_iterations")
NEW_DECODER_KEYS = ("handover_photons", "handover_iterations")


def test_a_manifest_without_the_new_fields_loads_with_todays_architecture(tmp_path):
    cfg = TrainConfig(
        role="student", n=16, decoder=DecoderConfig(stages=2, channels=4, refine_steps=1, warm_iterations=3)
    )
    system_cfg = cfg.system_config()
    system = CodedSystem(system_cfg.geometry(), 1, cfg.decoder, slm=system_cfg.slm, seed=0)
    path = save_bundle(tmp_path / "bundle", system, cfg, system_cfg, {})
    manifest_path = path / "bundle.json"
    manifest = json.loads(manifest_path.read_text())
    for key in NEW_TRAIN_KEYS:
        manifest["train_config"].pop(key)
    for key in NEW_DECODER_KEYS:
        manifest["train_config"]["decoder"].pop(key)
    manifest["system_config"]["data"].pop("train_subset")
    manifest["system_config"]["data"]["split_fractions"] = [0.8, 0.1, 0.1]  # the old split, as stored then
    manifest["manifest_sha256"] = manifest_sha256(manifest)  # as a bundle of that time, re-hashed, carries
    manifest_path.write_text(json.dumps(manifest))
    loaded = load_bundle(path)
    assert loaded.system.decoder.cfg.handover_iterations == 0  # no handover: decodes as before
    keys = set(system.decoder.state_dict())
    assert keys == set(loaded.system.decoder.state_dict()) and not any("handover" in k for k in keys)
    y = torch.rand((1, 1, *system_cfg.geometry().detector_shape))
    op = loaded.system.operator()
    assert torch.equal(loaded.system(op, y, None).x, system.eval()(system.operator(), y, None).x)
