"""A run report a person can look at: ``index.html`` plus PNG figures in one folder, no server.

Per sample it shows the raw CDP, the reconstructions next to the truth (when the bench knows it)
with their error maps, and a table of phase PSNR, SSIM and time per frame; once per run the mask
(radians and the SLM's gray image) and, when the system config holds a measured SLM response or
calibration result files are given, their plots. Images are written with matplotlib's Agg
backend; the page references them by relative path, so the folder can be copied or mailed.
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hil.common.metrics import phase_error, summarise
from hil.physics.slm import SLMModel
from hil.physics.system import SystemConfig

PHASE_CMAP, ERROR_CMAP = "twilight", "coolwarm"


@dataclass
class SampleResult:
    """One captured CDP and what each method made of it.

    Attributes:
        name: what the sample is (e.g. ``cells``).
        cdp: the captured CDP ``(height, width)`` (model units or ADU; shown as its square root).
        estimates_rad: method -> phase ``(n, n)`` radians.
        ms_per_frame: method -> decoding time per frame (median of timed runs).
        truth_rad: the sample's phase ``(n, n)`` when known (simulated bench), else None.
        photons_per_pixel: photons the CDP integrated per detector pixel.
    """

    name: str
    cdp: np.ndarray
    estimates_rad: dict[str, np.ndarray]
    ms_per_frame: dict[str, float]
    truth_rad: np.ndarray | None = None
    photons_per_pixel: float | None = None
    rows: list[dict[str, Any]] = field(init=False, default_factory=list)

    def score(self, phi_max_rad: float) -> list[dict[str, Any]]:
        """Rows ``{method, ms_per_frame[, psnr_db, ssim, mae_rad]}`` (kept in ``rows``)."""
        self.rows = []
        for method, estimate in self.estimates_rad.items():
            row: dict[str, Any] = {"sample": self.name, "method": method, "ms_per_frame": self.ms_per_frame[method]}
            if self.truth_rad is not None:
                scores = summarise(
                    torch.from_numpy(estimate)[None], torch.from_numpy(self.truth_rad)[None], phi_max_rad
                )
                row |= {k: scores[k] for k in ("psnr_db", "ssim", "mae_rad")}
            self.rows.append(row)
        return self.rows


def gray_image(system: SystemConfig, mask_rad: np.ndarray) -> np.ndarray:
    """Gray levels the system's SLM shows for ``mask_rad`` ``(n, n)``: ``(k n, k n)`` with macro-pixels."""
    slm = SLMModel(system.slm)
    return slm.phase_to_gray(slm.upsample(torch.as_tensor(mask_rad, dtype=torch.float64))).numpy()


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _panels(path: Path, panels: list[tuple[str, np.ndarray, str, tuple[float, float] | None]]) -> None:
    """One row of images with colour bars: (title, image (height, width), colormap, (vmin, vmax) or None)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(3.1 * len(panels), 3.1), squeeze=False)
    for ax, (title, image, cmap, limits) in zip(axes[0], panels, strict=True):
        vmin, vmax = limits if limits is not None else (None, None)
        shown = ax.imshow(image, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.axis("off")
        fig.colorbar(shown, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _aligned(estimate: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The estimate with its global phase offset removed against ``truth``, and the wrapped error map."""
    error = phase_error(torch.from_numpy(estimate)[None], torch.from_numpy(truth)[None])[0].numpy()
    return truth + error, error


def _sample_figures(folder: Path, index: int, sample: SampleResult, phi_max_rad: float) -> list[str]:
    stem = f"sample{index}"
    files = [f"{stem}_cdp.png"]
    _panels(folder / files[0], [("captured CDP (sqrt)", np.sqrt(np.clip(sample.cdp, 0, None)), "gray", None)])
    phase_limits = (-0.25 * phi_max_rad, 1.25 * phi_max_rad)
    panels = [] if sample.truth_rad is None else [("truth (rad)", sample.truth_rad, PHASE_CMAP, phase_limits)]
    errors = []
    for method, estimate in sample.estimates_rad.items():
        if sample.truth_rad is None:
            panels.append((f"{method} (rad)", estimate, PHASE_CMAP, None))
            continue
        shown, error = _aligned(estimate, sample.truth_rad)
        panels.append((f"{method} (rad)", shown, PHASE_CMAP, phase_limits))
        errors.append((f"{method}: error (rad)", error, ERROR_CMAP, (-math.pi / 2, math.pi / 2)))
    files.append(f"{stem}_phase.png")
    _panels(folder / files[-1], panels)
    if errors:
        files.append(f"{stem}_error.png")
        _panels(folder / files[-1], errors)
    return files


