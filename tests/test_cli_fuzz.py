"""Property-based fuzzing of the ``hil`` command (hypothesis): configs, masks, bundles and capture files,
valid ones mutated at random. Whatever the input, the command either succeeds or prints one line
``error: ...`` and exits 2; an unexpected exception (a traceback) fails the test.

Everything runs in process through the real entry point :func:`hil.cli.main`, with ``--dry-run``
where the command has one, so each example costs milliseconds. Byte flips in capture files are
aimed at frame data (covered by Fletcher-32): HDF5's own metadata parser is C code that a random
byte may crash, which a test process cannot survive; metadata faults are fuzzed structurally
(attributes and datasets replaced by values of the wrong kind) instead.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import yaml
from conftest_devices import random_mask, sim_bench_document, write_bench
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from hil.bench.bench import Bench
from hil.bench.capture import CaptureSettings, capture_cdp
from hil.cli import main
from hil.learning.bundle import manifest_sha256, save_bundle
from hil.learning.decoders import DecoderConfig
from hil.learning.train_config import TrainConfig
from hil.learning.training import build_model
from hil.physics.system import load_system

FUZZ = settings(
    max_examples=15,
    deadline=None,
    derandomize=True,  # the same examples in every run (CI)
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**12), max_value=10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.lists(st.integers(min_value=-5, max_value=10**6), max_size=3),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)


def run(capsys, *args: object) -> None:
    """``hil ARGS``: exit 0, or exit 2 with exactly one ``error:`` line on stderr."""
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in args])
    err = capsys.readouterr().err
    assert info.value.code in (0, 2), err
    if info.value.code == 2:
        assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err


def leaves(data: Any, prefix: tuple = ()) -> list[tuple]:
    """Paths to every value in nested dicts and lists."""
    if isinstance(data, dict):
        return [p for k, v in data.items() for p in leaves(v, (*prefix, k))] or [prefix]
    if isinstance(data, list):
        return [p for i, v in enumerate(data) for p in leaves(v, (*prefix, i))] or [prefix]
    return [prefix]


def replaced(data: Any, path: tuple, value: Any) -> Any:
    data = json.loads(json.dumps(data))
    if not path:
        return value
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return data


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    """A valid bench (n = 16), mask, bundle and capture to mutate."""
    folder = tmp_path_factory.mktemp("fuzz")
    bench = write_bench(folder, sim_bench_document())
    np.save(folder / "mask.npy", random_mask(16))
    system_cfg = load_system(folder / "system.yaml")
    cfg = TrainConfig(role="student", decoder=DecoderConfig(stages=1, channels=2, hidden_layers=1, refine_steps=1))
    bundle = save_bundle(folder / "bundle", build_model(cfg, system_cfg).system, cfg, system_cfg, metrics={})
    with Bench.from_config(bench) as b:
        capture_cdp(b, random_mask(16), CaptureSettings(frames=1, dark_frames=1), folder / "capture.h5")
    return {"folder": folder, "bench": bench, "bundle": bundle, "capture": folder / "capture.h5"}


@FUZZ
@given(data=st.data())
def test_fuzzed_system_and_bench_configs(world, tmp_path, capsys, data):
    which = data.draw(st.sampled_from(["system.yaml", "bench.yaml"]))
    original = yaml.safe_load((world["folder"] / which).read_text())
    if data.draw(st.booleans()):
        text = data.draw(st.text(max_size=60))  # anything at all
    else:
        path = data.draw(st.sampled_from(leaves(original)))
        text = yaml.safe_dump(replaced(original, path, data.draw(VALUES)))
    for name in ("system.yaml", "bench.yaml"):
        (tmp_path / name).write_text((world["folder"] / name).read_text())
    (tmp_path / which).write_text(text)
    run(capsys, "check", "--dry-run", "--bench", tmp_path / "bench.yaml")


@FUZZ
@given(
    mask=st.one_of(
        hnp.arrays(
            dtype=st.sampled_from([np.float64, np.float32, np.int16, np.uint8, np.complex64, np.bool_]),
            shape=st.sampled_from([(16, 16), (16,), (8, 16), (16, 16, 1), ()]),
            elements=None,
        ),
        st.binary(max_size=300),
    )
)
def test_fuzzed_masks(world, tmp_path, capsys, mask):
    path = tmp_path / "m.npy"
    if isinstance(mask, bytes):
        path.write_bytes(mask)
    else:
        np.save(path, mask)
    out = tmp_path / "c.h5"
    run(capsys, "capture", "--out", out, "--mask", path, "--bench", world["bench"], "--dry-run")


@FUZZ
@given(data=st.data())
def test_fuzzed_bundles(world, tmp_path, capsys, data):
    bundle = tmp_path / "bundle"
    bundle.mkdir(exist_ok=True)
    for file in world["bundle"].iterdir():
        (bundle / file.name).write_bytes(file.read_bytes())
    kind = data.draw(st.sampled_from(["value", "value_rehashed", "bytes", "weights"]))
    if kind.startswith("value"):
        manifest = json.loads((bundle / "bundle.json").read_text())
        manifest = replaced(manifest, data.draw(st.sampled_from(leaves(manifest))), data.draw(VALUES))
        if kind == "value_rehashed" and isinstance(manifest, dict):  # a deliberate edit
            manifest["manifest_sha256"] = manifest_sha256(manifest)
        (bundle / "bundle.json").write_text(json.dumps(manifest))
    else:
        name = "bundle.json" if kind == "bytes" else "decoder.safetensors"
        raw = bytearray((bundle / name).read_bytes())
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
        (bundle / name).write_bytes(bytes(raw))
    run(capsys, "deploy", bundle, "--bench", world["bench"], "--dry-run")


def _frame_data_offsets(path: Path) -> list[int]:
    with h5py.File(path, "r") as h5:
        offsets = []
        for group in ("frames", "dark"):
            for name in h5[group]:
                info = h5[f"{group}/{name}"].id.get_chunk_info(0)
                offsets.extend(range(info.byte_offset, info.byte_offset + info.size))
    return offsets


@FUZZ
@given(data=st.data())
def test_fuzzed_capture_files(world, tmp_path, capsys, data):
    path = tmp_path / "c.h5"
    path.write_bytes(world["capture"].read_bytes())
    kind = data.draw(st.sampled_from(["attribute", "dataset", "bytes"]))
    if kind == "bytes":
        raw = bytearray(path.read_bytes())
        raw[data.draw(st.sampled_from(_frame_data_offsets(path)))] ^= data.draw(st.integers(1, 255))
        path.write_bytes(bytes(raw))
    else:
        with h5py.File(path, "a") as h5:
            if kind == "attribute":
                name = data.draw(st.sampled_from(["system_json", "camera_spec_json", "exposure_s"]))
                value = data.draw(VALUES)
                h5.attrs[name] = json.dumps(value) if data.draw(st.booleans()) else str(value)
            else:
                name = data.draw(st.sampled_from(["cdp_adu", "mask_rad", "frames/00000"]))
                del h5[name]
                array = data.draw(
                    hnp.arrays(
                        dtype=st.sampled_from([np.float64, np.int32, np.complex64]),
                        shape=st.sampled_from([(32, 32), (16, 16), (4,), ()]),
                    )
                )
                h5.create_dataset(name, data=array)
    run(capsys, "reconstruct", path, "--iterations", 1, "--out", tmp_path / "p.npy", "--overwrite")
