"""Bench configuration (``configs/bench_*.yaml``): which devices, with which settings and limits.

Each device is a built-in name or an import path ``package.module:ClassName`` plus ``kwargs``
for its constructor, so a lab plugs in any slmsuite-compatible class without touching the code.
The bench fills three constructor parameters itself when a class declares them and ``kwargs``
does not: ``slm`` (the SLM object, for cameras such as slmsuite's simulated one), ``system``
(the shared :class:`~hil.physics.system.SystemConfig`) and ``seed``.

Validation happens at load time, before any device is touched: unknown keys, wrong types and
out-of-range values raise :class:`~hil.common.config.ConfigError` naming the file and the dotted key.
``kwargs`` are checked against the constructor's signature (following ``**kwargs`` into base
classes) and, for built-in drivers, against their ``Settings`` dataclass (types and ranges). Keys a
constructor reads out of its ``**kwargs`` by name (``kwargs.pop("key")``, ``kwargs["key"]``) count as
named; a driver that uses its ``**kwargs`` in any other way (stores them, passes them elsewhere)
receives keys no signature names, and the keys a signature does name are still type-checked.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import importlib.util
import inspect
import textwrap
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drivers.errors import LimitError
from drivers.limits import check_limits_pair, check_range
from drivers.slm import roi_slices
from hil.common.config import ConfigError, from_mapping, load_yaml
from hil.common.provenance import REPO_ROOT
from hil.physics.bench_model import BenchModel
from hil.physics.registration import load_registration
from hil.physics.slm_field import load_slm_field
from hil.physics.system import SystemConfig, load_system

DEFAULT_BENCH = REPO_ROOT / "configs" / "bench_sim.yaml"  # realistic, calibrated; the ideal twin: bench_ideal.yaml
BUILTIN_DRIVERS: dict[str, dict[str, str]] = {
    "slm": {"simulated": "drivers.sim_slm:SimulatedBenchSLM"},
    "camera": {
        "simulated": "drivers.sim_camera:SimulatedBenchCamera",
        "opencv": "drivers.opencv_camera:OpenCVCamera",
    },
    "serial": {"shutter": "drivers.shutter:LaserShutter", "trigger": "drivers.trigger:TriggerBox"},
}
INJECTED = ("slm", "system", "seed")
SERIAL_OPTIONS = ("port", "baudrate", "timeout_s", "retries")


def _check_driver(driver: str) -> None:
    if ":" in driver:
        module, _, name = driver.partition(":")
        if not module or not name.isidentifier():
            raise ValueError(f"driver {driver!r} must be a built-in name or 'package.module:ClassName'")


@dataclass(frozen=True)
class SLMSection:
    """The SLM: driver, constructor kwargs, ROI placement, expected panel, settle behaviour, and
    whether masks get the SLM's stored wavefront correction (``phase_correct``), and the period of the beam
    dump grating shown outside the ROI (``dump_period_px``, SLM pixels; 0 = flat).

    ``shape_px`` (height, width) and ``bitdepth``, when given, are what the panel must report
    (checked on connecting); ``shape_px`` also lets the ROI be checked at load time.
    """

    driver: str = "simulated"
    kwargs: dict[str, Any] = field(default_factory=dict)
    roi_offset_px: tuple[int, int] = (0, 0)
    settle: bool = True
    phase_correct: bool = False
    dump_period_px: int = 0
    shape_px: tuple[int, int] | None = None
    bitdepth: int | None = None

    def __post_init__(self) -> None:
        _check_driver(self.driver)
        if self.shape_px is not None and min(self.shape_px) < 1:
            raise ValueError(f"shape_px must be positive (height, width), got {list(self.shape_px)}")
        if self.bitdepth is not None:
            check_range("bitdepth", self.bitdepth, (1, 16))
        if self.dump_period_px != 0:
            check_range("dump_period_px", self.dump_period_px, (2, 1024))


@dataclass(frozen=True)
class CameraSection:
    """The camera: driver, constructor kwargs, exposure and its allowed range (seconds)."""

    driver: str = "simulated"
    kwargs: dict[str, Any] = field(default_factory=dict)
    exposure_s: float = 0.01
    exposure_limits_s: tuple[float, float] = (1e-6, 10.0)

    def __post_init__(self) -> None:
        _check_driver(self.driver)
        check_limits_pair("exposure_limits_s", self.exposure_limits_s)
        if self.exposure_limits_s[0] <= 0:
            raise LimitError(f"exposure_limits_s must be > 0, got {list(self.exposure_limits_s)}")
        check_range("exposure_s", self.exposure_s, self.exposure_limits_s, "s")


@dataclass(frozen=True)
class SerialSection:
    """A serial accessory: driver, port (device path or pyserial URL), link settings, kwargs."""

    driver: str
    port: str
    baudrate: int = 115200
    timeout_s: float = 0.5
    retries: int = 2
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_driver(self.driver)
        if not self.port:
            raise ValueError("port must not be empty")
        check_range("baudrate", self.baudrate, (50, 4_000_000))
        check_range("timeout_s", self.timeout_s, (0.01, 10.0), "s")
        check_range("retries", self.retries, (0, 10))


@dataclass(frozen=True)
class CalibrationSection:
    """Calibration files of this bench, relative to the bench file; None: not calibrated.

    ``registration``: camera pixels -> model grid (``hil calibrate geometry``); ``field``: the SLM-plane
    illumination amplitude and aberration (``hil calibrate field``). Radiometry and the SLM response live
    in the system file (``--update-system``).
    """

    registration: str | None = None
    field: str | None = None


@dataclass(frozen=True)
class BenchConfig:
    """A whole bench. ``system`` is the shared physical system file, relative to the bench file."""

    system: str = "system.yaml"
    seed: int = 0
    slm: SLMSection = field(default_factory=SLMSection)
    camera: CameraSection = field(default_factory=CameraSection)
    serial: dict[str, SerialSection] = field(default_factory=dict)
    calibration: CalibrationSection = field(default_factory=CalibrationSection)


@dataclass(frozen=True)
class DeviceSpec:
    """A device ready to construct: its class and validated keyword arguments."""

    name: str
    driver: str
    cls: type | None  # None: a plugin driver left unimported by a dry run
    kwargs: dict[str, Any]

    def parameters(self) -> set[str]:
        if self.cls is None:
            raise ConfigError(f"{self.name}: driver {self.driver!r} was not imported (dry run)")
        return set(_signature_parameters(self.cls))


@dataclass(frozen=True)
class BenchSpec:
    """A loaded bench: the config, its source, the shared system, and the resolved devices."""

    config: BenchConfig
    path: Path | None
    system: SystemConfig
    slm: DeviceSpec
    camera: DeviceSpec
    serial: dict[str, DeviceSpec]
    calibration_files: dict[str, Path] = field(default_factory=dict)  # "registration" / "field" -> file
    system_file: Path | None = None

    def calibration_summary(self) -> str:
        """One line naming what this bench's model is built from: the system file (its SLM response) and
        the calibration files the config names."""
        slm = self.system.slm
        response = f"measured SLM response, {len(slm.gamma)} levels" if slm.gamma else "nominal linear SLM response"
        files = "; ".join(f"{k} {v}" for k, v in self.calibration_files.items())
        return f"system {self.system_file} ({response}); " + (files or "no registration or field file (nominal)")

    def model(self) -> BenchModel:
        """The calibrated model of this bench: the system plus the calibration files the config names."""
        files = self.calibration_files
        registration = load_registration(files["registration"]) if "registration" in files else None
        slm_field = load_slm_field(files["field"]).complex if "field" in files else None
        try:
            return BenchModel(self.system, registration, slm_field)
        except ValueError as exc:
            raise ConfigError(f"{self.path}: key 'calibration': {exc}") from None


def resolve_driver(kind: str, driver: str, where: str, key: str) -> type:
    """The class for a built-in name or ``package.module:ClassName``; errors name ``key``."""
    target = BUILTIN_DRIVERS[kind].get(driver, driver)
    if ":" not in target:
        raise ConfigError(
            f"{where}: key '{key}': unknown driver {driver!r}; built-in: {sorted(BUILTIN_DRIVERS[kind])} "
            "or an import path 'package.module:ClassName'"
        )
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"{where}: key '{key}': cannot import {module_name!r}: {exc}") from None
    cls = getattr(module, class_name, None)
    if not isinstance(cls, type):
        raise ConfigError(f"{where}: key '{key}': {module_name!r} has no class {class_name!r}")
    return cls


_PLAIN = (bool, int, float, str, type(None))


def _init_parameters(klass: type) -> list[inspect.Parameter] | None:
    """Parameters of ``klass.__init__`` after ``self``; None if it has none of its own or hides them."""
    init = klass.__dict__.get("__init__")
    if init is None:
        return None
    try:
        return list(inspect.signature(init).parameters.values())[1:]
    except (TypeError, ValueError):  # e.g. a compiled extension class
        return [inspect.Parameter("kwargs", inspect.Parameter.VAR_KEYWORD)]


def _signature_parameters(cls: type) -> dict[str, tuple[Any, Any]]:
    """Keyword parameters of ``cls`` (name -> (type hint, default)), following ``**kwargs`` up the MRO."""
    out: dict[str, tuple[Any, Any]] = {}
    for klass in cls.__mro__:
        params = _init_parameters(klass)
        if params is None:
            continue
        try:
            hints = typing.get_type_hints(klass.__dict__["__init__"])
        except Exception:
            hints = {}
        for p in params:
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in out:
                out[p.name] = (_plain_type(hints.get(p.name, Any)), p.default)
            elif p.kind == p.VAR_KEYWORD:
                for name in _var_keyword_use(klass.__dict__["__init__"], p.name)[0]:
                    out.setdefault(name, (Any, None))
        settings = klass.__dict__.get("Settings")
        if dataclasses.is_dataclass(settings):
            settings_hints = typing.get_type_hints(settings)
            for f in dataclasses.fields(settings):
                out.setdefault(f.name, (_plain_type(settings_hints[f.name]), None))
        if not any(p.kind == p.VAR_KEYWORD for p in params) or klass is object:
            break
    return out


def _plain_type(tp: Any) -> Any:
    """``tp`` if the config loader can check it (scalars, tuples, dicts, Literal, unions), else Any."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp in _PLAIN:
        return tp
    if origin is typing.Literal:
        return tp
    if origin in (typing.Union, types.UnionType, tuple, dict) and args:
        return tp if all(a is Ellipsis or _plain_type(a) is a for a in args) else Any
    return Any