def _calibration_figures(folder: Path, system: SystemConfig | None, calibrations: list[Path]) -> list[tuple[str, str]]:
    """Plots of the measured SLM response in ``system`` and of the numeric lists in calibration files."""
    plt = _pyplot()
    curves: list[tuple[str, np.ndarray]] = []
    if system is not None and system.slm.gamma:
        curves.append(("system config: measured SLM response (slm.gamma, units of 2π)", np.array(system.slm.gamma)))
    for path in calibrations:
        data = _load_result(path)
        for key, value in data.items():
            if isinstance(value, list) and len(value) > 2 and all(isinstance(v, int | float) for v in value):
                curves.append((f"{path.name}: {key}", np.asarray(value, dtype=float)))
    figures = []
    for index, (title, values) in enumerate(curves):
        name = f"calibration{index}.png"
        fig, ax = plt.subplots(figsize=(5, 3))
        ax.plot(values, ".-", markersize=3)
        ax.set_xlabel("index (gray level for slm.gamma)")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(folder / name, dpi=90)
        plt.close(fig)
        figures.append((title, name))
    return figures


def _load_result(path: Path) -> dict[str, Any]:
    """A calibration result (YAML or JSON mapping); a clear error otherwise."""
    import yaml

    if not path.is_file():
        raise FileNotFoundError(f"{path}: calibration result does not exist")
    data = yaml.safe_load(path.read_text())  # JSON is YAML
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a calibration result must be a mapping of keys to values")
    return data


def _table(rows: list[dict[str, Any]]) -> str:
    columns = [("sample", "sample"), ("method", "method"), ("psnr_db", "phase PSNR (dB)"), ("ssim", "SSIM")]
    columns.append(("ms_per_frame", "ms per frame"))
    head = "".join(f"<th>{html.escape(title)}</th>" for _, title in columns)
    body = []
    for row in rows:
        cells = []
        for key, _ in columns:
            value = row.get(key)
            text = (
                "–"
                if value is None
                else f"{value:.3f}"
                if key == "ssim"
                else f"{value:.1f}"
                if isinstance(value, float)
                else str(value)
            )
            cells.append(f"<td>{html.escape(text)}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    return f'<table id="metrics"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


STYLE = """body{font-family:sans-serif;margin:2em;max-width:80em}img{max-width:100%;display:block;margin:.5em 0}
table{border-collapse:collapse}td,th{border:1px solid #bbb;padding:.25em .6em;text-align:right}
th{background:#eee}section{margin-top:2em}.meta{color:#555;font-size:90%}"""


def write_report(
    folder: str | Path,
    title: str,
    samples: list[SampleResult],
    mask_rad: np.ndarray,
    slm_gray: np.ndarray,
    phi_max_rad: float = math.pi,
    system: SystemConfig | None = None,
    calibrations: list[Path] | None = None,
    provenance: dict[str, Any] | None = None,
) -> Path:
    """Write ``folder/index.html`` and its PNGs; returns the page's path.

    ``mask_rad`` is the mask ``(n, n)`` as designed, ``slm_gray`` the gray image ``(k n, k n)`` the
    SLM shows for it; ``system`` (for its measured SLM response) and ``calibrations`` (result
    files of ``hil calibrate``) add the calibration section.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _panels(
        folder / "mask.png",
        [
            ("mask (rad)", np.mod(mask_rad, 2 * math.pi), PHASE_CMAP, (0.0, 2 * math.pi)),
            ("SLM gray image (level)", slm_gray, "gray", None),
        ],
    )
    rows, parts = [], []
    for index, sample in enumerate(samples):
        rows += sample.score(phi_max_rad)
        images = "".join(
            f'<img src="{name}" alt="{html.escape(sample.name)}">'
            for name in _sample_figures(folder, index, sample, phi_max_rad)
        )
        photons = "" if sample.photons_per_pixel is None else f" — {sample.photons_per_pixel:.0f} photons/pixel"
        parts.append(f"<section><h2>{index + 1}. {html.escape(sample.name)}{photons}</h2>{images}</section>")
    calibration = _calibration_figures(folder, system, list(calibrations or []))
    if calibration:
        figures = "".join(
            f'<h3>{html.escape(t)}</h3><img src="{name}" alt="{html.escape(t)}">' for t, name in calibration
        )
        parts.append(f"<section><h2>Calibration</h2>{figures}</section>")
    (folder / "metrics.json").write_text(json.dumps(rows, indent=1))
    meta = ""
    if provenance is not None:
        (folder / "provenance.json").write_text(json.dumps(provenance, indent=1, default=str))
        keys = ("created_utc", "git_commit", "command")
        meta = " · ".join(f"{k}: {html.escape(str(provenance[k]))}" for k in keys if k in provenance)
    page = (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1><p class='meta'>{meta}</p>"
        f"<section><h2>Coded phase mask</h2><img src='mask.png' alt='mask'></section>"
        f"<section><h2>Phase PSNR, SSIM and time</h2>{_table(rows)}</section>{''.join(parts)}</body></html>"
    )
    index_html = folder / "index.html"
    index_html.write_text(page)
    return index_html
