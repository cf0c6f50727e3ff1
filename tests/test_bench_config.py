"""Bench configs: the shipped ones load; malformed ones fail with the file and the key named."""

import copy

import pytest
import yaml
from conftest_devices import REPO, sim_bench_document, write_bench
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hil.bench.config import load_bench
from hil.common.config import ConfigError


@pytest.mark.filterwarnings("ignore:pyglet not installed")
def test_shipped_configs_load_without_touching_devices():
    spec = load_bench(REPO / "configs" / "bench_ideal.yaml")
    assert spec.slm.cls.__name__ == "SimulatedBenchSLM" and spec.camera.cls.__name__ == "SimulatedBenchCamera"
    assert spec.serial["shutter"].kwargs == {"power_mw": 1.0, "power_limits_mw": (0.0, 5.0)}
    assert spec.system.optics.n == 64
    template = load_bench(REPO / "configs" / "bench_template.yaml")
    assert template.camera.cls.__name__ == "OpenCVCamera"
    assert template.config.serial["shutter"].port == "/dev/ttyUSB0"


def _set(doc, dotted, value):
    *parents, leaf = dotted.split(".")
    node = doc
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value
    return doc


CASES = [
    ("lasers", {}, r"unknown key 'lasers'"),
    ("slm.rio_offset_px", [0, 0], r"unknown key 'slm.rio_offset_px'"),
    ("slm.kwargs.crosstalk", 1.0, r"unknown key 'slm.kwargs.crosstalk'; SimulatedBenchSLM accepts: \["),
    ("slm.kwargs.crosstalk_sigma_px", "wide", r"key 'slm.kwargs.crosstalk_sigma_px': expected a number, got 'wide'"),
    ("slm.kwargs.crosstalk_sigma_px", -1, r"key 'slm.kwargs': crosstalk_sigma_px = -1.0 is outside the allowed range"),
    ("slm.kwargs.system", "x", r"key 'slm.kwargs.system': set by the bench"),
    ("slm.driver", "hologram9000", r"key 'slm.driver': unknown driver 'hologram9000'; built-in: \['simulated'\]"),
    ("slm.bitdepth", 6, r"key 'slm.bitdepth': the system's masks need 8 bits, the SLM has 6"),
    ("camera.driver", "nowhere.module:Cam", r"key 'camera.driver': cannot import 'nowhere.module'"),
    ("camera.driver", "drivers.sim_camera:Nope", r"key 'camera.driver': 'drivers.sim_camera' has no class 'Nope'"),
    ("camera.exposure_s", 5, r"key 'camera': exposure_s = 5 is outside the allowed range \[1e-05, 1\] s"),
    ("camera.kwargs.sensor", {"read_noise_e": "loud"}, r"key 'camera.kwargs': .*'sensor.read_noise_e': expected a"),
    (
        "camera.kwargs.light_source",
        "COM3",
        r"key 'camera.kwargs': light_source = 'COM3' must be a 'sim-shutter://' URL",
    ),
    ("serial.shutter.kwargs.power_mw", 30, r"key 'serial.shutter.kwargs': power_mw = 30 is outside .* \[0, 5\] mW"),
    ("serial.shutter.baudrate", "fast", r"key 'serial.shutter.baudrate': expected an integer, got 'fast'"),
    ("serial.trigger.kwargs.port", "COM9", r"unknown key 'serial.trigger.kwargs.port'"),
    ("serial.trigger.timeout_s", 0, r"key 'serial.trigger': timeout_s = 0 is outside the allowed range \[0.01, 10\] s"),
    ("system", "missing.yaml", r"key 'system': file .*missing.yaml does not exist"),
]


@pytest.mark.parametrize(("key", "value", "message"), CASES, ids=[c[0] + "=" + repr(c[1]) for c in CASES])
def test_malformed_bench_names_file_and_key(tmp_path, key, value, message):
    path = write_bench(tmp_path, _set(sim_bench_document(), key, value))
    with pytest.raises(ConfigError, match=message) as info:
        load_bench(path)
    assert str(path) in str(info.value)


def test_roi_is_checked_against_the_declared_panel(tmp_path):
    doc = sim_bench_document()
    doc["slm"].update(shape_px=[100, 100], roi_offset_px=[50, 0])
    with pytest.raises(ConfigError, match=r"key .slm.roi_offset_px.: .*\(rows\) = 50: .* offsets in \[-42, 42\]"):
        load_bench(write_bench(tmp_path, doc))