def _check_kwargs(cls: type, kwargs: dict[str, Any], where: str, key: str, excluded: tuple[str, ...]) -> dict[str, Any]:
    """Validate ``kwargs`` against the constructor of ``cls`` (and its ``Settings``); return them converted."""
    params = {n: v for n, v in _signature_parameters(cls).items() if n not in excluded and n not in ("slm", "system")}
    open_ended = _accepts_anything(cls)
    known = {k: v for k, v in kwargs.items() if k in params}
    unknown = sorted(str(k) for k in set(kwargs) - set(params))
    if unknown and not open_ended:
        dotted = ", ".join(f"'{key}.{k}'" for k in unknown)
        raise ConfigError(f"{where}: unknown key {dotted}; {cls.__name__} accepts: {sorted(params)}")
    shape = dataclasses.make_dataclass(
        f"{cls.__name__}Kwargs", [(n, params[n][0], field(default=None)) for n in known], frozen=True
    )
    converted = from_mapping(shape, known, where, prefix=key)
    out = {**kwargs, **{n: getattr(converted, n) for n in known}}
    settings = getattr(cls, "Settings", None)
    if dataclasses.is_dataclass(settings):
        names = {f.name for f in dataclasses.fields(settings)}
        from_mapping(settings, {k: v for k, v in out.items() if k in names}, where, prefix=key)
    return out


