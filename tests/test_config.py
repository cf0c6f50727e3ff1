"""Strict config loading: errors name the file and the key."""

import pytest

from hil.common.config import ConfigError, load, to_mapping
from hil.physics.system import DEFAULT_SYSTEM, SystemConfig, load_system


def test_default_system_loads_and_round_trips(tmp_path):
    system = load_system()
    assert system.geometry().detector_shape == (128, 128)
    import yaml

    path = tmp_path / "copy.yaml"
    path.write_text(yaml.safe_dump(to_mapping(system)))
    assert load(SystemConfig, path) == system


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("optics: {n: 64, padfactor: 2}", r"unknown key 'optics.padfactor'"),
        ("optics: {n: sixty}", r"key 'optics.n': expected an integer, got 'sixty'"),
        ("slm: {bitdepth: 40}", r"key 'slm': SLMSpec.bitdepth must be in \[1, 16\]"),
        ("camera: {photons_per_pixel: -3}", r"key 'camera': CameraSpec.photons_per_pixel must be > 0"),
        ("optics: {propagator: laser}", r"key 'optics.propagator': must be one of"),
        ("data: {sources: skimage}", r"key 'data.sources': expected a list"),
        ("- just\n- a list", r"top level must be a mapping"),
        ("optics: {n: [1", r"not valid YAML"),
        ("optics: {n: 32}", r"data.n \(64\) must equal optics.n \(32\)"),
    ],
)
def test_malformed_system_configs_are_named(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        load_system(path)
    assert str(path) in str(info.value)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_system(tmp_path / "absent.yaml")
    assert DEFAULT_SYSTEM.is_file()