def test_external_classes_are_checked_against_their_signature(tmp_path):
    doc = sim_bench_document()
    doc["slm"] = {"driver": "slmsuite.hardware.slms.simulated:SimulatedSLM", "kwargs": {"resolution": [32, 32]}}
    assert load_bench(write_bench(tmp_path, doc)).slm.kwargs == {"resolution": [32, 32]}
    doc["slm"]["kwargs"]["colour"] = "red"
    with pytest.raises(ConfigError, match=r"unknown key 'slm.kwargs.colour'; SimulatedSLM accepts: \[.*'bitdepth'"):
        load_bench(write_bench(tmp_path, doc))


# --- property-based: random malformed documents ----------------------------------------------

BASE = sim_bench_document()


def _nodes(node, path=()):
    """(path, value) of every node below the document root."""
    for key, value in node.items():
        yield (*path, key), value
        if isinstance(value, dict):
            yield from _nodes(value, (*path, key))


MAPPINGS = [()] + [p for p, v in _nodes(BASE) if isinstance(v, dict)]
LEAVES = [p for p, v in _nodes(BASE) if not isinstance(v, dict)]
OUT_OF_RANGE = {
    ("slm", "kwargs", "settle_time_s"): st.floats(10.01, 1e9),
    ("slm", "kwargs", "crosstalk_sigma_px"): st.floats(-1e9, -1e-3),
    ("slm", "kwargs", "phase_range_rad"): st.floats(6.3, 1e9) | st.floats(-1e9, 0),
    ("camera", "exposure_s"): st.floats(1.001, 1e9) | st.floats(-1e9, 9.9e-6),
    ("camera", "kwargs", "reference_exposure_s"): st.floats(-1e9, 0),
    ("serial", "shutter", "kwargs", "power_mw"): st.floats(5.001, 1e9) | st.floats(-1e9, -1e-3),
    ("serial", "shutter", "timeout_s"): st.floats(10.01, 1e9),
    ("serial", "shutter", "retries"): st.integers(11, 10**9) | st.integers(-(10**9), -1),
    ("serial", "trigger", "kwargs", "period_us"): st.integers(-(10**9), 9),
    ("serial", "trigger", "kwargs", "count"): st.integers(-(10**9), -1),
}
NAMES = st.text(st.characters(categories=("Ll", "Lu", "Nd"), max_codepoint=127), min_size=1, max_size=12)


@st.composite
def malformed(draw):
    """A document with one fault and the path of the key it must be reported under."""
    doc = copy.deepcopy(BASE)
    kind = draw(st.sampled_from(["unknown", "type", "range"]))
    if kind == "unknown":
        path = draw(st.sampled_from(MAPPINGS))
        node = doc
        for key in path:
            node = node[key]
        name = draw(NAMES.filter(lambda k: k not in node))
        if path == ("serial",):  # a new serial device needs its own fault: an unknown key inside it
            node[name] = {"driver": "shutter", "port": "sim-shutter://", "bogus": 1}
            return doc, (*path, name, "bogus")
        node[name] = draw(st.integers() | NAMES)
        return doc, (*path, name)
    if kind == "type":
        path = draw(st.sampled_from(LEAVES))
        value = draw(st.dictionaries(NAMES, st.integers(), min_size=1, max_size=2))
    else:
        path = draw(st.sampled_from(sorted(OUT_OF_RANGE)))
        value = draw(OUT_OF_RANGE[path])
    node = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return doc, path


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=malformed())
def test_random_malformed_documents_name_the_key(tmp_path, case):
    doc, path = case
    bench = write_bench(tmp_path, doc)
    with pytest.raises(ConfigError) as info:
        load_bench(bench)
    message = str(info.value)
    assert str(bench) in message
    for part in path:
        assert str(part) in message, (path, message)


GARBAGE = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | NAMES,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(NAMES | st.integers(), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(section=st.sampled_from(["slm", "camera", "serial", "seed", "system", "extra"]), garbage=GARBAGE)
def test_garbage_anywhere_is_a_config_error_never_a_crash(tmp_path, section, garbage):
    doc = copy.deepcopy(BASE)
    doc[section] = garbage
    bench = write_bench(tmp_path, doc)
    try:
        load_bench(bench)
    except ConfigError as exc:
        assert str(bench) in str(exc)


def test_yaml_that_is_not_a_mapping(tmp_path):
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(["slm", "camera"]))
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_bench(path)
