"""What the calibrated model buys on the fixture benches, with every calibration set to its hidden value.

For ``configs/bench_fixture.yaml`` and ``configs/bench_fixture_varied.yaml`` (copied into a scratch folder),
:func:`write_hidden_calibration` writes what a perfect calibration would: the radiometry, the phase response
(``gamma``) and the crosstalk into the system file, the camera registration and the SLM-plane field (the block
mean over each macro-pixel of the beam amplitude times the aberration) as the files the bench config's
``calibration`` section names. Then, as ``hil capture`` / ``hil reconstruct`` / ``hil deploy --verify`` do:

* four samples (cells, phase screen, resolution target, natural image) are captured through one random mask
  (4 frames each); every capture records the bench's calibrated model and is reconstructed by RAAR
  (200 iterations, range prior) on the camera's own pixels;
* a sample-free capture of the mask is compared with the model's prediction (``calibration.verify``);

each through the calibrated model and through models that lack one part: no SLM-plane field, the nominal
phase response (no gamma, no crosstalk), a registration 4 degrees and 1.5 model pixels off; and, as the
ideal, frames the calibrated model itself predicts at the same photons (shot noise only), reconstructed
through it. Rows: phase PSNR
per sample, the correlation of the frame with the model's prediction of the true sample (consistency on
camera pixels), the ratio of the normalised frame's sum to that prediction's, and the verification's
correlation and chance level. Results: ``benchmarks/calibrated_model.json`` and ``.md``.

Run: ``python -m hil.benchmarks.calibrated_model`` (about five minutes on 2 CPU cores).
"""

from __future__ import annotations

import dataclasses
import json
import math
import tempfile
from pathlib import Path

import numpy as np
import torch
import yaml

from calibration.verify import verify_mask
from calibration.yaml_keys import update_section_keys
from drivers.sim_optics import sample_phase
from drivers.slm import roi_slices
from drivers.slmsuite_bench import FixtureSLM
from hil.bench.bench import Bench
from hil.bench.capture import CaptureSettings, capture_cdp
from hil.bench.frame_log import open_h5, read_array
from hil.bench.reconstruct import LoadedCapture, frame_to_photons, load_capture, reconstruct_classical, to_model_units
from hil.benchmarks.calibration_fixture import BENCHES, hidden_camera_to_model, hidden_gamma
from hil.common.metrics import phase_psnr
from hil.common.provenance import REPO_ROOT, record
from hil.physics.bench_model import BenchModel
from hil.physics.optics import macro_sum
from hil.physics.registration import Registration
from hil.physics.slm_field import SLMField
from hil.physics.system import load_system

KINDS = ("cells", "phase_screen", "resolution_target", "natural")
ITERATIONS = 200
WRONG_TURN_DEG, WRONG_SHIFT_PX = 4.0, 1.5
IDEAL = "ideal: frames from the calibrated model (shot noise)"


def write_hidden_calibration(folder: Path, name: str = "default") -> Path:
    """The fixture bench ``name`` and its system file copied into ``folder`` with its hidden values as the
    calibration (see the module docstring); returns the bench file."""
    source = REPO_ROOT / "configs" / BENCHES[name]
    doc = yaml.safe_load(source.read_text())
    bench, system_yaml = folder / source.name, folder / doc["system"]
    bench.write_text(source.read_text())
    system_yaml.write_text((REPO_ROOT / "configs" / doc["system"]).read_text())
    slm_kw, cam_kw = doc["slm"]["kwargs"], doc["camera"]["kwargs"]
    radiometry = {key: cam_kw[key] for key in ("gain_adu_per_e", "dark_offset_adu", "read_noise_e")}
    update_section_keys(system_yaml, "camera", radiometry, validate=load_system)
    gamma = [round(float(g), 6) for g in hidden_gamma(bench)]
    response = {"gamma": gamma, "crosstalk_sigma_px": slm_kw["crosstalk_sigma_px"]}
    update_section_keys(system_yaml, "slm", response, validate=load_system)
    system = load_system(system_yaml)
    n, k = system.optics.n, system.slm.macro_pixel
    slm = FixtureSLM(**slm_kw)
    rows, cols = roi_slices(slm.shape, (k * n, k * n), tuple(doc["slm"]["roi_offset_px"]))
    fine = np.abs(slm.source["amplitude_sim"])[rows, cols] * np.exp(1j * slm.aberration_rad[rows, cols])
    SLMField.from_complex((macro_sum(torch.from_numpy(fine), k) / k**2).numpy()).save(folder / "field.json")
    camera_shape = (cam_kw["resolution"][1], cam_kw["resolution"][0])
    matrix = hidden_camera_to_model(bench)
    Registration(matrix, system.geometry().detector_shape, camera_shape, math.nan).save(folder / "reg.json")
    doc["calibration"] = {"registration": "reg.json", "field": "field.json"}
    bench.write_text(yaml.safe_dump(doc))
    return bench