def _accepts_anything(cls: type) -> bool:
    """True if a constructor's ``**kwargs`` may consume keys we cannot list (stored whole, passed
    to something other than the base constructor): then keys no signature names pass, and the
    named ones are still type-checked. A ``Settings`` dataclass or a closed signature ends the chain."""
    for klass in cls.__mro__:
        params = _init_parameters(klass)
        if params is None:
            continue
        var = next((p.name for p in params if p.kind == p.VAR_KEYWORD), None)
        if var is None or klass.__dict__.get("Settings") is not None:
            return False
        if _var_keyword_use(klass.__dict__["__init__"], var)[1]:
            return True
    return False


def _var_keyword_use(init: Any, var: str) -> tuple[set[str], bool]:
    """Keys ``init`` reads from its ``**var`` by name (``var.get("k")``, ``var.pop("k")``,
    ``var["k"]``, ``var.setdefault("k", ...)``) and whether it uses ``var`` in any other way than
    that and forwarding ``**var`` to an ``__init__`` (True also when the source is unavailable)."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(init)))
    except (OSError, TypeError, SyntaxError):
        return set(), True
    understood, names = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            target = node.func.value
            if node.func.attr == "__init__":
                understood |= {id(k.value) for k in node.keywords if k.arg is None and isinstance(k.value, ast.Name)}
            elif isinstance(target, ast.Name) and target.id == var and node.func.attr in ("get", "pop", "setdefault"):
                if node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                    understood.add(id(target))
                    names.add(node.args[0].value)
        elif isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id == var:
            if isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str):
                understood.add(id(node.value))
                names.add(node.slice.value)
    uses = [n for n in ast.walk(tree) if isinstance(n, ast.Name) and n.id == var]
    return names, not all(id(n) in understood for n in uses)


def _find_plugin(driver: str, where: str, key: str) -> None:
    """Check that a plugin driver's module exists without importing it (its parent packages are)."""
    module_name = driver.partition(":")[0]
    try:
        found = importlib.util.find_spec(module_name)
    except (ImportError, ValueError) as exc:
        raise ConfigError(f"{where}: key '{key}': cannot find {module_name!r}: {exc}") from None
    if found is None:
        raise ConfigError(f"{where}: key '{key}': cannot find module {module_name!r}")


