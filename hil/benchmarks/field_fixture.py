"""The SLM-plane field calibration on the two fixture benches, against their hidden beam and aberration.

For ``configs/bench_fixture.yaml`` and ``configs/bench_fixture_varied.yaml`` (copied, with their system file,
into a scratch folder), the system copy gets the fixture's hidden sensor and SLM response (what steps 2 and 4
of the calibration order measure), and the field is fitted (:mod:`calibration.field`) on frames of the same 12
random masks under several conditions: with and without the margin for light outside the ROI (with the
bench's dump grating beside the ROI, and with a flat SLM there), with the hidden and with a measured
registration (the tilt it trades for the shift error), and with the fixture's crosstalk, which the system
either lacks, models, or measures (:func:`~calibration.field.fit_crosstalk`, what ``--fit-crosstalk`` runs: the
measured sigma is in the condition's label). Each field is compared with the hidden one (:func:`hidden_field`,
:func:`field_error`); results go to ``benchmarks/field_fixture.json`` and ``.md``.

Run: ``python -m hil.benchmarks.field_fixture`` (about two minutes on one loaded CPU core).
"""

from __future__ import annotations

import dataclasses
import json
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from calibration.field import (
    HELD_OUT,
    MIN_HELDOUT_CORRELATION,
    crop,
    field_masks,
    field_metrics,
    fit_crosstalk,
    fit_field,
    record_frames,
)
from calibration.geometry import measure_geometry
from hil.bench.bench import Bench
from hil.bench.frame_log import FrameLog
from hil.benchmarks.calibration_fixture import BENCHES, SPOT_EXPOSURE_S, hidden_camera_to_model, hidden_gamma
from hil.common.provenance import REPO_ROOT, record
from hil.physics.bench_model import BenchModel
from hil.physics.registration import Registration
from hil.physics.system import load_system


def prepare(
    folder: Path,
    varied: bool = False,
    slm: dict | None = None,
    camera: dict | None = None,
    crosstalk: bool = True,
    dump_period_px: int | None = None,
):
    """A fixture bench in ``folder`` (keywords overridden by ``slm`` / ``camera``; the dump grating's period by
    ``dump_period_px``) whose system copy holds the hidden sensor and SLM response (and, with ``crosstalk``, the
    hidden crosstalk), and its hidden registration (also saved as ``registration.json``); returns (bench file,
    registration)."""
    folder.mkdir(parents=True, exist_ok=True)
    doc = yaml.safe_load((REPO_ROOT / "configs" / BENCHES["varied" if varied else "default"]).read_text())
    doc["slm"]["kwargs"].update(slm or {})
    if dump_period_px is not None:
        doc["slm"]["dump_period_px"] = dump_period_px
    doc["camera"]["kwargs"].update(camera or {})
    bench = folder / "bench_fixture.yaml"
    bench.write_text(yaml.safe_dump(doc))
    system = yaml.safe_load((REPO_ROOT / "configs" / doc["system"]).read_text())
    sensor = doc["camera"]["kwargs"]
    system["slm"]["gamma"] = hidden_gamma(bench).tolist()
    if crosstalk:
        system["slm"]["crosstalk_sigma_px"] = float(doc["slm"]["kwargs"]["crosstalk_sigma_px"])
    system["camera"].update({key: sensor[key] for key in ("dark_offset_adu", "read_noise_e", "gain_adu_per_e")})
    (folder / doc["system"]).write_text(yaml.safe_dump(system))
    side = system["optics"]["pad_factor"] * system["optics"]["n"]
    width, height = sensor["resolution"]
    registration = Registration(hidden_camera_to_model(bench), (side, side), (height, width), math.nan)
    registration.save(folder / "registration.json")
    return bench, registration


def hidden_field(bench: Bench) -> np.ndarray:
    """The fixture's field ``(n, n)``: the block mean over each macro-pixel of the ROI of its beam amplitude
    times ``exp(1j * aberration)``."""
    slm, roi, k = bench.slm.slm, bench.slm.roi, bench.slm.macro_pixel
    fine = np.abs(slm.source["amplitude_sim"])[roi] * np.exp(1j * slm.aberration_rad[roi])
    n = fine.shape[0] // k
    return fine.reshape(n, k, n, k).mean(axis=(1, 3))


