"""Model bundle: what deploy and reconstruct read (a folder; nothing in it is ever executed).

Layout::

    bundle.json          format, role, train and system configs, seed, provenance (versions,
                         git commit), test metrics, SHA-256 of the two tensor files, and
                         ``manifest_sha256``: SHA-256 of the rest of bundle.json (canonical JSON)
    masks.safetensors    mask_rad (L, n, n) float32 radians; slm_gray (L, k*n, k*n) int32, the
                         gray image slmsuite shows for the configured SLM (students only)
    decoder.safetensors  the decoder's weights and buffers

Loading parses JSON and safetensors only (no pickle), checks every hash, shape and the gray
image against the configured SLM, and rejects anything else with :class:`BundleError`. Sizes are
checked before anything is allocated: bundle.json's size and nesting are bounded, and the decoder
that its config describes is first built without memory (torch's ``meta`` device) and compared,
tensor by tensor, with the shapes stored in decoder.safetensors' header, so an edited config
cannot make loading allocate more than the weights file holds.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from hil.common.config import ConfigError, from_mapping, json_depth, to_mapping
from hil.common.provenance import REPO_ROOT, record
from hil.learning.coded_system import CodedSystem
from hil.learning.train_config import TrainConfig
from hil.physics.system import SystemConfig

FORMAT = "hil-model-bundle"
FORMAT_VERSION = 1
MANIFEST, MASKS, DECODER = "bundle.json", "masks.safetensors", "decoder.safetensors"
MAX_MANIFEST_BYTES = 16 * 1024 * 1024
MAX_MANIFEST_DEPTH = 32
# largest decoder a bundle may describe (about 100x the project's models): the structure is built on
# the meta device before the weights are compared, and building millions of modules would hang
MAX_DECODER = {"stages": 64, "channels": 1024, "hidden_layers": 16, "refine_steps": 64, "warm_iterations": 10_000}
MAX_MASKS = 64
# the SLM's response as calibration measures it (hil calibrate slm-response; crosstalk belongs to the response)
CALIBRATED_KEYS = frozenset({"slm.gamma", "slm.phase_range_rad", "slm.crosstalk_sigma_px"})
SHIPPED_MODELS = REPO_ROOT / "models"
FIRST_SHIPPED = "student"  # the project's main model, preferred when several fit


class BundleError(ValueError):
    """A bundle that is missing, corrupt, or does not match its own config or the expected system."""


@dataclass
class Bundle:
    system: CodedSystem
    train_config: TrainConfig
    system_config: SystemConfig
    mask_rad: torch.Tensor
    slm_gray: torch.Tensor | None
    manifest: dict[str, Any]


def compatibility_problems(bundle_system: SystemConfig, system: SystemConfig) -> list[str]:
    """How ``system`` (a bench's) differs from the one a bundle was made for, one ``part.key`` each.

    What calibration measures is not a difference: the SLM's response (:data:`CALIBRATED_KEYS`: the
    mask is a phase design in radians, shown through the bench's measured response) and the camera's
    radiometry (every camera key but ``binning``, which changes the detector). ``data`` (training
    objects) never matters. Values are shown only for these short keys, never a whole LUT.
    """
    problems = []
    for part in ("optics", "slm", "camera"):
        ours, theirs = getattr(system, part), getattr(bundle_system, part)
        for f in dataclasses.fields(ours):
            key = f"{part}.{f.name}"
            if key in CALIBRATED_KEYS or (part == "camera" and f.name != "binning"):
                continue
            if getattr(ours, f.name) != getattr(theirs, f.name):
                problems.append(f"{key} is {getattr(theirs, f.name)!r} in the bundle, {getattr(ours, f.name)!r} here")
    return problems


def default_bundle(system: SystemConfig, models: Path = SHIPPED_MODELS) -> Path:
    """The shipped student bundle made for ``system`` (a bench's): the first folder of ``models`` whose
    ``bundle.json`` is a student with no :func:`compatibility_problems`, ``student`` first, then by name.

    Raises :class:`BundleError` naming the system's geometry when none fits."""
    folders = sorted((m.parent for m in Path(models).glob(f"*/{MANIFEST}")), key=lambda p: (p.name != FIRST_SHIPPED, p))
    for folder in folders:
        manifest = _read_manifest(folder / MANIFEST)
        if manifest.get("role") == "student" and not compatibility_problems(_made_for(manifest, folder), system):
            return folder
    optics, slm = system.optics, system.slm
    raise BundleError(
        f"no student bundle in {models} is made for this system (optics.n {optics.n}, pad_factor {optics.pad_factor}, "
        f"propagator {optics.propagator}, slm.macro_pixel {slm.macro_pixel}, slm.bitdepth {slm.bitdepth}); "
        "give --bundle, or train one for it (hil train)"
    )


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def manifest_sha256(manifest: dict[str, Any]) -> str:
    """SHA-256 of ``manifest`` without its own ``manifest_sha256`` key, as canonical JSON."""
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=float, allow_nan=True)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def slm_gray_image(system: CodedSystem) -> torch.Tensor:
    """Gray levels (int32, SLM grid) of the system's masks on its SLM."""
    if system.slm is None:
        raise BundleError("only an SLM-constrained (student) system has a gray image")
    return system.slm.phase_to_gray(system.slm.upsample(system.mask_rad.detach().cpu())).to(torch.int32)


def save_bundle(
    path: str | Path,
    system: CodedSystem,
    train_config: TrainConfig,
    system_config: SystemConfig,
    metrics: dict[str, Any],
    **extra: Any,
) -> Path:
    """Write ``system`` as a bundle folder at ``path``; ``extra`` goes into the manifest."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tensors = {"mask_rad": system.mask_rad.detach().cpu().float().contiguous()}
    if system.slm is not None:
        tensors["slm_gray"] = slm_gray_image(system).contiguous()
    save_file(tensors, path / MASKS, metadata={"format": FORMAT, "role": train_config.role})
    decoder = {k: v.detach().cpu().contiguous() for k, v in system.decoder.state_dict().items()}
    save_file(decoder, path / DECODER, metadata={"format": FORMAT, "role": train_config.role})
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "role": train_config.role,
        "train_config": to_mapping(train_config),
        "system_config": to_mapping(system_config),
        "provenance": record(to_mapping(train_config), seed=train_config.seed),
        "metrics": metrics,
        "files": {MASKS: _sha256(path / MASKS), DECODER: _sha256(path / DECODER)},
        **extra,
    }
    manifest = json.loads(json.dumps(manifest, default=float))  # the form it is read back in
    manifest["manifest_sha256"] = manifest_sha256(manifest)
    (path / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return path


def _verified(path: Path, name: str, expected_sha: Any) -> Path:
    file = path / name
    if not file.is_file():
        raise BundleError(f"{path}: missing {name}")
    if _sha256(file) != expected_sha:
        raise BundleError(f"{file}: SHA-256 does not match bundle.json (corrupt or modified)")
    return file


def _stored_shapes(file: Path) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape from a safetensors header (nothing is loaded)."""
    try:
        with safe_open(file, framework="pt") as handle:
            return {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}
    except (SafetensorError, OSError) as exc:
        raise BundleError(f"{file}: not a readable safetensors file: {exc}") from None


def _load_tensors(file: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(file)
    except (SafetensorError, OSError) as exc:
        raise BundleError(f"{file}: not a readable safetensors file: {exc}") from None


def _check_sizes(manifest_path: Path, train_config: TrainConfig) -> None:
    """Decoder and mask counts within :data:`MAX_DECODER` / :data:`MAX_MASKS`, before anything is built."""
    decoder = train_config.decoder
    for key, limit in MAX_DECODER.items():
        if getattr(decoder, key) > limit:
            raise BundleError(
                f"{manifest_path}: train_config.decoder.{key} = {getattr(decoder, key)} exceeds the limit {limit}"
            )
    if train_config.masks > MAX_MASKS:
        raise BundleError(f"{manifest_path}: train_config.masks = {train_config.masks} exceeds the limit {MAX_MASKS}")


def _read_manifest(manifest_path: Path) -> dict[str, Any]:
    """bundle.json: bounded size and nesting, a JSON object whose ``manifest_sha256`` matches."""
    size = manifest_path.stat().st_size
    if size > MAX_MANIFEST_BYTES:
        raise BundleError(f"{manifest_path}: {size} bytes, more than the {MAX_MANIFEST_BYTES} allowed")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise BundleError(f"{manifest_path}: not valid JSON ({type(exc).__name__})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleError(f"{manifest_path}: format is not {FORMAT!r}")
    if json_depth(manifest) > MAX_MANIFEST_DEPTH:
        raise BundleError(f"{manifest_path}: nested more than {MAX_MANIFEST_DEPTH} levels deep")
    if manifest.get("manifest_sha256") != manifest_sha256(manifest):
        raise BundleError(f"{manifest_path}: manifest_sha256 is missing or does not match its content (modified?)")
    return manifest


def _made_for(manifest: dict[str, Any], path: Path) -> SystemConfig:
    """The system config a bundle's manifest records (``path``: the bundle folder)."""
    try:
        return from_mapping(SystemConfig, manifest.get("system_config"), where=f"{path / MANIFEST}:system_config")
    except ConfigError as exc:
        raise BundleError(str(exc)) from None


def load_bundle(path: str | Path, expect_system: SystemConfig | None = None) -> Bundle:
    """Read and verify a bundle; ``expect_system`` (the bench's config) must match the bundle's system up to
    what calibration measures (:func:`compatibility_problems`)."""
    path = Path(path)
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise BundleError(f"{path}: not a model bundle (no {MANIFEST})")
    manifest = _read_manifest(manifest_path)
    if manifest.get("format_version") != FORMAT_VERSION:
        raise BundleError(f"{manifest_path}: format_version {manifest.get('format_version')} != {FORMAT_VERSION}")
    files = manifest.get("files")
    if not isinstance(files, dict) or set(files) != {MASKS, DECODER}:
        raise BundleError(f"{manifest_path}: 'files' must list {MASKS} and {DECODER} with their SHA-256")
    try:
        train_config = from_mapping(TrainConfig, manifest.get("train_config"), where=f"{manifest_path}:train_config")
    except ConfigError as exc:
        raise BundleError(str(exc)) from None
    system_config = _made_for(manifest, path)
    if expect_system is not None:
        problems = compatibility_problems(system_config, expect_system)
        if problems:
            raise BundleError(f"{path}: made for another system than this one: {'; '.join(problems)}")
    _check_sizes(manifest_path, train_config)
    masks_file = _verified(path, MASKS, files[MASKS])
    decoder_file = _verified(path, DECODER, files[DECODER])

    def build() -> CodedSystem:
        slm = system_config.slm if train_config.role == "student" else None
        return CodedSystem(
            system_config.geometry(), train_config.masks, train_config.decoder, slm=slm, seed=train_config.seed
        )

    with torch.device("meta"):  # sizes first: nothing allocated
        skeleton = build()
    expected = {k: tuple(v.shape) for k, v in skeleton.decoder.state_dict().items()}
    stored = _stored_shapes(decoder_file)
    if expected != stored:
        wanted, held = (sum(math.prod(s) for s in d.values()) for d in (expected, stored))
        raise BundleError(
            f"{decoder_file}: holds {held} weights in {len(stored)} tensors, but the decoder that bundle.json "
            f"configures needs {wanted} in {len(expected)}: the config and the weights do not belong together"
        )
    masks = _load_tensors(masks_file)
    decoder_state = _load_tensors(decoder_file)
    system = build()
    mask_rad = masks.get("mask_rad")
    if mask_rad is None or mask_rad.dtype != torch.float32 or mask_rad.shape != system.mask_rad.shape:
        got = None if mask_rad is None else (tuple(mask_rad.shape), mask_rad.dtype)
        raise BundleError(f"{path / MASKS}: mask_rad must be float32 {tuple(system.mask_rad.shape)}, got {got}")
    with torch.no_grad():
        system.mask_rad.copy_(mask_rad)
    slm_gray = masks.get("slm_gray")
    if system.slm is not None:
        if slm_gray is None or not torch.equal(slm_gray, slm_gray_image(system)):
            raise BundleError(f"{path / MASKS}: slm_gray is missing or does not match mask_rad on the configured SLM")
    elif slm_gray is not None:
        raise BundleError(f"{path / MASKS}: a teacher bundle has no slm_gray")
    try:
        system.decoder.load_state_dict(decoder_state, strict=True)
    except RuntimeError as exc:
        raise BundleError(f"{path / DECODER}: weights do not match the configured decoder: {exc}") from None
    return Bundle(system.eval(), train_config, system_config, mask_rad, slm_gray, manifest)