def wrong_registration(registration: Registration) -> Registration:
    """``registration`` turned by :data:`WRONG_TURN_DEG` and shifted by :data:`WRONG_SHIFT_PX` model pixels."""
    t = math.radians(WRONG_TURN_DEG)
    turn = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    matrix = registration.camera_to_model
    wrong = np.hstack([turn @ matrix[:, :2], (matrix[:, 2] + WRONG_SHIFT_PX)[:, None]])
    return Registration(wrong, registration.model_shape, registration.camera_shape, math.nan)


def variants(model: BenchModel) -> dict[str, BenchModel]:
    """The calibrated model and the models that lack one of its parts."""
    system = model.system
    nominal = dataclasses.replace(system.slm, gamma=(), crosstalk_sigma_px=0.0)
    return {
        "calibrated": model,
        "no field": BenchModel(system, model.registration, None),
        "nominal response": BenchModel(dataclasses.replace(system, slm=nominal), model.registration, model.field),
        "wrong registration": BenchModel(system, wrong_registration(model.registration), model.field),
    }


def run_bench(name: str, folder: Path, seed: int = 0) -> list[dict]:
    """Captures on one fixture bench, reconstructed and verified through each model variant; one row each."""
    bench_yaml = write_hidden_calibration(folder, name)
    rng = np.random.default_rng(seed)
    n = load_system(folder / "system_fixture.yaml").optics.n
    mask = rng.uniform(0, 2 * math.pi, (n, n))
    truths = [sample_phase(kind, n, rng, math.pi) for kind in KINDS]
    settings = CaptureSettings(frames=4, dark_frames=2)
    with Bench.from_config(bench_yaml) as bench:
        empty = capture_cdp(bench, mask, settings, folder / "empty.h5").cdp_adu
        paths = []
        for kind, truth in zip(KINDS, truths, strict=True):
            bench.place_sample(truth)
            paths.append(capture_cdp(bench, mask, settings, folder / f"{kind}.h5").path)
    captures = [load_capture(path) for path in paths]
    measured = [_photons(path, captured) for path, captured in zip(paths, captures, strict=True)]
    objects = [torch.polar(torch.ones((1, n, n), dtype=torch.float64), torch.from_numpy(t)).to(torch.complex128)
               for t in truths]  # fmt: skip
    calibrated = captures[0].model
    generator = torch.Generator().manual_seed(seed)
    flat = torch.ones_like(objects[0])
    twin = {"empty": _twin_photons(calibrated, mask, flat, torch.from_numpy(empty), 4, generator),
            "frames": [_twin_photons(calibrated, mask, x, like, 4, generator)
                       for x, like in zip(objects, measured, strict=True)]}  # fmt: skip
    rows = []
    for label, model in {**variants(calibrated), IDEAL: calibrated}.items():
        op = model.operator(mask)
        frames, empty_frame = (twin["frames"], twin["empty"].numpy()) if label == IDEAL else (measured, empty)
        verified = verify_mask(model, mask, empty_frame)
        row = {"bench": name, "model": label, "verify_correlation": verified["correlation"],
               "verify_chance": verified["chance"], "verify_residual_rel": verified["residual_rel"]}  # fmt: skip
        for kind, photons, x, truth in zip(KINDS, frames, objects, truths, strict=True):
            y = to_model_units(op, photons)
            with torch.no_grad():
                predicted = op.A(x)
            phase = reconstruct_classical(op, y, ITERATIONS, seed=seed)
            row[f"psnr_db_{kind}"] = float(phase_psnr(phase, torch.from_numpy(truth)[None]))
            row[f"consistency_{kind}"] = float(np.corrcoef(y.ravel().numpy(), predicted.ravel().numpy())[0, 1])
            row[f"scale_{kind}"] = float(y.sum() / predicted.sum())
        row["psnr_db_mean"] = float(np.mean([row[f"psnr_db_{kind}"] for kind in KINDS]))
        rows.append(row)
    return rows