def field_error(found: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Amplitude correlation; amplitude-weighted rms phase error (rad) with the global phase removed, and
    with a tilt (weighted plane fit) removed as well."""
    weight = np.abs(truth) ** 2
    error = np.angle(found * np.conj(truth))
    error = np.angle(np.exp(1j * (error - np.angle(np.sum(weight * np.exp(1j * error))))))
    rows, cols = np.indices(error.shape)
    root = np.sqrt(weight.ravel())
    design = np.stack([np.ones(error.size), rows.ravel(), cols.ravel()], axis=1) * root[:, None]
    plane = np.linalg.lstsq(design, error.ravel() * root, rcond=None)[0]
    untilted = error - (plane[0] + plane[1] * rows + plane[2] * cols)

    def rms(e: np.ndarray) -> float:
        return math.sqrt(float(np.sum(weight * e**2) / np.sum(weight)))

    return {
        "amplitude_correlation": float(np.corrcoef(np.abs(found).ravel(), np.abs(truth).ravel())[0, 1]),
        "phase_rms_rad": rms(error),
        "phase_rms_untilted_rad": rms(untilted),
    }


def _frames(bench_yaml: Path, folder: Path, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray, Registration, dict]:
    """Dark-subtracted frames of ``masks``, the hidden field, the spot-grid registration of this bench, and
    the frames' noise: mean photons per camera pixel and the noise rms over the signal's spread (ADU, from
    the fixture's noiseless photons: shot and read noise, rounding)."""
    with Bench.from_config(bench_yaml) as bench:
        truth = hidden_field(bench)
        with FrameLog(folder / "field.frames.h5", "field", {}) as log:
            frames, _ = record_frames(bench, log, masks)
        camera, ratios, photons = bench.camera, [], []
        with bench.lit():
            for mask in masks:
                bench.show_mask(mask)
                mean_e = camera.photons()
                noise_adu2 = camera.gain_adu_per_e**2 * (mean_e + camera.read_noise_e**2) + 1 / 12
                ratios.append(math.sqrt(float(noise_adu2.mean())) / float((camera.gain_adu_per_e * mean_e).std()))
                photons.append(float(mean_e.mean()))
        bench.set_exposure(SPOT_EXPOSURE_S)
        with FrameLog(folder / "geometry.frames.h5", "geometry", {}) as log:
            measured = measure_geometry(bench, log, frames=1, dark_frames=2).registration
    noise = {"photons_per_pixel": float(np.mean(photons)), "noise_rel": float(np.mean(ratios))}
    return frames, truth, measured, noise


def run_bench(name: str, folder: Path) -> list[dict]:
    """Every condition on one fixture bench; one row each."""
    varied = name == "varied"
    masks = field_masks(16, 12, seed=0)
    rows = []
    for variant in ("no_crosstalk", "no_dump_grating", "crosstalk"):
        where = folder / variant
        slm = None if variant == "crosstalk" else {"crosstalk_sigma_px": 0.0}
        dump = 0 if variant == "no_dump_grating" else None
        bench_yaml, hidden = prepare(where, varied, slm=slm, crosstalk=False, dump_period_px=dump)
        system = load_system(where / "system_fixture.yaml")
        frames, truth, measured, noise = _frames(bench_yaml, where, masks)
        sigma = yaml.safe_load(bench_yaml.read_text())["slm"]["kwargs"]["crosstalk_sigma_px"]
        modelled = dataclasses.replace(system, slm=dataclasses.replace(system.slm, crosstalk_sigma_px=sigma))
        conditions = {
            "crosstalk": [
                (f"crosstalk {sigma} px, system without it", system, hidden, 1, False),
                (f"crosstalk {sigma} px, system with it", modelled, hidden, 1, False),
                (f"crosstalk {sigma} px, measured (--fit-crosstalk)", system, hidden, 1, True),
            ],
            "no_dump_grating": [
                ("no crosstalk, flat beside the ROI (no dump grating), margin 1", system, hidden, 1, False),
                ("no crosstalk, flat beside the ROI (no dump grating), margin 0", system, hidden, 0, False),
            ],
            "no_crosstalk": [
                ("no crosstalk, hidden registration", system, hidden, 1, False),
                ("no crosstalk, hidden registration, margin 0", system, hidden, 0, False),
                ("no crosstalk, measured registration", system, measured, 1, False),
            ],
        }[variant]
        for label, model_system, registration, margin, measure_crosstalk in conditions:
            model = BenchModel(model_system, registration)
            start = time.perf_counter()
            if measure_crosstalk:
                found, wide, metrics = fit_crosstalk(model, masks, frames, margin, seed=0)
                label = f"{label}: {found:.3f} px"
            else:
                wide = fit_field(model, masks[:-HELD_OUT], frames[:-HELD_OUT], margin)
                metrics = field_metrics(model, masks, frames, wide, margin, HELD_OUT)
            seconds = time.perf_counter() - start
            accepted = metrics["heldout_correlation"] >= MIN_HELDOUT_CORRELATION
            error = field_error(crop(wide, margin), truth)
            rows.append(
                {"bench": name, "condition": label, **error, **metrics, **noise, "accepted": accepted, "fit_s": seconds}
            )
    return rows


COLUMNS = (
    ("amplitude_correlation", "amplitude corr.", ".4f"),
    ("phase_rms_rad", "phase rms (rad)", ".3f"),
    ("phase_rms_untilted_rad", "tilt removed (rad)", ".3f"),
    ("heldout_correlation", "held-out corr.", ".3f"),
    ("fit_residual_rel", "fit residual", ".3f"),
    ("noise_rel", "noise", ".3f"),
    ("outside_roi_power_fraction", "power outside ROI", ".4f"),
    ("accepted", "accepted", ""),
    ("fit_s", "fit (s)", ".1f"),
)


def markdown(rows: list[dict]) -> str:
    lines = [
        "| bench | condition | " + " | ".join(title for _, title, _ in COLUMNS) + " |",
        "|---|---|" + "---|" * len(COLUMNS),
    ]
    for row in rows:
        cells = [
            ("yes" if row[key] else "no") if key == "accepted" else format(row[key], fmt) for key, _, fmt in COLUMNS
        ]
        lines.append(f"| {row['bench']} | {row['condition']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(out: Path = REPO_ROOT / "benchmarks" / "field_fixture.json") -> list[dict]:
    torch.set_num_threads(1)  # fit times comparable across machines (and not fighting other jobs)
    rows = []
    for name in BENCHES:
        with tempfile.TemporaryDirectory(prefix=f"hil-field-{name}-") as tmp:
            rows += run_bench(name, Path(tmp))
    settings = {"benches": BENCHES, "masks": 12, "seed": 0, "held_out": HELD_OUT}
    out.write_text(json.dumps({"rows": rows, "provenance": record(settings)}, indent=1, default=float))
    out.with_suffix(".md").write_text(markdown(rows))
    return rows


if __name__ == "__main__":
    print(markdown(main()))
