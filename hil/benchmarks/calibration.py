"""``hil benchmark calibration``: the student and RAAR at each calibration stage, on benches that are not the twin.

Two fixture benches (``configs/bench_fixture.yaml`` and ``bench_fixture_varied.yaml``: slmsuite's simulators with
a real bench's flaws, every hidden value different between the two; ``drivers/slmsuite_bench.py``) are copied into
a scratch folder with the *nominal* system file, and calibrated from the CLI in the documented order:
``hil calibrate radiometry``, ``geometry``, ``slm-response``, ``field --fit-crosstalk`` (each writing into the
system or bench file). Then, at 10, 20 and 30 dB (5, 50, 500 mean photons per camera pixel, integrated over
frames of at most :data:`FRAME_PHOTONS` each, set by the exposure), held-out samples of four kinds (cells, phase
screen, resolution target, natural image) are captured through the student's mask (``hil capture``'s code: dark
frames checked, the calibrated model recorded in the file) and reconstructed by the student and by RAAR at each
stage:

* ``ideal``: frames the bench's *true* model (its hidden values as the calibration) predicts for the same samples,
  with the noise of the same capture (shot noise of its photons, read noise of its light and dark frames),
  reconstructed through that model: the ceiling;
* ``uncalibrated``: the captured frames through the nominal model (linear 2π response, no crosstalk, uniform beam)
  and the nominal camera placement (centred, one model pixel per camera pixel); radiometry is measured here too,
  since a capture is refused without it;
* ``calibrated``: the captured frames through the model the calibration measured (what ``hil reconstruct`` does);
* ``finetuned`` (student): after ``hil finetune`` on captures of other samples at the three levels, with
  ``finetune_simulated`` simulated pairs per step through the calibrated model (``hil finetune --simulated``).

Rows: ``{bench, method, snr_db, stage, psnr_db, psnr_ci95_db, captures, seconds, psnr_samples_db}``: phase PSNR
(mean over the samples, 95 % interval of the mean, and each sample's value), and the camera frames and wall-clock
seconds that calibration (and fine-tuning) took up to that stage. Every stage sees the same samples, so the table
of differences from the ideal is paired (the interval of the mean per-sample difference, much tighter than the
difference of two means). Results: ``benchmarks/calibration.json`` and ``.md``.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch

from calibration.finetune import FinetuneSettings, finetune_bundle
from drivers.serial_sim import forget_simulated_devices
from drivers.sim_optics import sample_phase
from hil.bench.bench import Bench
from hil.bench.capture import CaptureSettings, capture_cdp
from hil.bench.config import load_bench
from hil.bench.reconstruct import load_capture, reconstruct_bundle, reconstruct_classical, to_model_units
from hil.benchmarks.calibrated_model import _photons, _twin_photons, write_hidden_calibration
from hil.benchmarks.calibration_fixture import BENCHES, SPOT_EXPOSURE_S, _hil
from hil.common.metrics import phase_psnr
from hil.common.provenance import REPO_ROOT
from hil.learning.bundle import load_bundle
from hil.physics.bench_model import BenchModel
from hil.physics.registration import Registration

PHOTONS = {10: 5.0, 20: 50.0, 30: 500.0}  # mean photons per pixel for 10/20/30 dB (hil.physics.camera, README)
FRAME_PHOTONS = 150.0  # most mean photons per pixel in one frame (the brightest speckles stay below full scale)
KINDS = ("cells", "phase_screen", "resolution_target", "natural")
STAGES = ("ideal", "uncalibrated", "calibrated", "finetuned")
DARK_FRAMES = 2  # dark frames averaged per capture


@dataclass(frozen=True)
class CalibrationBenchmark:
    """Settings: ``samples`` held-out samples per level (cycling through the kinds), ``finetune_samples`` other
    samples per level for fine-tuning, ``frames`` averaged per capture, RAAR ``iterations``, fine-tuning
    ``finetune_steps`` with ``finetune_simulated`` simulated pairs per step."""

    bundle: str = "models/student_fixture"
    benches: tuple[str, ...] = ("default", "varied")
    samples: int = 8
    finetune_samples: int = 4
    frames: int = 2
    iterations: int = 100
    finetune_steps: int = 60
    finetune_simulated: int = 8
    fit_crosstalk: bool = True
    seed: int = 0


def _frames_in(path: Path) -> int:
    """Camera frames stored in a frame log (every 2-D dataset)."""
    count = 0

    def visit(_: str, item: object) -> None:
        nonlocal count
        count += isinstance(item, h5py.Dataset) and item.ndim == 2

    with h5py.File(path, "r") as h5:
        h5.visititems(visit)
    return count


def calibrate(folder: Path, name: str, fit_crosstalk: bool = True) -> tuple[Path, dict[str, tuple[int, float]]]:
    """The nominal fixture bench ``name`` in ``folder``, calibrated from the CLI in the documented order; returns the
    bench file and, per step, (camera frames, seconds). A folder calibrated before (``spent.json``) is reused."""
    source = REPO_ROOT / "configs" / BENCHES[name]
    bench, system = folder / source.name, folder / "system_fixture.yaml"
    if (folder / "spent.json").is_file():
        return bench, {step: tuple(value) for step, value in json.loads((folder / "spent.json").read_text()).items()}
    bench.write_text(source.read_text())
    system.write_text((REPO_ROOT / "configs" / "system_fixture.yaml").read_text())
    steps = {
        "radiometry": ["--out", folder / "radiometry.yaml", "--update-system", system],
        "geometry": ["--out", folder / "registration.json", "--exposure-s", SPOT_EXPOSURE_S, "--update-bench"],
        "slm-response": ["--out", folder / "slm.yaml", "--level-step", 8, "--exposure-s", SPOT_EXPOSURE_S,
                         "--update-system", system],
        "field": ["--out", folder / "field.json", "--update-bench"]
        + (["--fit-crosstalk", "--update-system", system] if fit_crosstalk else []),
    }  # fmt: skip
    spent = {}
    for step, options in steps.items():
        _, seconds = _hil("calibrate", step, "--bench", bench, *options)
        log = Path(options[1]).with_suffix(".frames.h5")
        spent[step] = (_frames_in(log), seconds)
    (folder / "spent.json").write_text(json.dumps(spent))
    return bench, spent


def nominal_model(calibrated: BenchModel) -> BenchModel:
    """What a bench is believed to be before calibration: the nominal SLM response, no crosstalk, a uniform beam,
    and the camera centred on the optical axis at one model pixel per camera pixel."""
    system = calibrated.system
    slm = type(system.slm)(bitdepth=system.slm.bitdepth, macro_pixel=system.slm.macro_pixel)
    system = type(system)(optics=system.optics, slm=slm, camera=system.camera, data=system.data)
    model_shape = system.geometry().detector_shape
    camera_shape = calibrated.camera_shape
    shift = np.array(model_shape[::-1]) // 2 - (np.array(camera_shape[::-1]) - 1) / 2
    matrix = np.array([[1.0, 0.0, shift[0]], [0.0, 1.0, shift[1]]])
    return BenchModel(system, Registration(matrix, model_shape, camera_shape, math.nan))


def _split(photons: float, frames: int) -> tuple[int, float]:
    """(frames averaged, photons per frame) that integrate ``photons`` with no frame above :data:`FRAME_PHOTONS`."""
    count = max(frames, math.ceil(photons / FRAME_PHOTONS))
    return count, photons / count


def _exposure_for(bench: Bench, mask: np.ndarray, photons: float, folder: Path) -> float:
    """Exposure (s) at which the bench's frames of ``mask`` hold ``photons`` mean detected photons per pixel."""
    probe = capture_cdp(bench, mask, CaptureSettings(frames=1, dark_frames=2), folder / "probe.h5")
    camera = bench.spec.system.camera
    measured = float(np.mean(probe.cdp_adu)) / (camera.gain_adu_per_e * camera.quantum_efficiency)
    (folder / "probe.h5").unlink()
    return float(bench.camera.exposure_s) * photons / max(measured, 1e-9)


