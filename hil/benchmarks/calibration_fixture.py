"""The documented calibration order, run from the CLI on the two fixture benches, against their hidden values.

For ``configs/bench_fixture.yaml`` and ``configs/bench_fixture_varied.yaml`` (copied, with their
system file, into a scratch folder so ``--update-system`` edits the copy), this runs, as a user
would: ``hil calibrate radiometry --update-system``, ``hil calibrate geometry``, ``hil deploy
--verify`` of a bundle made for the nominal system, ``hil calibrate slm-response --update-system``
and ``hil deploy --verify`` of the same bundle again (no retraining; exit status 1, "deployed, not
verified", is recorded, not an error). Each measured value is
compared with the fixture's keyword that produced it (:func:`hidden_camera_to_model`,
:func:`hidden_gamma`); results go to ``benchmarks/calibration_fixture.json`` and ``.md``.

Run: ``python -m hil.benchmarks.calibration_fixture`` (about a minute on 2 CPU cores).
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from hil.common.provenance import REPO_ROOT, record

BENCHES = {"default": "bench_fixture.yaml", "varied": "bench_fixture_varied.yaml"}
SPOT_EXPOSURE_S = 0.001  # gratings and half-panel patterns concentrate the light: 10 ms saturates


def hidden_camera_to_model(bench_yaml: Path) -> np.ndarray:
    """The fixture camera's affine ``(2, 3)`` in model terms, from its keywords and the grating equation."""
    doc = yaml.safe_load(Path(bench_yaml).read_text())
    system = yaml.safe_load((Path(bench_yaml).parent / doc["system"]).read_text())
    cam, slm = doc["camera"]["kwargs"], doc["slm"]["kwargs"]
    n, k, pad = system["optics"]["n"], system["slm"]["macro_pixel"], system["optics"]["pad_factor"]
    scale = cam["focal_px"] * slm["wav_um"] / (pad * k * n * slm["pitch_um"])  # camera px per model px
    t = math.radians(cam["rotation_deg"])
    a = scale * np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    width, height = cam["resolution"]
    b = np.array([width / 2 + cam["offset_px"][0], height / 2 + cam["offset_px"][1]]) - a @ np.full(2, pad * n // 2)
    inverse = np.linalg.inv(a)
    return np.hstack([inverse, (-inverse @ b)[:, None]])


def hidden_gamma(bench_yaml: Path, levels: int = 256) -> np.ndarray:
    """The fixture SLM's phase per gray level (units of 2π), from its keywords."""
    slm = yaml.safe_load(Path(bench_yaml).read_text())["slm"]["kwargs"]
    return slm["phase_range_rad"] / (2 * math.pi) * (np.arange(levels) / levels) ** slm["gamma_exponent"]


def _hil(*args: object, allowed: tuple[int, ...] = (0,)) -> tuple[str, float]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "hil", *map(str, args)], capture_output=True, text=True)
    if done.returncode not in allowed:
        raise RuntimeError(f"hil {' '.join(map(str, args))} failed: {done.stdout[-2000:]}{done.stderr[-2000:]}")
    return " ".join(done.stdout.split()), time.perf_counter() - start


def _bundle(system_yaml: Path, out: Path) -> Path:
    from hil.learning.bundle import save_bundle
    from hil.learning.decoders import DecoderConfig
    from hil.learning.training import TrainConfig, build_model
    from hil.physics.system import load_system

    train = TrainConfig(role="student", decoder=DecoderConfig(stages=1, channels=4, hidden_layers=1, refine_steps=1))
    system = load_system(system_yaml)
    return save_bundle(out, build_model(train, system).system, train, system, metrics={})


def _correlation(output: str) -> float:
    return float(re.search(r"camera pixels: correlation (-?[0-9.]+)", output).group(1))


def _chance(output: str) -> float:
    return float(re.search(r"not deployed: up to (-?[0-9.]+)", output).group(1))