def _device(
    kind: str, name: str, driver: str, kwargs: dict[str, Any], where: str, key: str, import_plugins: bool = True
) -> DeviceSpec:
    if not import_plugins and driver not in BUILTIN_DRIVERS[kind] and ":" in driver:
        _find_plugin(driver, where, f"{key}.driver")
        return DeviceSpec(name, driver, None, dict(kwargs))
    cls = resolve_driver(kind, driver, where, f"{key}.driver")
    excluded = SERIAL_OPTIONS if kind == "serial" else ()
    clash = sorted(set(kwargs) & {"slm", "system"})
    if clash:
        raise ConfigError(f"{where}: key '{key}.kwargs.{clash[0]}': set by the bench, not in kwargs")
    return DeviceSpec(name, driver, cls, _check_kwargs(cls, kwargs, where, f"{key}.kwargs", excluded))


def bench_from_mapping(
    data: dict[str, Any], where: str = "<bench config>", base: Path | None = None, import_plugins: bool = True
) -> BenchSpec:
    """Validate a parsed bench document and resolve its devices (no device is touched).

    ``import_plugins=False`` (dry runs) leaves ``package.module:Class`` drivers unimported: their
    module must exist, their ``kwargs`` are checked only when the bench connects."""
    config = from_mapping(BenchConfig, data, where)
    system_path = Path(config.system)
    if not system_path.is_absolute():
        system_path = (base or Path.cwd()) / system_path
    if not system_path.is_file():
        raise ConfigError(f"{where}: key 'system': file {system_path} does not exist")
    system = load_system(system_path)
    calibration_files = {}
    for key in ("registration", "field"):
        name = getattr(config.calibration, key)
        if name is not None:
            path = Path(name) if Path(name).is_absolute() else (base or Path.cwd()) / name
            if not path.is_file():
                raise ConfigError(f"{where}: key 'calibration.{key}': file {path} does not exist")
            calibration_files[key] = path
    slm = config.slm
    if slm.bitdepth is not None and system.slm.bitdepth > slm.bitdepth:
        raise ConfigError(
            f"{where}: key 'slm.bitdepth': the system's masks need {system.slm.bitdepth} bits, "
            f"the SLM has {slm.bitdepth}; allowed system bit depth [1, {slm.bitdepth}]"
        )
    if slm.shape_px is not None:
        side = system.optics.n * system.slm.macro_pixel
        try:
            roi_slices(slm.shape_px, (side, side), slm.roi_offset_px)
        except LimitError as exc:
            raise ConfigError(f"{where}: key 'slm.roi_offset_px': {exc}") from None
    devices = {
        "slm": _device("slm", "slm", slm.driver, slm.kwargs, where, "slm", import_plugins),
        "camera": _device(
            "camera", "camera", config.camera.driver, config.camera.kwargs, where, "camera", import_plugins
        ),
    }
    serial = {}
    for name, section in config.serial.items():
        serial[name] = _device("serial", name, section.driver, section.kwargs, where, f"serial.{name}", import_plugins)
    return BenchSpec(config, None, system, devices["slm"], devices["camera"], serial, calibration_files, system_path)


def load_bench(path: str | Path = DEFAULT_BENCH, import_plugins: bool = True) -> BenchSpec:
    """Load and validate a bench config file; relative paths in it are relative to the file.

    ``import_plugins=False`` is for dry runs: plugin modules are found but not imported."""
    path = Path(path)
    spec = bench_from_mapping(
        load_yaml(path), where=str(path), base=path.resolve().parent, import_plugins=import_plugins
    )
    return dataclasses.replace(spec, path=path)