def _capture_set(bench: Bench, mask: np.ndarray, samples: list[np.ndarray], folder: Path, frames: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, sample in enumerate(samples):
        bench.place_sample(sample)
        paths.append(
            capture_cdp(bench, mask, CaptureSettings(frames=frames, dark_frames=2), folder / f"{index}.h5").path
        )
    bench.place_sample(None)
    return paths


def _psnr_row(values: list[float]) -> tuple[float, float]:
    array = np.asarray(values, dtype=np.float64)
    return float(array.mean()), float(1.96 * array.std(ddof=1) / math.sqrt(len(array))) if len(array) > 1 else 0.0


def run_bench(cfg: CalibrationBenchmark, name: str, folder: Path, progress=print) -> list[dict]:
    """Every stage, method and level on the fixture bench ``name``; one row each."""
    forget_simulated_devices()
    student = load_bundle(REPO_ROOT / cfg.bundle)
    mask = student.mask_rad[0].double().numpy()
    n = mask.shape[-1]
    bench_file, spent = calibrate(_mkdir(folder / "calibrated"), name, cfg.fit_crosstalk)
    progress(f"{name}: calibrated ({', '.join(f'{k} {v[1]:.0f} s' for k, v in spent.items())})")
    oracle = load_bench(write_hidden_calibration(_mkdir(folder / "hidden"), name)).model()
    rng = np.random.default_rng(cfg.seed)
    kinds = [KINDS[i % len(KINDS)] for i in range(cfg.samples)]
    evaluation: dict[int, tuple[list[Path], list[np.ndarray]]] = {}
    tuning: list[Path] = []
    with Bench.from_config(bench_file) as bench:
        base = float(bench.camera.exposure_s)
        for snr, photons in PHOTONS.items():
            frames, per_frame = _split(photons, cfg.frames)
            bench.set_exposure(base)
            bench.set_exposure(_exposure_for(bench, mask, per_frame, folder))
            truths = [sample_phase(kind, n, rng, math.pi) for kind in kinds]
            evaluation[snr] = (_capture_set(bench, mask, truths, folder / f"eval{snr}", frames), truths)
            others = [sample_phase(KINDS[i % len(KINDS)], n, rng, math.pi) for i in range(cfg.finetune_samples)]
            tuning += _capture_set(bench, mask, others, folder / f"tune{snr}", frames)
    progress(f"{name}: {len(evaluation) * cfg.samples} evaluation and {len(tuning)} fine-tuning captures")
    start = time.perf_counter()
    settings = FinetuneSettings(steps=cfg.finetune_steps, simulated=cfg.finetune_simulated)
    finetune_bundle(REPO_ROOT / cfg.bundle, tuning, folder / "finetuned", settings)
    tune_seconds = time.perf_counter() - start
    tuned = load_bundle(folder / "finetuned")
    calibration_frames = sum(frames for frames, _ in spent.values())
    calibration_seconds = sum(seconds for _, seconds in spent.values())
    cost = {
        "ideal": (0, 0.0),
        "uncalibrated": spent["radiometry"],
        "calibrated": (calibration_frames, calibration_seconds),
        "finetuned": (
            calibration_frames + sum(_frames_in(path) for path in tuning),
            calibration_seconds + tune_seconds,
        ),
    }
    rows = []
    generator = torch.Generator().manual_seed(cfg.seed)
    for snr, (paths, truths) in evaluation.items():
        scores: dict[tuple[str, str], list[float]] = {}
        for path, truth in zip(paths, truths, strict=True):
            captured = load_capture(path)
            photons = _photons(path, captured)
            x = torch.polar(torch.ones((1, n, n), dtype=torch.float64), torch.from_numpy(truth))
            read_noise_e = captured.system.camera.read_noise_e
            ideal = _twin_photons(oracle, mask, x, photons, captured.frames, generator, read_noise_e, DARK_FRAMES)
            inputs = {
                "ideal": (oracle.operator(mask), ideal),
                "uncalibrated": (nominal_model(captured.model).operator(mask), photons),
                "calibrated": (captured.op, photons),
            }
            for stage, (op, frame) in inputs.items():
                y = to_model_units(op, frame)
                phase = {"raar": reconstruct_classical(op, y, cfg.iterations, seed=cfg.seed)}
                phase["student"] = reconstruct_bundle(student, op, y, captured.photons_per_pixel)
                if stage == "calibrated":
                    phase["student finetuned"] = reconstruct_bundle(tuned, op, y, captured.photons_per_pixel)
                for method, estimate in phase.items():
                    key = ("finetuned", "student") if method == "student finetuned" else (stage, method)
                    scores.setdefault(key, []).append(float(phase_psnr(estimate, torch.from_numpy(truth)[None])))
        for (stage, method), values in scores.items():
            psnr, ci = _psnr_row(values)
            captures, seconds = cost[stage]
            rows.append({"bench": name, "method": method, "snr_db": snr, "stage": stage, "psnr_db": psnr,
                         "psnr_ci95_db": ci, "captures": captures, "seconds": seconds,
                         "psnr_samples_db": values})  # fmt: skip
        progress(f"{name} {snr} dB: " + ", ".join(f"{s}/{m} {np.mean(v):.1f}" for (s, m), v in scores.items()))
    return rows


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _run_one(cfg: CalibrationBenchmark, name: str, folder: Path) -> list[dict]:
    torch.set_num_threads(1)
    return run_bench(cfg, name, _mkdir(folder / name), lambda message: print(message, flush=True))


def run(cfg: CalibrationBenchmark, folder: Path, progress=print, jobs: int = 1) -> list[dict]:
    """Every bench of ``cfg`` (``jobs`` at once, each in its own process on one thread); rows sorted."""
    rows = []
    if jobs > 1:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(min(jobs, len(cfg.benches)), mp_context=context) as pool:
            for result in pool.map(_run_one, [cfg] * len(cfg.benches), cfg.benches, [folder] * len(cfg.benches)):
                rows += result
    else:
        torch.set_num_threads(1)
        for name in cfg.benches:
            rows += run_bench(cfg, name, _mkdir(folder / name), progress)
    order = {stage: i for i, stage in enumerate(STAGES)}
    return sorted(rows, key=lambda r: (r["bench"], r["method"], r["snr_db"], order[r["stage"]]))


def markdown(rows: list[dict]) -> str:
    lines = ["| bench | method | SNR (dB) | " + " | ".join(STAGES) + " | captures (calibrated / finetuned) | seconds |",
             "|---|---|---|" + "---|" * len(STAGES) + "---|---|"]  # fmt: skip
    groups: dict[tuple, dict[str, dict]] = {}
    for row in rows:
        groups.setdefault((row["bench"], row["method"], row["snr_db"]), {})[row["stage"]] = row
    for (bench, method, snr), by_stage in groups.items():
        cells = [f"{by_stage[s]['psnr_db']:.1f} ± {by_stage[s]['psnr_ci95_db']:.1f}" if s in by_stage else "—"
                 for s in STAGES]  # fmt: skip
        last = by_stage.get("finetuned", by_stage["calibrated"])
        captures = f"{by_stage['calibrated']['captures']} / {last['captures']}"
        lines.append(
            f"| {bench} | {method} | {snr} | " + " | ".join(cells) + f" | {captures} | {last['seconds']:.0f} |"
        )
    compared = STAGES[1:]
    lines += ["", "Difference from the ideal on the same samples (dB, mean ± 95 % interval of the paired differences):",
              "", "| bench | method | SNR (dB) | " + " | ".join(f"{s} − ideal" for s in compared) + " |",
              "|---|---|---|" + "---|" * len(compared)]  # fmt: skip
    for (bench, method, snr), by_stage in groups.items():
        ideal = np.asarray(by_stage["ideal"]["psnr_samples_db"])
        cells = []
        for stage in compared:
            if stage not in by_stage:
                cells.append("—")
                continue
            mean, ci = _psnr_row(list(np.asarray(by_stage[stage]["psnr_samples_db"]) - ideal))
            cells.append(f"{mean:+.1f} ± {ci:.1f}")
        lines.append(f"| {bench} | {method} | {snr} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