def _twin_photons(
    model: BenchModel,
    mask: np.ndarray,
    x: torch.Tensor,
    like: torch.Tensor,
    frames: int,
    generator: torch.Generator,
    read_noise_e: float = 0.0,
    dark_frames: int = 2,
) -> torch.Tensor:
    """The frame ``model`` predicts for object ``x``, scaled to the photons of the measured frame ``like`` on the
    pixels the model sees, with the shot noise of ``frames`` averaged frames (the ideal: a bench that is its
    model) and, when ``read_noise_e`` > 0, the Gaussian read noise (e-) of those frames less the mean of
    ``dark_frames`` dark frames."""
    op = model.operator(mask)
    with torch.no_grad():
        clean = op.A(x)[0, 0]
    seen = op.detector.forward(torch.ones(op.geometry.detector_shape, dtype=clean.dtype)) > 0
    rate = clean * (like.double()[seen].clamp_min(0).sum() / clean[seen].sum())
    noise = 0.0
    if read_noise_e > 0:
        read = read_noise_e * math.sqrt(1 / frames + 1 / dark_frames)
        noise = torch.randn(rate.shape, generator=generator, dtype=rate.dtype) * read
    return torch.poisson(rate * frames, generator=generator) / frames + noise


def _photons(path: Path, captured: LoadedCapture) -> torch.Tensor:
    """The capture's dark-subtracted CDP in detected photons ``(height, width)``, read from its file."""
    with open_h5(path) as h5:
        return frame_to_photons(read_array(h5, "cdp_adu", ndim=2), captured.system.camera)


def markdown(rows: list[dict]) -> str:
    header = ["bench", "model", *(f"PSNR {k} (dB)" for k in KINDS), "PSNR mean (dB)", "consistency (mean r)",
              "scale (mean)", "verify r", "verify chance"]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row["bench"], row["model"], *(f"{row[f'psnr_db_{k}']:.1f}" for k in KINDS)]
        cells += [f"{row['psnr_db_mean']:.1f}", f"{np.mean([row[f'consistency_{k}'] for k in KINDS]):.3f}"]
        cells += [f"{np.mean([row[f'scale_{k}'] for k in KINDS]):.3f}"]
        cells += [f"{row['verify_correlation']:.3f}", f"{row['verify_chance']:.3f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(out: Path = REPO_ROOT / "benchmarks" / "calibrated_model.json") -> list[dict]:
    torch.set_num_threads(1)
    rows = []
    for name in BENCHES:
        with tempfile.TemporaryDirectory(prefix=f"hil-model-{name}-") as tmp:
            rows += run_bench(name, Path(tmp))
    settings = {"benches": BENCHES, "kinds": KINDS, "raar_iterations": ITERATIONS, "frames": 4,
                "wrong_registration": {"turn_deg": WRONG_TURN_DEG, "shift_model_px": WRONG_SHIFT_PX}}  # fmt: skip
    out.write_text(json.dumps({"rows": rows, "provenance": record(settings)}, indent=1, default=float))
    out.with_suffix(".md").write_text(markdown(rows))
    return rows


if __name__ == "__main__":
    print(markdown(main()))