def run_bench(name: str, folder: Path) -> list[dict]:
    """The calibration order on one fixture bench; one row per recovered quantity."""
    source = REPO_ROOT / "configs" / BENCHES[name]
    bench, system_yaml = folder / source.name, folder / "system_fixture.yaml"
    bench.write_text(source.read_text())
    system_yaml.write_text((REPO_ROOT / "configs" / "system_fixture.yaml").read_text())
    truth = yaml.safe_load(bench.read_text())
    cam, slm = truth["camera"]["kwargs"], truth["slm"]["kwargs"]
    bundle = _bundle(system_yaml, folder / "bundle")
    rows, seconds = [], {}
    _, seconds["radiometry"] = _hil(
        "calibrate", "radiometry", "--bench", bench, "--out", folder / "radiometry.yaml", "--update-system", system_yaml
    )
    camera = yaml.safe_load((folder / "radiometry.yaml").read_text())["camera"]
    for key in ("gain_adu_per_e", "dark_offset_adu", "read_noise_e"):
        rows.append({"quantity": key, "truth": cam[key], "measured": camera[key]})
    reg = folder / "registration.json"
    _, seconds["geometry"] = _hil(
        "calibrate", "geometry", "--bench", bench, "--out", reg, "--exposure-s", SPOT_EXPOSURE_S
    )
    found = np.array(json.loads(reg.read_text())["camera_to_model"])
    hidden = hidden_camera_to_model(bench)
    scale = [float(np.sqrt(abs(np.linalg.det(m[:, :2])))) for m in (hidden, found)]
    angle = [math.degrees(math.atan2(m[1, 0], m[0, 0])) for m in (hidden, found)]
    rows += [
        {"quantity": "scale (model px per camera px)", "truth": scale[0], "measured": scale[1]},
        {"quantity": "rotation_deg", "truth": angle[0], "measured": angle[1]},
        {
            "quantity": "largest matrix entry error",
            "truth": 0.0,
            "measured": float(np.abs(found - hidden)[:, :2].max()),
        },
        {
            "quantity": "largest shift error (model px)",
            "truth": 0.0,
            "measured": float(np.abs(found - hidden)[:, 2].max()),
        },
    ]
    deploy = ["deploy", bundle, "--bench", bench, "--verify", "--registration", reg]
    before, seconds["deploy (nominal LUT)"] = _hil(*deploy, allowed=(0, 1))  # 1: deployed, not verified
    _, seconds["slm-response"] = _hil(
        "calibrate", "slm-response", "--bench", bench, "--out", folder / "slm.yaml", "--level-step", 8,
        "--exposure-s", SPOT_EXPOSURE_S, "--update-system", system_yaml,
    )  # fmt: skip
    measured = yaml.safe_load((folder / "slm.yaml").read_text())
    error_rad = 2 * math.pi * (np.asarray(measured["slm"]["gamma"]) - hidden_gamma(bench))
    rows += [
        {"quantity": "phase_range_rad", "truth": slm["phase_range_rad"],
         "measured": measured["measurement"]["phase_range_rad"]},
        {"quantity": "gamma: largest error (rad)", "truth": 0.0, "measured": float(np.abs(error_rad).max())},
        {"quantity": "gamma: rms error (rad)", "truth": 0.0, "measured": float(np.sqrt(np.mean(error_rad**2)))},
    ]  # fmt: skip
    after, seconds["deploy (measured LUT)"] = _hil(*deploy, allowed=(0, 1))
    for lut, output in (("nominal", before), ("measured", after)):
        rows += [
            {"quantity": f"deploy --verify correlation, {lut} LUT", "truth": None, "measured": _correlation(output)},
            {"quantity": f"deploy --verify chance level, {lut} LUT", "truth": None, "measured": _chance(output)},
            {
                "quantity": f"deploy --verify passed, {lut} LUT",
                "truth": None,
                "measured": float("not verified" not in output),
            },
        ]
    for row in rows:
        row["bench"] = name
    rows.append({"bench": name, "quantity": "seconds per command", "truth": None, "measured": seconds})
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| bench | quantity | hidden | measured |", "|---|---|---|---|"]
    for row in rows:
        value = row["measured"]
        shown = ", ".join(f"{k} {v:.1f}" for k, v in value.items()) if isinstance(value, dict) else f"{value:.4g}"
        truth = "" if row["truth"] is None else f"{row['truth']:.4g}"
        lines.append(f"| {row['bench']} | {row['quantity']} | {truth} | {shown} |")
    return "\n".join(lines) + "\n"


def main(out: Path = REPO_ROOT / "benchmarks" / "calibration_fixture.json") -> list[dict]:
    rows = []
    for name in BENCHES:
        with tempfile.TemporaryDirectory(prefix=f"hil-cal-{name}-") as tmp:
            rows += run_bench(name, Path(tmp))
    out.write_text(json.dumps({"rows": rows, "provenance": record({"benches": BENCHES})}, indent=1, default=float))
    out.with_suffix(".md").write_text(markdown(rows))
    return rows


if __name__ == "__main__":
    print(markdown(main()))
