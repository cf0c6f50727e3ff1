"""``hil calibrate radiometry|geometry|slm-response|field``: bench calibrations, frames logged as they arrive."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import typer
from rich.console import Console

from hil.cli.options import BENCH, DRY_RUN, OVERWRITE, check_exposure, dark_frames_option, frames_option

app = typer.Typer(
    help="Calibrate the bench: camera radiometry, camera-to-model geometry, SLM phase response, SLM-plane field.",
    no_args_is_help=True,
)

SAMPLE_OUT = "the sample must be out of the beam (the model assumes a unit object)"


def _outputs(out: Path, overwrite: bool) -> Path:
    """Check the result path and where the raw frames go (beside it) before any device is touched;
    returns the frames file (removed first when ``overwrite``, so the new frames are not mixed in)."""
    from hil.bench.frame_log import ensure_new
    from hil.cli.outputs import check_output

    check_output(out, overwrite)
    return ensure_new(out.with_suffix(".frames.h5"), overwrite)


def _random_mask(n: int, seed: int):
    import numpy as np

    return np.random.default_rng(seed).uniform(0, 2 * np.pi, (n, n))


def _write_yaml(path: Path, data: dict, overwrite: bool) -> None:
    import json

    import yaml

    from hil.cli.outputs import write_text

    plain = json.loads(json.dumps(data, default=float))
    write_text(path, yaml.safe_dump(plain, sort_keys=False, default_flow_style=None, width=100), overwrite)


@contextmanager
def _exposed_session(spec, frames: Path, procedure: str, settings: dict, exposure_s: float | None):
    """The bench (safe on every exit) and the frame log of one procedure, at ``exposure_s`` seconds when given."""
    from hil.bench.bench import Bench
    from hil.bench.frame_log import FrameLog

    with Bench(spec) as bench, FrameLog(frames, procedure, settings) as log:
        if exposure_s is not None:
            bench.set_exposure(exposure_s)
        yield bench, log


def _planned_only(console: Console, plan: str, dry_run: bool, frames: Path) -> bool:
    """Print the plan; True on a dry run (the command stops there). Otherwise remove an old frames file (only
    there with --overwrite: ``_outputs`` refused it before) and return False."""
    console.print(plan)
    if dry_run:
        console.print("dry run: configs and options are valid; nothing was sent to any device")
        return True
    frames.unlink(missing_ok=True)
    return False


def _update_system(path: Path, section: str, values: dict, console: Console) -> None:
    from calibration.yaml_keys import update_section_keys
    from hil.physics.system import load_system

    update_section_keys(path, section, values, validate=load_system)
    console.print(f"updated {section}: {', '.join(values)} in {path}")


UPDATE_BENCH = typer.Option(
    False, "--update-bench", help="Also name the result in the bench file's calibration section."
)


def _update_bench(bench_config: Path, key: str, result: Path, console: Console) -> None:
    """Write ``calibration.<key>: <result>`` (relative to the bench file when it can be) into the bench file,
    adding the section to an older bench file; the edited file is validated before it replaces the old one."""
    import os

    from calibration.yaml_keys import update_section_keys
    from hil.bench.config import load_bench

    folder = bench_config.resolve().parent
    try:
        name = os.path.relpath(result.resolve(), folder)
    except ValueError:  # another drive (Windows)
        name = str(result.resolve())
    validate = lambda path: load_bench(path, import_plugins=False)  # noqa: E731
    update_section_keys(bench_config, "calibration", {key: name}, validate=validate, add_missing=True)
    console.print(f"updated calibration.{key}: {name} in {bench_config}")


def _field_png(amplitude, phase_rad) -> bytes:
    """Amplitude and phase (radians) of the SLM-plane field side by side, as PNG bytes (matplotlib Agg)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(7, 3.2))
    for ax, (title, image, cmap) in zip(
        axes, (("amplitude (relative)", amplitude, "gray"), ("phase (rad)", phase_rad, "twilight")), strict=True
    ):
        shown = ax.imshow(image, cmap=cmap, interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("mask pixel (column)")
        ax.set_ylabel("mask pixel (row)")
        fig.colorbar(shown, ax=ax, fraction=0.046)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return buffer.getvalue()


@app.command("radiometry")
def radiometry(
    out: Path = typer.Option(..., "--out", help="Result (YAML: the camera keys and the fit); frames go beside it."),
    bench_config: Path = BENCH,
    exposures_s: str = typer.Option("0.005,0.01,0.02,0.04", help="Comma-separated exposures (s), dim to bright."),
    pairs: int = typer.Option(4, min=1, help="Frame pairs per exposure."),
    dark_frames: int = dark_frames_option(8, minimum=2),
    seed: int = typer.Option(0, help="Seed of the random diffuser mask shown while lit."),
    update_system: Path = typer.Option(None, help="Also write the measured camera keys into this system.yaml."),
    overwrite: bool = OVERWRITE,
    dry_run: bool = DRY_RUN,
) -> None:
    """Photon transfer: dark offset (ADU), read noise (e-), gain (ADU/e-), saturation / full well (e-)."""
    from calibration.radiometry import measure_radiometry
    from hil.bench.bench import Bench
    from hil.bench.config import load_bench
    from hil.bench.frame_log import FrameLog

    console = Console()
    spec = load_bench(bench_config, import_plugins=not dry_run)
    try:
        exposures = [float(e) for e in exposures_s.split(",") if e.strip()]
    except ValueError:
        raise ValueError(f"--exposures-s {exposures_s!r}: expected comma-separated numbers (s)") from None
    limits = spec.config.camera.exposure_limits_s
    if not exposures or any(not limits[0] <= e <= limits[1] for e in exposures):
        raise ValueError(f"--exposures-s {exposures}: each must lie within camera.exposure_limits_s {list(limits)}")
    frames = _outputs(out, overwrite)
    if _planned_only(
        console,
        f"plan: {dark_frames} dark frames, {pairs} pairs at each of {exposures} s with a random mask; "
        f"result {out}, frames {frames}",
        dry_run,
        frames,
    ):
        return
    settings = {"exposures_s": exposures, "pairs": pairs, "dark_frames": dark_frames, "seed": seed}
    with Bench(spec) as bench, FrameLog(frames, "radiometry", settings, seed=seed) as log:
        mask = _random_mask(spec.system.optics.n, seed)
        result = measure_radiometry(bench, log, exposures, mask, pairs=pairs, dark_frames=dark_frames)
    _write_yaml(out, {"camera": result.camera_keys(), "measurement": result.to_dict()}, overwrite)
    console.print(
        f"gain {result.gain_adu_per_e:.4g} ADU/e-, offset {result.dark_offset_adu:.2f} ADU, read noise "
        f"{result.read_noise_e:.3g} e-, saturation {result.saturation_adu} ADU, full well {result.full_well_e} e- "
        f"(fit R² {result.fit_r2:.4f}, {result.fit_points} points); wrote {out}; bench left safe"
    )
    if update_system is not None:
        _update_system(update_system, "camera", result.camera_keys(), console)


@app.command("geometry")
def geometry(
    out: Path = typer.Option(..., "--out", help="Registration (JSON); frames go beside it."),
    bench_config: Path = BENCH,
    frames_count: int = frames_option(2, "Lit frames averaged per spot."),
    dark_frames: int = dark_frames_option(4, minimum=2),
    cycles: int = typer.Option(None, help="Grating periods across the mask (default n // 4)."),
    exposure_s: float = typer.Option(None, help="Camera exposure (s) for the spot frames (default: the bench's)."),
    update_bench: bool = UPDATE_BENCH,
    overwrite: bool = OVERWRITE,
    dry_run: bool = DRY_RUN,
) -> None:
    """Affine camera-pixel -> model-grid registration from a 3 x 3 grid of grating spots."""
    import json

    from calibration.geometry import measure_geometry
    from hil.bench.config import load_bench
    from hil.cli.outputs import write_text

    console = Console()
    spec = load_bench(bench_config, import_plugins=not dry_run)
    check_exposure(spec, exposure_s)
    frames = _outputs(out, overwrite)
    if _planned_only(
        console,
        f"plan: {dark_frames} dark + 9 x {frames_count} lit frames of grating spots; {SAMPLE_OUT}; result {out}",
        dry_run,
        frames,
    ):
        return
    settings = {"frames": frames_count, "dark_frames": dark_frames, "cycles": cycles, "exposure_s": exposure_s}
    with _exposed_session(spec, frames, "geometry", settings, exposure_s) as (bench, log):
        result = measure_geometry(bench, log, cycles, frames_count, dark_frames)
    write_text(out, json.dumps(result.registration.to_dict(), indent=1), overwrite)
    p = result.registration.parameters()
    console.print(
        f"scale {p['scale_x']:.5f} x {p['scale_y']:.5f} model px per camera px, rotation {p['rotation_deg']:.3f} deg, "
        f"shift ({p['shift_x_px']:.3f}, {p['shift_y_px']:.3f}) px; spot fit residual {result.residual_model_px:.3g} "
        f"model px rms, faintest spot {result.min_spot_sigmas:.0f} sigma, "
        f"correlation {result.registration.correlation:.3f}; "
        f"wrote {out}; bench left safe"
    )
    if update_bench:
        _update_bench(bench_config, "registration", out, console)


@app.command("slm-response")
def slm_response(
    out: Path = typer.Option(..., "--out", help="Result (YAML: slm.gamma and the fit); frames go beside it."),
    bench_config: Path = BENCH,
    level_step: int = typer.Option(1, min=1, help="Measure every level_step-th gray level (the top one always)."),
    reference_level: int = typer.Option(0, min=0, help="Gray level of the reference half."),
    frames_count: int = frames_option(1, "Frames averaged per gray level."),
    exposure_s: float = typer.Option(None, help="Camera exposure (s) for the frames (default: the bench's)."),
    update_system: Path = typer.Option(None, help="Also write slm.gamma into this system.yaml."),
    overwrite: bool = OVERWRITE,
    dry_run: bool = DRY_RUN,
) -> None:
    """Phase per gray level (slmsuite gamma, units of 2π) by two-region interference; no template or registration."""
    from calibration.slm_response import measure_slm_response
    from hil.bench.config import load_bench

    console = Console()
    spec = load_bench(bench_config, import_plugins=not dry_run)
    check_exposure(spec, exposure_s)
    total = spec.system.slm.levels
    levels = sorted(set(range(0, total, level_step)) | {total - 1})
    if not reference_level < total:
        raise ValueError(f"--reference-level {reference_level} is not a gray level of a {total}-level SLM")
    frames = _outputs(out, overwrite)
    if _planned_only(
        console,
        f"plan: {len(levels)} of {total} gray levels, {frames_count} frame(s) each, reference level "
        f"{reference_level}; {SAMPLE_OUT}; result {out}",
        dry_run,
        frames,
    ):
        return
    settings = {"levels": levels, "reference_level": reference_level, "frames": frames_count, "exposure_s": exposure_s}
    with _exposed_session(spec, frames, "slm-response", settings, exposure_s) as (bench, log):
        result = measure_slm_response(bench, log, levels, reference_level, frames_count)
    _write_yaml(out, {"slm": result.system_keys(), "measurement": result.to_dict()}, overwrite)
    console.print(
        f"phase range {result.phase_range_rad:.4f} rad ({result.phase_range_rad / 6.283185307179586:.4f} x 2π), "
        f"modulation {result.modulation_snr:.3g} x noise, ellipse residual {result.ellipse_residual:.3g}, "
        f"rank-2 residual {result.rank_residual:.3g}; wrote {out}; bench left safe"
    )
    if update_system is not None:
        _update_system(update_system, "slm", result.system_keys(), console)


@app.command("field")
def field(
    out: Path = typer.Option(..., "--out", help="SLM-plane field (JSON); frames and a PNG plot go beside it."),
    bench_config: Path = BENCH,
    masks: int = typer.Option(12, "--masks", min=6, help="Random masks shown; the last 2 are held out of the fit."),
    flat: bool = typer.Option(False, "--flat", help="First mask flat (zero phase): a bright zero order."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random masks."),
    margin: int = typer.Option(1, "--margin", min=0, help="Mask pixels fitted around the ROI (light outside it)."),
    crosstalk: bool = typer.Option(
        False, "--fit-crosstalk", help="Also measure the SLM's crosstalk (slm.crosstalk_sigma_px) from the frames."
    ),
    update_system: Path = typer.Option(
        None, help="With --fit-crosstalk: write slm.crosstalk_sigma_px into this system.yaml."
    ),
    frames_count: int = frames_option(1, "Lit frames averaged per mask."),
    dark_frames: int = dark_frames_option(4, minimum=2),
    exposure_s: float = typer.Option(None, help="Camera exposure (s) for the frames (default: the bench's)."),
    registration: Path = typer.Option(
        None, "--registration", help="Registration file (default: the bench file's calibration.registration)."
    ),
    update_bench: bool = UPDATE_BENCH,
    overwrite: bool = OVERWRITE,
    dry_run: bool = DRY_RUN,
    threads: int = typer.Option(1, min=1, help="CPU threads of the fit (1: no oversubscription on a shared CPU)."),
) -> None:
    """Illumination amplitude and static aberration over the mask, by phase retrieval of known masks' CDPs."""
    import torch

    from calibration.field import HELD_OUT, check_prerequisites, measure_field
    from hil.bench.config import load_bench
    from hil.cli.outputs import check_output, write_bytes, write_text
    from hil.physics.registration import load_registration

    console = Console()
    if update_system is not None and not crosstalk:
        raise ValueError("--update-system writes the measured crosstalk: it needs --fit-crosstalk")
    spec = load_bench(bench_config, import_plugins=not dry_run)
    check_exposure(spec, exposure_s)
    source = registration if registration is not None else spec.calibration_files.get("registration")
    found = None if source is None else load_registration(source)
    check_prerequisites(spec.system, found)
    plot = out.with_suffix(".png")
    frames = _outputs(out, overwrite)
    check_output(plot, overwrite)
    if _planned_only(
        console,
        f"plan: {dark_frames} dark + {masks} x {frames_count} lit frames of random masks (seed {seed}), "
        f"{masks - HELD_OUT} fitted and {HELD_OUT} held out; registration {source}; {SAMPLE_OUT}; result {out}",
        dry_run,
        frames,
    ):
        return
    settings = {
        "masks": masks, "flat": flat, "seed": seed, "margin": margin, "frames": frames_count,
        "dark_frames": dark_frames, "exposure_s": exposure_s, "registration": str(source), "crosstalk": crosstalk,
    }  # fmt: skip
    torch.set_num_threads(threads)
    with _exposed_session(spec, frames, "field", settings, exposure_s) as (bench, log):
        result = measure_field(bench, log, found, masks, flat, seed, frames_count, dark_frames, margin, crosstalk)
    write_text(out, result.to_json(), overwrite)
    write_bytes(plot, _field_png(result.amplitude, result.phase_rad), overwrite)
    m = result.metrics
    console.print(
        f"fit residual {m['fit_residual_rel']:.3g} (relative rms on the {100 * m['covered_pixel_fraction']:.0f} % of "
        f"camera pixels the model covers), held-out correlation "
        f"{m['heldout_correlation']:.3f}, light outside the ROI {100 * m['outside_roi_power_fraction']:.2g} %; "
        f"wrote {out} and {plot}; bench left safe"
    )
    if crosstalk:
        console.print(f"crosstalk sigma {m['crosstalk_sigma_px']:.3g} SLM px (least held-out residual)")
        if update_system is not None:
            _update_system(update_system, "slm", {"crosstalk_sigma_px": round(m["crosstalk_sigma_px"], 4)}, console)
    if update_bench:
        _update_bench(bench_config, "field", out, console)
